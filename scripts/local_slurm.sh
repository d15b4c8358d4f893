#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine (Debian's slurm-wlm and munge), for tests and CI.
#
#   scripts/local_slurm.sh start    install if missing (root + apt), configure, start munged,
#                                   slurmctld and slurmd; wait until the node takes jobs
#   scripts/local_slurm.sh status   what runs, the partition and the queue (exit 1 if not up)
#   scripts/local_slurm.sh stop     stop the three daemons (by their pid files)
#
# Idempotent: `start` on a running cluster only checks it. Without slurmdbd, `sacct` is off: the
# job completion log (jobcomp/filetxt, $JOBCOMP) is Slurm's own record of every finished job.
# Processes are tracked by parentage (proctrack/linuxproc) and tasks are not bound (task/none):
# neither needs cgroups, which containers often lack. Memory is enforced without them too: the
# jobacct_gather/linux plugin samples each step's RSS every second and OverMemoryKill kills a step
# over its --mem (the job then ends FAILED, with slurmstepd's "exceeded memory limit" in its stderr).
set -euo pipefail

CONF=/etc/slurm/slurm.conf
LOGDIR=/var/log/slurm
JOBCOMP=$LOGDIR/jobcomp.log
SPOOL=/var/spool/slurm
RUNDIR=/run/slurm-local
PARTITION=${LOCAL_SLURM_PARTITION:-local}

say() { echo "local_slurm: $*"; }
die() { echo "local_slurm: $*" >&2; exit 1; }

install_if_missing() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null && return
  [ "$(id -u)" = 0 ] || die "slurm-wlm and munge are not installed and installing them needs root"
  command -v apt-get >/dev/null || die "slurm-wlm and munge are not installed and there is no apt-get"
  say "installing slurm-wlm and munge"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
}

alive() {  # alive PIDFILE: the process named in it runs
  [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

write_conf() {
  local node cpus mem tmp
  node=$(hostname -s)
  cpus=$(nproc)
  # slurmd refuses a node that claims more memory than it has: leave 10% for the system.
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))
  tmp=$(mktemp)
  cat >"$tmp" <<EOF
# Written by scripts/local_slurm.sh: one node, this machine.
ClusterName=local
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$SPOOL/ctld
SlurmdSpoolDir=$SPOOL/d
SlurmctldPidFile=$RUNDIR/slurmctld.pid
SlurmdPidFile=$RUNDIR/slurmd.pid
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$(( mem / cpus ))
JobCompType=jobcomp/filetxt
JobCompLoc=$JOBCOMP
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherParams=OverMemoryKill
JobAcctGatherFrequency=task=1
ReturnToService=2
JobRequeue=1
# Finished jobs stay visible to scontrol for 10 minutes; KillWait is SIGTERM -> SIGKILL.
MinJobAge=600
KillWait=5
SchedulerParameters=sched_interval=2,bf_interval=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
  mkdir -p /etc/slurm
  if ! cmp -s "$tmp" "$CONF"; then
    mv "$tmp" "$CONF" && chmod 644 "$CONF"
    echo changed
  else
    rm -f "$tmp"
  fi
}

start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return; fi
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  [ -s /etc/munge/munge.key ] || { mungekey --create 2>/dev/null || /usr/sbin/create-munge-key -f; }
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  runuser -u munge -- /usr/sbin/munged --force
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return; sleep 0.1; done
  die "munged did not start (see /var/log/munge/munged.log)"
}

node_state() { sinfo -h -N -o %T 2>/dev/null | head -1; }

start() {
  install_if_missing
  mkdir -p "$LOGDIR" "$SPOOL/ctld" "$SPOOL/d" "$RUNDIR"
  touch "$JOBCOMP"
  local changed
  changed=$(write_conf)
  start_munge
  if [ -n "$changed" ] && alive "$RUNDIR/slurmctld.pid"; then
    say "configuration changed: restarting the daemons"
    stop_daemons
  fi
  alive "$RUNDIR/slurmctld.pid" || /usr/sbin/slurmctld
  alive "$RUNDIR/slurmd.pid" || /usr/sbin/slurmd
  local state=""
  for _ in $(seq 120); do
    state=$(node_state)
    case "$state" in
      idle*|mixed*|allocated*|completing*) say "up: partition $PARTITION, node $(hostname -s) $state"; return 0 ;;
      down*|drain*|fail*) scontrol update nodename="$(hostname -s)" state=resume 2>/dev/null || true ;;
    esac
    sleep 0.5
  done
  die "the node did not become idle (state: ${state:-none}); see $LOGDIR/slurmctld.log and slurmd.log"
}

stop_daemons() {
  local f pid
  for f in slurmd slurmctld; do
    alive "$RUNDIR/$f.pid" || continue
    pid=$(cat "$RUNDIR/$f.pid")
    kill "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    rm -f "$RUNDIR/$f.pid"
  done
  return 0
}

stop() {
  stop_daemons
  local pid=/run/munge/munged.pid
  if alive "$pid"; then kill "$(cat "$pid")"; fi
  say "stopped"
}

status() {
  local up=0 d
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then echo "munged: running"; else echo "munged: not running"; up=1; fi
  for d in slurmctld slurmd; do
    if alive "$RUNDIR/$d.pid"; then echo "$d: running (pid $(cat "$RUNDIR/$d.pid"))"; else echo "$d: not running"; up=1; fi
  done
  if [ "$up" = 0 ]; then
    sinfo
    squeue
    echo "job completion log: $JOBCOMP"
  fi
  return "$up"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
