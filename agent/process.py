"""One process in the local box: what to run (`RunSpec`), where its output goes (`OutputSink`),
how it is run (`run_process`), and how a run ended (`RunStatus`, `RunResult`).

The records sit here, below the runner, the executors and the failure reader, so that all three
can import them without importing each other. The LLM's code runs here, so the box matters more
than the convenience:

- **Own session.** The child starts with `start_new_session=True`, so it and everything it spawns
  (dataloader workers, a stray `subprocess.Popen`) share one process group. On timeout, Ctrl-C or
  any error in the parent, the whole group gets SIGTERM, a grace period, then SIGKILL. After a normal
  exit the group is cleaned up the same way, so nothing it spawned outlives the run and holds a GPU.
- **Bounded output.** stdout and stderr are merged in order and streamed to `run_i/log.txt` in full
  and to `on_line` (the live view), but memory keeps only a head and a tail of `keep_bytes`: a child
  printing a gigabyte costs a gigabyte of disk, not of RAM.
- **Optional rlimits.** `max_memory_bytes` sets RLIMIT_AS (address space) and `max_cpu_seconds`
  sets RLIMIT_CPU in the child. RLIMIT_AS counts virtual memory: CUDA maps tens of GB of address
  space at start-up, so leave it unset for GPU profiles; it is meant for CPU profiles and tests.

`run_process` is the local box: `LocalExecutor` calls it here, and a Slurm job on its node
(agent/executors.py); agent/runner.py builds the argv and environment it is given.
"""

from __future__ import annotations

import codecs
import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Callable

READ_CHUNK = 64 * 1024
MAX_LINE_CHARS = 64 * 1024  # a line without newline longer than this goes to on_line in pieces
DRAIN_AFTER_EXIT = 2.0      # seconds to keep reading after the child exits (grandchildren's output)
LINE_ENDS = ("\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")


# --------------------------------------------------------------------------- records

class RunStatus(StrEnum):
    """How a run's process ended: `RunResult.status`, and an executor's `Outcome.status`. The values
    are the strings written before there was an enum (a Slurm job's pickled result still reads)."""
    OK = "ok"                    # exited 0 (whether it left valid results is agent/results.py's call)
    FAILED = "failed"            # a non-zero exit, a signal, an OOM kill, or a step the agent refused
    TIMEOUT = "timeout"          # the run's timeout (or Slurm's time limit) ended it
    INTERRUPTED = "interrupted"  # Ctrl-C, or the Slurm job was cancelled
    LOST = "lost"                # Slurm: the cluster lost the job more often than it may be requeued
    REQUEUE = "requeue"          # Slurm, inside SlurmExecutor.execute only: the job is submitted again

    @classmethod
    def read(cls, value: object) -> RunStatus:
        """`value` as a member: a member, or its string as an older agent wrote it. A string this
        agent does not know reads as FAILED, which is what any other string meant before: the run
        did not end well, and the error is read from its output."""
        try:
            return cls(value)
        except ValueError:
            return cls.FAILED


@dataclass
class RunSpec:
    """One already-built run: what the runner hands an executor, and the executor this box."""
    argv: list[str]
    cwd: Path
    env: dict[str, str]
    run_dir: Path
    timeout: float
    max_memory_bytes: int | None = None
    max_cpu_seconds: int | None = None
    kill_grace: float = 10.0

    @property
    def smoke(self) -> bool:
        return self.env.get("SAE_SMOKE") == "1"


@dataclass
class RunResult:
    """How one run ended, as the loop reads it: the runner builds it, agent/failures.py words it."""
    status: RunStatus      # never REQUEUE: the executor resubmits such a job itself
    returncode: int | None
    duration: float
    output: str            # bounded: head + "[... N bytes dropped ...]" + tail
    traceback: str | None
    error: str | None      # one line, e.g. "AttributeError: 'CustomTrainer' object has no attribute 'ae'"
    signature: str | None  # stable id of the failure, see failures.parse_failure
    log_path: Path
    total_bytes: int = 0   # everything the child wrote; the log holds all of it
    executor: str = "local"    # where it ran: "local" | "slurm"
    job_id: str | None = None  # the Slurm job id (the last one, after requeues)

    def __post_init__(self) -> None:
        self.status = RunStatus(self.status)   # a bare string of the vocabulary becomes its member


