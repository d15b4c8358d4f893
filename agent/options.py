"""What `run` and `resume` were asked to do, as typed records built once from the command line.

`agent/cli.py` parses the arguments (argparse) and builds a `RunOptions`; the domain code
(agent/launch.py, agent/parallel.py) reads only these records, never the argparse namespace, and
says what cannot be done as asked with a `UsageError`.
Each field names its command-line flag, so `to_argv` rebuilds the command line a `--jobs` child
is started with from the record alone: an option added here is forwarded without a second list
to keep in step (tests/test_parallel.py round-trips every field).
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields, is_dataclass

DEFAULT_RESULTS = "results"  # relative to the current directory: an installed package has no checkout


class UsageError(Exception):
    """Bad input from the user: reported in one message, exit status 2."""


def _flag(name: str, default=None):
    return field(default=default, metadata={"flag": name})


@dataclass(frozen=True)
class SlurmOptions:
    """`--slurm-*` as given; None leaves it to the template profile, then the cluster."""
    partition: str | None = _flag("--slurm-partition")
    gpus: int | None = _flag("--slurm-gpus")
    cpus: int | None = _flag("--slurm-cpus")
    mem_gb: float | None = _flag("--slurm-mem")
    time: str | None = _flag("--slurm-time")  # minutes or [D-]HH:MM:SS, parsed where the executor is made
    account: str | None = _flag("--slurm-account")

    def settings(self):
        """The executor's SlurmSettings (ExecutorError on a malformed --slurm-time)."""
        from agent import executors

        return executors.SlurmSettings(
            partition=self.partition, gpus=self.gpus, cpus=self.cpus, mem_gb=self.mem_gb,
            account=self.account, time_min=executors.parse_time(self.time) if self.time else None)


@dataclass(frozen=True)
class RunOptions:
    """One idea's run settings, shared by `run`, `resume` and every `--jobs` child."""
    results: str = _flag("--results", DEFAULT_RESULTS)  # `run` only: the workspaces' parent folder
    profile: str | None = _flag("--profile")            # `run` only: None is the idea's, else the template's
    model: str | None = _flag("--model")
    api_base: str | None = _flag("--api-base")
    max_runs: int | None = _flag("--max-runs")          # None: the idea's, else 5
    max_attempts: int | None = _flag("--max-attempts")  # None: the idea's, else 4
    timeout: float = _flag("--timeout", 3600.0)
    llm_timeout: float = _flag("--llm-timeout", 600.0)
    max_cost: float | None = _flag("--max-cost")
    max_tokens: int | None = _flag("--max-tokens")
    context_window: int | None = _flag("--context-window")  # None: litellm's, the server's, else 8192
    smoke: bool = _flag("--no-smoke", True)              # a bool's flag is given when it is not the default
    sandbox: str | None = _flag("--sandbox")
    executor: str | None = _flag("--executor")          # None: $AGENT_EXECUTOR, else local
    edit_format: str = _flag("--edit-format", "auto")    # diff | whole | auto (agent/edits.py)
    slurm: SlurmOptions = field(default_factory=SlurmOptions)


def to_argv(options) -> list[str]:
    """The flags that give `options` back when parsed (defaults of bools and unset values left out)."""
    argv: list[str] = []
    for f in fields(options):
        value = getattr(options, f.name)
        if is_dataclass(value):
            argv += to_argv(value)
        elif isinstance(value, bool):
            if f.default is MISSING or value != f.default:
                argv.append(f.metadata["flag"])
        elif value is not None:
            argv += [f.metadata["flag"], str(value)]
    return argv
