"""Where a run executes: here (`LocalExecutor`) or as a Slurm job through submitit (`SlurmExecutor`).

The runner builds the argv, the scrubbed environment and the log sink (agent/runner.py); an
executor only runs that argv in that cwd and reports how it ended:

    executor.execute(spec: process.RunSpec, sink: process.OutputSink) -> Outcome
    executor.live_job(run_dir) -> JobRecord | None     (a job a resumed loop follows to its end)
    executor.name                                       ("local" | "slurm")

`Outcome.status` is the runner's vocabulary, `process.RunStatus`: OK, FAILED, TIMEOUT, INTERRUPTED,
and LOST (Slurm: the cluster lost the job more often than it may be requeued; not the code's fault);
REQUEUE stays inside `SlurmExecutor.execute`, which submits the job again.

The Slurm job runs the very same local box (`process.run_process`: own session, rlimits, group
kill, the run's timeout) on the node, writing into a file in the job's submitit folder; the
submitting side tails that file into `run_i/log.txt` and the live view while it polls the job's
state with `scontrol` (submitit's own watcher reads `sacct`, which a cluster without slurmdbd
lacks, and polls only every few minutes). The job id goes to `run_i/slurm_job.json`, so a resumed
loop finds a job that is still running and waits for it instead of running the code again.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from agent import process, sandbox
from agent.process import RunSpec, RunStatus

EXECUTORS = ("local", "slurm")
JOB_RECORD = "slurm_job.json"      # in run_i/, committed with the attempt
SLURM_FOLDER = ".slurm"            # in the workspace: submitit's pickles and logs, one folder per job
OUTPUT_NAME = "run_output.log"     # the run's own output, inside the job's submitit folder
LIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED",
               "RESIZING", "STOPPED", "SIGNALING", "STAGE_OUT", "REQUEUE_FED"}
LOST_STATES = {"NODE_FAIL", "PREEMPTED", "BOOT_FAIL"}   # the cluster's fault: requeue
HELD_STATES = {"REQUEUE_HOLD", "SPECIAL_EXIT", "RESV_DEL_HOLD"}
# How Slurm says it killed a job for its memory, in the job's own stderr (submitit's %j_0_log.err).
# Without cgroups (jobacct_gather/linux + OverMemoryKill, as on the local cluster) the job ends
# FAILED, not OUT_OF_MEMORY: these lines are then the only sign of it. With task/cgroup the kernel's
# OOM killer does it and slurmstepd reports "oom-kill event(s)" (and the state is OUT_OF_MEMORY).
# ("Exceeded job memory limit at some point" is cgroup's warning about a job that may well be fine.)
OOM_LINE = re.compile(r"^(?:slurmstepd\S*|srun): error: .*(?:exceeded (?:(?:job|step) )?memory limit"
                      r"(?! at some point)|oom-kill event|Out Of Memory).*", re.IGNORECASE | re.MULTILINE)
OOM_NUMBERS = re.compile(r"exceeded memory limit \((\d+) > (\d+)\)")   # bytes in use > the limit
OOM_SIGNATURE = "Slurm:OUT_OF_MEMORY"
UNSEEN_LIMIT = 600.0   # seconds without scontrol/sacct knowing the job (slurmctld down?) before it is lost
# Variables the node sets for the job's own allocation: the submitter's values must not win.
NODE_ENV = ("CUDA_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES")


class ExecutorError(Exception):
    """The executor cannot run anything (no Slurm, bad settings): a clear message for the user."""


@dataclass
class Outcome:
    status: RunStatus
    returncode: int | None = None
    error: str | None = None       # the executor's own reason, else the runner reads the output
    signature: str | None = None
    job_id: str | None = None

    def __post_init__(self) -> None:
        self.status = RunStatus(self.status)   # a bare string of the vocabulary becomes its member


@dataclass
class JobRecord:
    """`run_i/slurm_job.json`: which job runs (ran) this run, where its output is."""
    job_id: str
    folder: str
    argv: list[str]
    cwd: str
    smoke: bool
    submitted: float
    started: float | None = None
    ended: float | None = None
    requeues: int = 0
    state: str = "PENDING"

    def save(self, run_dir: Path) -> None:
        path = Path(run_dir) / JOB_RECORD
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, run_dir: Path) -> "JobRecord | None":
        try:
            return cls(**json.loads((Path(run_dir) / JOB_RECORD).read_text()))
        except (OSError, ValueError, TypeError):
            return None


# --------------------------------------------------------------------------- local

class LocalExecutor:
    """Today's behaviour: a child process of the agent, in its own process group."""

    name = "local"

    def execute(self, spec: RunSpec, sink) -> Outcome:
        status, returncode = process.run_process(spec, sink)
        return Outcome(status, returncode)

    def live_job(self, run_dir: Path) -> JobRecord | None:
        return None  # a local run dies with the agent: nothing to re-attach to

    def for_profile(self, template, profile: str | None) -> "LocalExecutor":
        return self