# --------------------------------------------------------------------------- limits

def limits_preexec(max_memory_bytes: int | None, max_cpu_seconds: int | None):
    """A preexec_fn for the child: rlimits if asked, and death with its parent on Linux.

    The child has its own session (so Ctrl-C and group kills are ours to send), which also means
    nothing kills it if the agent itself is SIGKILLed; PR_SET_PDEATHSIG closes that gap.
    """

    def apply() -> None:
        _hold_sigint(False)   # the parent held Ctrl-C back while starting us; the child gets it normally
        _die_with_parent()
        import resource
        if max_memory_bytes is not None:
            resource.setrlimit(resource.RLIMIT_AS, (max_memory_bytes, max_memory_bytes))
        if max_cpu_seconds is not None:
            # Hard limit a little above the soft one: SIGXCPU first (a clear signal name in the
            # error), SIGKILL only if the child ignores it.
            resource.setrlimit(resource.RLIMIT_CPU, (max_cpu_seconds, max_cpu_seconds + 5))
    return apply


def _hold_sigint(hold: bool) -> None:
    """Block or unblock SIGINT in this thread (a no-op where signal masks do not exist)."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK if hold else signal.SIG_UNBLOCK, {signal.SIGINT})


def _die_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # best effort: other platforms rely on the group kill alone


# --------------------------------------------------------------------------- output capture

class BoundedCapture:
    """Keeps the first `head` and last `tail` bytes of a stream and counts the rest."""

    def __init__(self, keep_bytes: int):
        self.head_limit = keep_bytes // 4  # the tail holds the traceback, so it gets the most
        self.tail_limit = keep_bytes - self.head_limit
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        self.tail += data
        if len(self.tail) > 2 * self.tail_limit:  # trim in batches, not on every chunk
            del self.tail[:-self.tail_limit]

    def text(self) -> str:
        tail = bytes(self.tail[-self.tail_limit:]) if self.tail_limit else b""
        dropped = self.total - len(self.head) - len(tail)
        head = self.head.decode("utf-8", "replace")
        if dropped <= 0:
            return head + tail.decode("utf-8", "replace")
        marker = f"\n[... {dropped} bytes dropped ...]\n"
        return head + marker + tail.decode("utf-8", "replace")


class LineSplitter:
    """Turns byte chunks into lines for the live view; `\\r` counts as a line end (tqdm)."""

    def __init__(self, on_line: Callable[[str], None]):
        self.on_line = on_line
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.pending = ""

    def feed(self, data: bytes, final: bool = False) -> None:
        text = self.pending + self.decoder.decode(data, final)
        held = ""
        if text.endswith("\r") and not final:  # maybe the first half of a "\r\n"
            text, held = text[:-1], "\r"
        parts = text.splitlines(keepends=True)  # C speed; a regex split was the bottleneck
        self.pending = (parts.pop() if parts and not parts[-1].endswith(LINE_ENDS) else "") + held
        for line in parts:
            self.on_line(line.rstrip("".join(LINE_ENDS)))
        # A child printing without newlines must not grow this buffer without bound.
        while len(self.pending) > MAX_LINE_CHARS:
            self.on_line(self.pending[:MAX_LINE_CHARS])
            self.pending = self.pending[MAX_LINE_CHARS:]
        if final and self.pending:
            self.on_line(self.pending)
            self.pending = ""


class OutputSink:
    """One place every byte of output goes: the log file, the bounded capture, the live view."""

    def __init__(self, log_file, keep_bytes: int, on_line: Callable[[str], None] | None):
        self.log_file = log_file
        self.capture = BoundedCapture(keep_bytes)
        self.lines = LineSplitter(on_line) if on_line else None

    def write(self, data: bytes) -> None:
        self.log_file.write(data)
        self.capture.add(data)
        if self.lines:
            self.lines.feed(data)

    def close(self) -> None:
        self.log_file.flush()
        if self.lines:
            self.lines.feed(b"", final=True)


def read_available(fd: int, sink: OutputSink, wait: float) -> bool:
    """Reads what the pipe has within `wait` seconds; False once the pipe is at EOF."""
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        if not sel.select(timeout=max(wait, 0.0)):
            return True
    data = os.read(fd, READ_CHUNK)
    if not data:
        return False
    sink.write(data)
    return True


def drain_quietly(fd: int, sink: OutputSink) -> bool:
    """Reads what the killed group left in the pipe; False if Ctrl-C cut it short."""
    try:
        drain(fd, sink, 1.0)
    except KeyboardInterrupt:
        return False
    return True


def drain(fd: int, sink: OutputSink, seconds: float) -> bool:
    """Reads until EOF or `seconds` pass; True if EOF was reached."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not read_available(fd, sink, deadline - time.monotonic()):
            return True
    return False


