"""Many ideas at once: `python -m agent run ideas/*.md --jobs N`.

Each idea runs in its own process (`python -m agent.child STATUS run IDEA ...`, the same loop as a
single `run`: agent/child.py), in its own workspace and its own process group; the driver here
starts up to N of them, pins each to a GPU (`CUDA_VISIBLE_DEVICES`) on a CUDA machine, and shows
one live table read from the status file each child rewrites on every phase change (`StatusView`).
Ctrl-C is forwarded to every child as SIGINT: each commits its attempt as interrupted and exits,
then the summary is printed.
With `--executor slurm` a child's runs are Slurm jobs, one at a time per idea, so N also bounds
how many ideas have a job queued or running.

Everything the children share is safe across processes: workspace folders are made atomically
(agent/workspace.py `_new_path`), the baseline and activation caches are computed under file locks.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from agent.options import RunOptions, UsageError, to_argv
from agent.ui import LiveView, prog

POLL = 0.25        # seconds between looks at the children
STOP_WAIT = 120.0  # seconds the children get to commit after Ctrl-C before they are killed


# --------------------------------------------------------------------------- how many, where

def visible_gpus(given: str | None = None) -> list[str]:
    """`--gpus 0,2` (given), else $CUDA_VISIBLE_DEVICES, else what nvidia-smi lists; [] without CUDA."""
    if given:
        return [g.strip() for g in given.split(",") if g.strip()]
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def _slurm(executor: str | None) -> bool:
    return (executor or os.environ.get("AGENT_EXECUTOR") or "local") == "slurm"


def jobs_wanted(jobs: int | None, ideas: int, executor: str | None = None, gpus: str | None = None) -> int:
    """--jobs, else one idea per visible GPU (local) or every idea at once (Slurm queues them)."""
    if jobs is not None:
        if jobs < 1:
            raise UsageError(f"--jobs {jobs}: give at least 1")
        return jobs
    if _slurm(executor):
        return ideas
    return max(1, len(visible_gpus(gpus)))


# --------------------------------------------------------------------------- the status file
# A child (agent/child.py) rewrites it on every phase change; the driver's table reads it.

class StatusView(LiveView):
    """A LiveView that also keeps `status_file` up to date for the driver's table."""

    def __init__(self, status_file: Path, *a, **kw):
        super().__init__(*a, **kw)
        self.status_file = status_file
        self.workspace: str | None = None
        self.write()

    def set(self, **kw) -> None:
        super().set(**kw)
        self.write()

    def say(self, *parts, style: str | None = None) -> None:
        super().say(*parts, style=style)
        self.write()

    def write(self, **extra) -> None:
        data = {"idea": self.idea, "run": self.run, "max_runs": self.max_runs, "attempt": self.attempt,
                "phase": self.phase, "tokens": getattr(self.coder, "total_tokens", 0) or 0,
                "cost": getattr(self.coder, "total_cost", None) or 0.0, "pid": os.getpid(),
                "updated": time.time(), **extra}
        write_json(self.status_file, data)


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)  # the driver never reads half a file


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


# --------------------------------------------------------------------------- the driver

@dataclass
class Child:
    idea: object
    status_file: Path
    log_file: Path
    gpu: str | None
    proc: subprocess.Popen | None = None
    started: float = 0.0
    ended: float | None = None
    returncode: int | None = None
    info: dict = field(default_factory=dict)

    @property
    def elapsed(self) -> float:
        return ((self.ended or time.monotonic()) - self.started) if self.started else 0.0


def child_argv(opts: RunOptions, idea_path, status_file: Path, verbosity: int = 0) -> list[str]:
    """The command line of one idea's child: every run option is forwarded (agent/options.py), and
    -v/-q, which set the level of the child's own agent.log."""
    output = ["-q"] if verbosity < 0 else ["-v"] * verbosity
    return [sys.executable, "-m", "agent.child", str(status_file), "run", str(idea_path), "--jobs", "1",
            *to_argv(opts), *output]


