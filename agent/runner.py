"""Run one experiment: `python experiment.py --out_dir=run_i` in the workspace, boxed in.

This stage builds the run from the template's command: the argv, the **allowlisted environment**
(the child sees `ENV_ALLOW` and `LC_*` only (`scrubbed_env`), plus what the agent sets, the
harness's `SAE_*`; a profile lets named variables through, `env_allow`, e.g. `HF_TOKEN`) and the
log. An executor (agent/executors.py) runs it, here or as a Slurm job, in the local box of
agent/process.py: own session, bounded output, optional rlimits, group kill.

What the output means (the last traceback, a one-line error, the signature the loop uses to
notice the same failure twice) and what the LLM is told about it live in `agent/failures.py`.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Mapping

from agent import failures
from agent.executors import LocalExecutor
from agent.process import OutputSink, RunResult, RunSpec

DEFAULT_COMMAND = ["{python}", "experiment.py", "--out_dir={out_dir}"]

# The child's environment is an allowlist: these names (and LC_*) pass, plus what the template's
# `env_allow` names for the profile and what the agent sets itself. A denylist of secret-looking
# names was tried first and leaked DATABASE_URL, GITLAB_PAT and bare KEY/TOKEN. The harness's
# SAE_* variables come only from the agent: a user's SAE_SMOKE=1 must not turn a full run into a
# smoke run, SAE_HISTORY_DIR would point a run at the history backups, and an SAE_-named secret
# is still a secret.
ENV_ALLOW = ("PATH", "LANG", "LANGUAGE", "TZ", "TERM", "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER",
             "OMP_NUM_THREADS", "MKL_NUM_THREADS", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
ENV_ALLOW_PREFIXES = ("LC_",)


# --------------------------------------------------------------------------- environment

def scrubbed_env(base: Mapping[str, str], allow: Iterable[str] = ()) -> dict[str, str]:
    """The names of `base` a run may see: ENV_ALLOW, LC_*, and `allow` (exact names)."""
    allowed = set(allow) | set(ENV_ALLOW)
    return {k: v for k, v in base.items() if k in allowed or k.startswith(ENV_ALLOW_PREFIXES)}


def child_env(env_allow: Iterable[str], extra_env: Mapping[str, str] | None) -> dict[str, str]:
    env = scrubbed_env(os.environ, env_allow)
    # Unbuffered, so the live view and log see lines as they happen and stdout/stderr stay in
    # order; a traceback otherwise lands before the prints that preceded it. No bytecode: a
    # planted .pyc must never be what the next run imports.
    env.update({"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"})
    env.update(extra_env or {})
    return env


def expand_command(command: list[str], python: str, out_dir: str) -> list[str]:
    # str.replace, not str.format: an argument like '{"lr": 1}' must pass through untouched.
    return [part.replace("{python}", python).replace("{out_dir}", out_dir) for part in command]


# --------------------------------------------------------------------------- running

def run_experiment(
    workspace: Path,
    out_dir: str,
    *,
    command: list[str] | None = None,
    timeout: float = 3600,
    env_allow: Iterable[str] = (),
    extra_env: Mapping[str, str] | None = None,
    on_line: Callable[[str], None] | None = None,
    max_memory_bytes: int | None = None,
    max_cpu_seconds: int | None = None,
    keep_bytes: int = 20_000,
    python: str | None = None,
    kill_grace: float = 10.0,
    cwd: Path | None = None,
    log_path: Path | None = None,
    wrap: Callable[[list[str]], list[str]] | None = None,
    executor=None,
) -> RunResult:
    """Runs `command` (template items `{python}`, `{out_dir}`) in `workspace`, boxed in.

    `python` defaults to `sys.executable`, so the run uses the agent's own interpreter and venv.
    `timeout` is wall-clock seconds; `kill_grace` is how long the group gets between SIGTERM and
    SIGKILL. `max_memory_bytes` / `max_cpu_seconds` set RLIMIT_AS / RLIMIT_CPU in the child (see
    agent/process.py: not for CUDA runs). `executor` (agent/executors.py) decides where the
    argv runs: here (`LocalExecutor`, the default) or as a Slurm job (`SlurmExecutor`); either
    way the output streams into `run_i/log.txt` and `on_line` as it comes.

    Ctrl-C in the parent (also during the clean-up after the run) does not propagate: the group
    is killed, the output so far is in the log, and the result has status
    `RunStatus.INTERRUPTED`. The caller must check for it, record the attempt as interrupted and
    stop the loop. Any other exception (e.g. from `on_line`) kills the group
    and is re-raised. `RunStatus.LOST` (Slurm only) means the cluster lost the job (node failure,
    preemption) more often than it may be requeued: not the code's fault.
    """
    workspace = Path(workspace)
    run_dir = workspace / out_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = Path(log_path) if log_path else run_dir / "log.txt"
    argv = expand_command(command or DEFAULT_COMMAND, python or sys.executable, out_dir)
    if wrap:
        argv = wrap(argv)
    spec = RunSpec(argv=argv, cwd=Path(cwd) if cwd else workspace, env=child_env(env_allow, extra_env), run_dir=run_dir,
                   timeout=timeout, max_memory_bytes=max_memory_bytes,
                   max_cpu_seconds=max_cpu_seconds, kill_grace=kill_grace)
    executor = executor or LocalExecutor()

    start = time.monotonic()
    # Unbuffered: `tail -f run_i/log.txt` and a crash of the agent itself still see every line.
    with open(log_path, "wb", buffering=0) as log_file:
        sink = OutputSink(log_file, keep_bytes, on_line)
        try:
            outcome = executor.execute(spec, sink)
        finally:
            sink.close()

    duration = time.monotonic() - start
    output = sink.capture.text()
    traceback, error, signature = failures.describe_outcome(outcome.status, outcome.returncode, output, timeout)
    if outcome.error:  # the executor knows better (a Slurm time limit, an OOM kill, a lost node)
        error, signature = outcome.error, outcome.signature or signature
    return RunResult(outcome.status, outcome.returncode, duration, output, traceback, error, signature,
                     log_path, sink.capture.total, executor=executor.name, job_id=outcome.job_id)