# --------------------------------------------------------------------------- process group

def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member we cannot signal still counts as alive
        return True
    return True


def signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def kill_group(proc: subprocess.Popen, grace: float) -> bool:
    """SIGTERM the child's whole process group, wait up to `grace` seconds, then SIGKILL it.

    The child is reaped along the way: an unreaped zombie still counts as a group member.
    A Ctrl-C while waiting skips straight to SIGKILL; the return value says whether one came.
    """
    pgid = proc.pid  # start_new_session: the child leads its own group
    interrupted = False
    try:
        signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            proc.poll()
            if not group_alive(pgid):
                break
            time.sleep(0.05)
    except KeyboardInterrupt:
        interrupted = True
    signal_group(pgid, signal.SIGKILL)
    proc.wait()
    return interrupted


# --------------------------------------------------------------------------- running

def run_process(spec: RunSpec, sink: OutputSink) -> tuple[RunStatus, int | None]:
    """The local box: `spec.argv` in its own session, streamed into `sink`, the group killed at
    the end; returns (status, returncode). Used by LocalExecutor, and inside a Slurm job."""
    start = time.monotonic()
    status = RunStatus.OK
    # A Ctrl-C in the middle of fork/exec hangs Popen (the child dies in its preexec before it can
    # report); held back until the child is started, it is handled like any other.
    _hold_sigint(True)
    try:
        proc = subprocess.Popen(
            spec.argv, cwd=spec.cwd, env=spec.env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=limits_preexec(spec.max_memory_bytes, spec.max_cpu_seconds),
        )
    except BaseException:
        _hold_sigint(False)
        raise
    fd = proc.stdout.fileno()
    try:
        try:
            _hold_sigint(False)   # a Ctrl-C that came during the start is delivered here
            status = stream_until_done(proc, fd, sink, start + spec.timeout)
        except KeyboardInterrupt:
            status = RunStatus.INTERRUPTED
        except BaseException:
            kill_group(proc, grace=1.0)
            raise
        # After a normal exit this removes whatever the child left running in its group.
        if kill_group(proc, spec.kill_grace if status != RunStatus.OK else 1.0):
            status = RunStatus.INTERRUPTED
        if not drain_quietly(fd, sink):
            status = RunStatus.INTERRUPTED
    finally:
        proc.stdout.close()
    if status == RunStatus.OK and proc.returncode != 0:
        status = RunStatus.FAILED
    return status, proc.returncode


def stream_until_done(proc: subprocess.Popen, fd: int, sink: OutputSink, deadline: float) -> RunStatus:
    """Streams output until the child exits (then drains briefly) or `deadline`; the status."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return RunStatus.TIMEOUT
        eof = not read_available(fd, sink, min(remaining, 0.25))
        if proc.poll() is not None or eof:
            break
    # The child has exited (or closed its output): grandchildren holding the pipe get a short
    # while to finish writing, then the group is cleaned up by the caller.
    if not eof:
        drain(fd, sink, min(DRAIN_AFTER_EXIT, max(deadline - time.monotonic(), 0)))
    while proc.poll() is None:  # closed its output but still running
        if time.monotonic() >= deadline:
            return RunStatus.TIMEOUT
        time.sleep(0.05)
    return RunStatus.OK