def _die_with_parent_sigint() -> None:
    # If the driver dies, each child gets a Ctrl-C of its own and commits what it was doing.
    if sys.platform.startswith("linux"):
        import ctypes
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def threads_per_idea(jobs: int, slurm: bool) -> int | None:
    """CPU threads for each idea's runs when `jobs` run here at once: the cores shared out. Each
    torch would otherwise start one thread per core, and three ideas on two cores trained 2.5-3x
    slower than their share (145-208 s instead of ~60 s for a tiny-profile SAE). None (left alone)
    on Slurm, whose jobs get cores of their own, and where the user set OMP_NUM_THREADS."""
    if slurm or os.environ.get("OMP_NUM_THREADS"):
        return None
    return max(1, (os.cpu_count() or 1) // jobs)


def _start(child: Child, opts: RunOptions, verbosity: int = 0, threads: int | None = None) -> None:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if child.gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = child.gpu
    if threads:   # torch reads these when it starts; runner.ENV_ALLOW passes them into the box
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    with open(child.log_file, "wb") as log:
        child.proc = subprocess.Popen(child_argv(opts, child.idea.path, child.status_file, verbosity), env=env,
                                      stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True, preexec_fn=_die_with_parent_sigint)
    child.started = time.monotonic()


def _poll(child: Child) -> bool:
    """True once the child has exited."""
    child.info = read_json(child.status_file) or child.info
    if child.proc is not None and child.ended is None and child.proc.poll() is not None:
        child.ended, child.returncode = time.monotonic(), child.proc.returncode
        child.info = read_json(child.status_file) or child.info
    return child.ended is not None


def _state(child: Child) -> str:
    if child.proc is None:
        return "queued"
    if child.ended is None:
        return "running"
    return child.info.get("state") or ("done" if child.returncode == 0 else "failed")


def _cost(child: Child) -> str:
    cost = child.info.get("cost") or 0.0
    return f"${cost:.4f}" if cost else "$0"


def table(children: list[Child], title: str) -> Table:
    t = Table(title=title)
    for col in ("idea", "gpu", "run", "attempt", "phase", "elapsed", "cost", "state"):
        t.add_column(col)
    colours = {"done": "green", "failed": "red", "interrupted": "yellow", "running": "bold", "queued": "dim"}
    for c in children:
        info, state = c.info, _state(c)
        run = f"{info.get('run', 0)}/{info.get('max_runs', '?')}" if info else "-"
        phase = "finished" if c.ended is not None else info.get("phase", "-")
        t.add_row(c.idea.name, c.gpu or "-", run, str(info.get("attempt", "-")), phase,
                  f"{c.elapsed:.0f}s", _cost(c), f"[{colours.get(state, 'white')}]{state}[/]")
    return t


def summary(children: list[Child]) -> Table:
    t = Table(title="ideas")
    for col in ("idea", "workspace", "runs", "wall", "cost", "result"):
        t.add_column(col)
    for c in children:
        info, state = c.info, _state(c)
        colour = {"done": "green", "interrupted": "yellow"}.get(state, "red")
        reason = info.get("reason") or state
        if state not in ("done", "queued") and c.proc is not None:
            reason += f" (log: {c.log_file})"
        t.add_row(c.idea.name, info.get("workspace", "-"), str(info.get("runs_completed", 0)),
                  f"{c.elapsed:.0f}s", _cost(c), f"[{colour}]{reason}[/{colour}]")
    return t


def run_parallel(ideas: list, opts: RunOptions, console: Console, *, jobs: int,
                 gpus_flag: str | None = None, verbosity: int = 0) -> int:
    """Up to `jobs` ideas at once, one child process each; `gpus_flag` is --gpus as given."""
    slurm = _slurm(opts.executor)
    jobs = min(jobs, len(ideas))
    gpus = [] if slurm else visible_gpus(gpus_flag)
    scratch = Path(tempfile.mkdtemp(prefix="sae-agent-parallel-"))
    children = [Child(idea, scratch / f"{i:02d}_{idea.name}.json", scratch / f"{i:02d}_{idea.name}.log", None)
                for i, idea in enumerate(ideas)]
    where = f" on GPUs {','.join(gpus)}" if gpus else (" as Slurm jobs" if slurm else "")
    threads = threads_per_idea(jobs, slurm)
    if threads:
        where += f", {threads} CPU thread{'s' if threads > 1 else ''} each"
    console.print(f"{len(ideas)} ideas, {jobs} at a time{where}; each idea's output: {scratch}/ "
                  "(kept if one does not succeed)")
    free_gpus = list(gpus)
    interrupted = False
    title = f"{len(ideas)} ideas, --jobs {jobs}"
    with Live(table(children, title), console=console, refresh_per_second=4, transient=False,
              auto_refresh=console.is_terminal) as live:
        try:
            while True:
                for c in children:
                    if c.proc is not None and c.ended is None and _poll(c) and c.gpu is not None \
                            and gpus and c.gpu not in free_gpus:
                        free_gpus.append(c.gpu)
                running = sum(1 for c in children if c.proc is not None and c.ended is None)
                for c in children:
                    if c.proc is None and running < jobs:
                        if gpus:  # one idea per GPU; more jobs than GPUs share them in turn
                            c.gpu = free_gpus.pop(0) if free_gpus else gpus[children.index(c) % len(gpus)]
                        _start(c, opts, verbosity, threads)
                        running += 1
                if all(c.ended is not None for c in children):
                    break
                live.update(table(children, title))
                time.sleep(POLL)
        except KeyboardInterrupt:
            interrupted = True
            live.update(table(children, title + " — stopping"))
            _stop_all(children)
        live.update(table(children, title))
    console.print(summary(children))
    if interrupted:
        console.print("[yellow]interrupted[/yellow] — each attempt was committed; continue an idea with "
                      f"`{prog()} resume WORKSPACE`")
        return 130
    if all(_state(c) == "done" for c in children):
        shutil.rmtree(scratch, ignore_errors=True)  # the workspaces hold everything worth keeping
        return 0
    return 1


def _stop_all(children: list[Child]) -> None:
    """SIGINT to every running child, then wait for each to commit and exit (SIGKILL past STOP_WAIT)."""
    running = [c for c in children if c.proc is not None and c.ended is None]
    for c in running:
        try:
            os.killpg(c.proc.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + STOP_WAIT
    for c in running:
        while not _poll(c):
            if time.monotonic() > deadline:
                try:
                    os.killpg(c.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                c.proc.wait()
                _poll(c)
                break
            try:
                time.sleep(POLL)
            except KeyboardInterrupt:  # a second Ctrl-C: stop waiting politely
                deadline = 0.0