# --------------------------------------------------------------------------- slurm: settings

@dataclass
class SlurmSettings:
    """Resources of one job; None leaves it to the cluster's defaults. Template profiles give
    defaults (`template.json` "slurm": {profile: {...}}), the command line overrides them."""
    partition: str | None = None
    gpus: int | None = None
    cpus: int | None = None
    mem_gb: float | None = None
    time_min: int | None = None    # None: derived from the run's timeout
    account: str | None = None
    max_requeues: int = 2          # node failures / preemptions before the run counts as lost
    poll: float = 0.5              # seconds between state checks
    job_folder: str | None = None  # submitit's files; default <workspace>/.slurm (must be shared too)

    def merged(self, profile_spec: dict | None) -> "SlurmSettings":
        """These settings with the template profile's filling what is unset."""
        spec = profile_spec or {}
        out = SlurmSettings(**asdict(self))
        for key, name in (("partition", "partition"), ("gpus", "gpus"), ("cpus", "cpus"),
                          ("mem_gb", "mem_gb"), ("time_min", "time_min"), ("account", "account")):
            if getattr(out, name) is None and spec.get(key) is not None:
                setattr(out, name, spec[key])
        return out


def parse_time(text: str) -> int:
    """Minutes from Slurm's time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S."""
    text = text.strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not m:
        raise ExecutorError(f"--slurm-time {text!r}: use minutes or Slurm's [D-]HH:MM:SS")
    days, a, b, c = (int(x) if x else None for x in m.groups())
    if days is not None:  # D-H[:M[:S]]
        seconds = days * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
    elif c is not None:   # H:M:S
        seconds = a * 3600 + b * 60 + c
    elif b is not None:   # M:S
        seconds = a * 60 + b
    else:
        seconds = a * 60
    return max(1, -(-seconds // 60))


def time_limit_min(timeout: float, settings: SlurmSettings) -> int:
    """The job's Slurm time limit: the run's own timeout (enforced inside the job) plus a margin
    for start-up and the group kill, so Slurm's limit is only the backstop."""
    if settings.time_min:
        return int(settings.time_min)
    return max(1, -(-int(timeout + 120) // 60))


def make_executor(name: str | None, settings: SlurmSettings | None = None):
    name = (name or os.environ.get("AGENT_EXECUTOR") or "local").lower()
    if name == "local":
        return LocalExecutor()
    if name == "slurm":
        return SlurmExecutor(settings or SlurmSettings())
    raise ExecutorError(f"unknown executor {name!r}; choose one of: {', '.join(EXECUTORS)}")


# --------------------------------------------------------------------------- slurm: the job side

def job_main(spec: RunSpec) -> Outcome:
    """Runs inside the Slurm job (unpickled by submitit on the node): the local box, writing into
    the job folder's output file, which the submitter tails."""
    import submitit

    # Slurm's time limit ends the job; submitit's own USR2 handler would requeue or raise mid-run.
    signal.signal(submitit.JobEnvironment._usr_sig(), signal.SIG_IGN)
    env = submitit.JobEnvironment()
    output = Path(env.paths.folder) / OUTPUT_NAME
    with open(output, "ab", buffering=0) as out:
        if not Path(spec.cwd).is_dir():
            message = (f"the workspace {spec.cwd} does not exist on node {socket.gethostname()}: "
                       "workspaces must be on a filesystem the compute nodes share "
                       "(put --results on a shared path)")
            out.write(f"[slurm] {message}\n".encode())
            return Outcome(RunStatus.LOST, error=message, signature="Slurm:NoSharedWorkspace")
        node_env = {k: os.environ[k] for k in NODE_ENV if k in os.environ}
        spec.env = {k: v for k, v in spec.env.items() if k not in NODE_ENV} | node_env
        sink = process.OutputSink(out, keep_bytes=0, on_line=None)
        status, returncode = process.run_process(spec, sink)
        sink.close()
    return Outcome(status, returncode)


# --------------------------------------------------------------------------- slurm: the submitter

def mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"


@dataclass
class JobInfo:
    state: str
    restarts: int = 0
    reason: str = ""
    exit_code: str = ""
    node: str = ""
    mem: str = ""          # the job's memory (scontrol's TRES mem=, e.g. "256M")


def job_info(job_id: str) -> JobInfo | None:
    """The job as slurmctld sees it now (`scontrol show job`); sacct when it is gone from memory."""
    try:
        out = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode == 0 and "JobState=" in out.stdout:
        fields = dict(re.findall(r"(\w+)=(\S*)", out.stdout.splitlines()[0]))
        return JobInfo(state=fields.get("JobState", "UNKNOWN"), restarts=int(fields.get("Restarts", 0) or 0),
                       reason=fields.get("Reason", ""), exit_code=fields.get("ExitCode", ""),
                       node=fields.get("NodeList", ""),
                       mem=dict(re.findall(r"(\w+)=([^,]+)", fields.get("TRES", ""))).get("mem", ""))
    try:
        out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "State,ExitCode,NodeList,ReqMem", "-j", str(job_id)],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    line = out.stdout.strip().splitlines()[-1:] if out.returncode == 0 else []
    if not line:
        return None
    state, exit_code, node, mem = (line[0].split("|") + ["", "", "", ""])[:4]
    return JobInfo(state=state.split()[0], exit_code=exit_code, node=node, mem=mem)


def scancel(job_id: str) -> None:
    subprocess.run(["scancel", str(job_id)], capture_output=True, timeout=30)


class FileTail:
    """Copies what a growing file gains into the sink; survives the file appearing late."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0

    def pump(self, sink) -> int:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return 0
        if data:
            self.offset += len(data)
            sink.write(data)
        return len(data)


class SlurmExecutor:
    """Each run one Slurm job, submitted with submitit, followed until it ends."""

    name = "slurm"

    def __init__(self, settings: SlurmSettings | None = None):
        self.settings = settings or SlurmSettings()
        self._check_slurm()

    @staticmethod
    def _check_slurm() -> None:
        missing = [t for t in ("sbatch", "srun", "scontrol", "scancel") if shutil.which(t) is None]
        if missing:
            raise ExecutorError(f"--executor slurm needs Slurm's tools on PATH ({', '.join(missing)} "
                                "missing); on this machine `bash scripts/local_slurm.sh start` brings up "
                                "a single-node cluster")

    # -- interface ------------------------------------------------------------------------

    def for_profile(self, template, profile: str | None) -> "SlurmExecutor":
        """This executor with the template profile's `slurm` resources filling what the command
        line left unset (template.json: "slurm": {"<profile>": {"partition": ..., "gpus": 1}})."""
        spec = (getattr(template, "slurm", None) or {}).get(profile or "", {})
        bound = copy.copy(self)   # Slurm's tools were checked when this executor was made
        bound.settings = self.settings.merged(spec)
        return bound

    def execute(self, spec: RunSpec, sink) -> Outcome:
        record = self._attachable(spec)
        if record is not None:
            sink.write(f"[slurm] re-attached to job {record.job_id} ({record.state})\n".encode())
        else:
            record = self._submit(spec)
        outcome = self._follow(spec, sink, record)
        while outcome.status == RunStatus.REQUEUE:
            record.requeues += 1
            sink.write(f"[slurm] {outcome.error}; resubmitting ({record.requeues}/"
                       f"{self.settings.max_requeues})\n".encode())
            record = self._submit(spec, requeues=record.requeues)
            outcome = self._follow(spec, sink, record)
        return outcome

    def live_job(self, run_dir: Path) -> JobRecord | None:
        record = JobRecord.load(run_dir)
        if record is None:
            return None
        info = job_info(record.job_id)
        if info is not None and info.state in LIVE_STATES:
            return record
        # Ended while nobody watched (the agent had died): its result is still worth having. A job
        # whose end was seen (`ended`) was already reported and committed.
        if record.ended is None and self._result_file(record).exists() and \
                (info is None or info.state == "COMPLETED"):
            return record
        return None

    # -- submission -----------------------------------------------------------------------

    def _parameters(self, spec: RunSpec) -> dict:
        s = self.settings
        agent_root = str(Path(__file__).resolve().parent.parent)
        paths = [agent_root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        pythonpath = os.pathsep.join(dict.fromkeys(paths))
        # The job's own environment (submitit's python) gets only what it needs: no API keys. The
        # run itself gets spec.env, the same scrubbed environment as a local run. srun passes on
        # only this list, so submitit's marker variable must be in it.
        names = (("PATH", os.environ.get("PATH", "/usr/bin:/bin")), ("HOME", os.environ.get("HOME", "/")),
                 ("PYTHONPATH", pythonpath), ("SUBMITIT_EXECUTOR", "slurm"))
        export = ",".join(f"{k}={v}" for k, v in names if "," not in v)
        params = {"timeout_min": time_limit_min(spec.timeout, s),
                  "name": f"sae-{Path(spec.cwd).name[:40]}-{spec.run_dir.name}{'-smoke' if spec.smoke else ''}",
                  "slurm_signal_delay_s": 30,
                  "slurm_additional_parameters": {"export": export, "requeue": True}}
        if s.partition:
            params["slurm_partition"] = s.partition
        if s.gpus:
            params["gpus_per_node"] = int(s.gpus)
        if s.cpus:
            params["cpus_per_task"] = int(s.cpus)
        if s.mem_gb:
            params["mem_gb"] = float(s.mem_gb)
        if s.account:
            params["slurm_account"] = s.account
        return params

    def _submit(self, spec: RunSpec, requeues: int = 0) -> JobRecord:
        import submitit

        folder = Path(self.settings.job_folder) if self.settings.job_folder else Path(spec.cwd) / SLURM_FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ".gitignore").write_text("*\n")  # pickles and logs stay out of the history
        executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm")
        executor.update_parameters(**self._parameters(spec))
        try:
            job = executor.submit(job_main, spec)
        except Exception as exc:  # sbatch refused: bad partition, account, resources
            raise ExecutorError(f"sbatch refused the job: {str(exc).strip()[:600]}") from None
        record = JobRecord(job_id=str(job.job_id), folder=str(job.paths.folder), argv=list(spec.argv),
                           cwd=str(spec.cwd), smoke=spec.smoke, submitted=time.time(), requeues=requeues)
        record.save(spec.run_dir)
        sandbox.mark_job(Path(spec.cwd), record.job_id)   # its stage outlives this agent if it is killed
        return record

    def _attachable(self, spec: RunSpec) -> JobRecord | None:
        record = self.live_job(spec.run_dir)
        if record and record.argv == list(spec.argv) and record.cwd == str(spec.cwd) \
                and record.smoke == spec.smoke:
            return record
        return None

    @staticmethod
    def _result_file(record: JobRecord) -> Path:
        return Path(record.folder) / f"{record.job_id}_0_result.pkl"

    # -- following ------------------------------------------------------------------------

    def _follow(self, spec: RunSpec, sink, record: JobRecord) -> Outcome:
        tail = FileTail(Path(record.folder) / OUTPUT_NAME)
        restarts = None
        last_seen = time.monotonic()
        info = None
        try:
            while True:
                tail.pump(sink)
                seen = job_info(record.job_id)
                if seen is None:
                    if self._result_file(record).exists():
                        break  # gone from slurmctld's memory, but it finished
                    if time.monotonic() - last_seen > UNSEEN_LIMIT:
                        return self._lost(record, f"Slurm has not known the job for {UNSEEN_LIMIT:.0f} s")
                    time.sleep(self.settings.poll)
                    continue
                info, last_seen = seen, time.monotonic()
                if restarts is None:
                    restarts = info.restarts
                if info.restarts > restarts:  # Slurm requeued it itself (node failure, preemption)
                    record.requeues += info.restarts - restarts
                    restarts = info.restarts
                    record.started, record.state = None, info.state
                    record.save(spec.run_dir)
                    sink.write(f"[slurm] job {record.job_id} was requeued by Slurm ({record.requeues}/"
                               f"{self.settings.max_requeues}); its output starts again\n".encode())
                    if record.requeues > self.settings.max_requeues:
                        scancel(record.job_id)
                        return self._lost(record, f"requeued {record.requeues} times")
                if info.state == "RUNNING" and record.started is None:
                    record.started, record.state = time.time(), "RUNNING"
                    record.save(spec.run_dir)
                if info.state in HELD_STATES:
                    scancel(record.job_id)
                    return self._lost(record, f"held by Slurm ({info.state}, {info.reason})")
                if info.state not in LIVE_STATES:
                    record.state = info.state
                    break
                if record.started and time.time() - record.started > spec.timeout + spec.kill_grace + 60:
                    scancel(record.job_id)  # the job's own timeout did not end it: Slurm must
                    self._wait_ended(record.job_id)
                    return Outcome(RunStatus.TIMEOUT, error=f"Timeout: the run exceeded {spec.timeout:g} s; "
                                   f"Slurm job {record.job_id} was cancelled", signature="Timeout",
                                   job_id=record.job_id)
                time.sleep(self.settings.poll)
        except KeyboardInterrupt:
            scancel(record.job_id)
            self._wait_ended(record.job_id)
            tail.pump(sink)
            self._finish(spec, record, "CANCELLED")
            return Outcome(RunStatus.INTERRUPTED, error=f"KeyboardInterrupt: the run was interrupted by the user "
                           f"(Slurm job {record.job_id} cancelled)", job_id=record.job_id)
        self._drain(tail, sink, record)   # (also gives the job's stderr time to reach a shared filesystem)
        outcome = self._outcome(spec, record, info)
        if outcome.signature == OOM_SIGNATURE:  # its output ends abruptly: say why, in the log too
            sink.write(f"[slurm] {outcome.error}\n".encode())
        self._finish(spec, record, record.state)
        return outcome

    def _drain(self, tail: FileTail, sink, record: JobRecord) -> None:
        # The node's writes may reach a shared filesystem a little after the job ends.
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            if not tail.pump(sink) and self._result_file(record).exists():
                break
            time.sleep(0.1)
        tail.pump(sink)

    def _finish(self, spec: RunSpec, record: JobRecord, state: str) -> None:
        record.ended, record.state = time.time(), state
        if spec.run_dir.is_dir():
            record.save(spec.run_dir)

    @staticmethod
    def _wait_ended(job_id: str, seconds: float = 60.0) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                info = job_info(job_id)
                if info is None or info.state not in LIVE_STATES:
                    return
                time.sleep(0.25)
            except KeyboardInterrupt:  # a second Ctrl-C: stop waiting, the job is cancelled anyway
                return

    def _lost(self, record: JobRecord, why: str) -> Outcome:
        return Outcome(RunStatus.LOST, error=f"the cluster lost Slurm job {record.job_id}: {why}; the run was not "
                       "charged to the code", signature="Slurm:Lost", job_id=record.job_id)

    def _outcome(self, spec: RunSpec, record: JobRecord, info: JobInfo | None = None) -> Outcome:
        """How the job ended, in the runner's vocabulary (`info`: Slurm's last word on the job)."""
        state, job_id = record.state, record.job_id
        result = self._result(record)
        if state == "COMPLETED" or (state == "UNKNOWN" and result is not None):
            if result is not None:
                result.job_id = job_id
                return result
            return self._lost(record, "it completed without a result (is the workspace on a filesystem "
                              "the nodes share?)")
        if state == "TIMEOUT":
            limit = time_limit_min(spec.timeout, self.settings)
            return Outcome(RunStatus.TIMEOUT, error=f"Timeout: Slurm's time limit ({limit} min) ended job {job_id}",
                           signature="Timeout", job_id=job_id)
        oom = self._memory_kill(record)
        if state == "OUT_OF_MEMORY" or oom is not None:
            return self._out_of_memory(record, info, oom)
        if state == "CANCELLED" or state.startswith("CANCELLED"):
            return Outcome(RunStatus.INTERRUPTED, error=f"the Slurm job {job_id} was cancelled (scancel)",
                           job_id=job_id)
        if state in LOST_STATES:
            if record.requeues < self.settings.max_requeues:
                return Outcome(RunStatus.REQUEUE, error=f"job {job_id} ended in {state}", job_id=job_id)
            return self._lost(record, f"{state} after {record.requeues} requeue(s)")
        # FAILED or DEADLINE without a result: the job died outside the run (submitit, the node).
        return self._lost(record, f"it ended in {state} before the run started or finished "
                          f"({self._job_log_tail(record)}); are the workspace and {record.folder} on a "
                          "filesystem the nodes share?")

    def _memory_kill(self, record: JobRecord) -> str | None:
        """Slurm's own line saying it killed the job for its memory, if its stderr has one."""
        path = Path(record.folder) / f"{record.job_id}_0_log.err"
        try:
            with open(path, "rb") as f:  # the end is enough: the kill is what it wrote last
                f.seek(max(0, path.stat().st_size - 64_000))
                text = f.read().decode(errors="replace")
        except OSError:
            return None
        lines = [m.group(0) for m in OOM_LINE.finditer(text)]
        numbered = [ln for ln in lines if OOM_NUMBERS.search(ln)]
        return (numbered or lines or [None])[0]

    def _out_of_memory(self, record: JobRecord, info: JobInfo | None, line: str | None) -> Outcome:
        numbers = OOM_NUMBERS.search(line or "")
        if numbers:
            used, limit = (int(x) for x in numbers.groups())
            detail = f"limit {mib(limit)}, the job had {mib(used)} in use"
        elif info is not None and info.mem:
            detail = f"limit {info.mem}"
        elif self.settings.mem_gb:
            detail = f"limit {self.settings.mem_gb:g}G"
        else:
            detail = "limit: the cluster's default memory per job"
        return Outcome(RunStatus.FAILED, returncode=-signal.SIGKILL,
                       error=f"Out of memory: Slurm killed job {record.job_id} ({detail}); the run must "
                       "use less memory, or the job get more (--slurm-mem)",
                       signature=OOM_SIGNATURE, job_id=record.job_id)

    def _result(self, record: JobRecord) -> Outcome | None:
        import submitit

        if not self._result_file(record).exists():
            return None
        try:
            result = submitit.SlurmJob(folder=record.folder, job_id=record.job_id).result()
        except Exception:
            return None
        if not isinstance(result, Outcome):
            return None
        # Unpickling skips __post_init__: a job an older agent ran left the bare string (RunStatus.read)
        result.status = RunStatus.read(result.status)
        return result

    @staticmethod
    def _job_log_tail(record: JobRecord) -> str:
        for name in (f"{record.job_id}_0_log.err", f"{record.job_id}_0_log.out"):
            path = Path(record.folder) / name
            if path.exists():
                lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
                if lines:
                    return lines[-1][:300]
        return f"no log in {record.folder}"
