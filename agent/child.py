"""One idea of `run IDEA... --jobs N`, in a process of its own.

`python -m agent.child STATUS run IDEA [options]`: the driver (agent/parallel.py) starts one child
per idea with the command line a single `run` of that idea would have, parsed by the same parser
(agent/cli.py), set up by the same agent/launch.py, the same loop. Only the view differs: a
`StatusView` that rewrites STATUS on every phase change for the driver's table; its last write
says how the idea ended.
"""

from __future__ import annotations

import sys
from pathlib import Path

from agent import cli, launch
from agent.parallel import StatusView, read_json, write_json
from agent.ui import console, err_console


def main(argv: list[str]) -> int:
    """`STATUS_FILE run IDEA [options]`: one idea, reporting to STATUS_FILE; the exit status of `run`."""
    status = Path(argv[0])
    args = cli.build_parser().parse_args(argv[1:])
    try:
        return _run(status, args)
    except KeyboardInterrupt:
        _finish(status, {"state": "interrupted", "reason": "interrupted: the attempt was committed"})
        return 130
    except cli.user_errors() as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        _finish(status, {"state": "failed", "reason": str(exc).splitlines()[0]})
        return 2


def _run(status: Path, args) -> int:
    from agent.idea import load_idea

    opts = cli.run_options(args)
    idea = load_idea(args.ideas[0])
    executor = launch.executor_for_idea(opts, idea)
    coder = launch.coder_for(idea, opts)
    box = launch.box_for(opts.sandbox)
    views = []

    def status_view():
        views.append(StatusView(status, console, idea.name, launch.max_runs(opts, idea), coder))
        return views[-1]

    outcome = launch.run_one(idea, coder, opts, executor, status_view, box=box, verbosity=cli.verbosity(args))
    if views:
        views[-1].write(**_ending(outcome))
    return 0 if outcome is not None and outcome.ok else 1


def _ending(outcome) -> dict:
    """What the driver's summary shows of this idea."""
    if outcome is None:
        return {"state": "failed", "reason": "no workspace (see the log)"}
    return {"state": "done" if outcome.ok else "failed", "reason": outcome.stopped_because,
            "workspace": str(outcome.workspace), "runs_completed": outcome.runs_completed}


def _finish(status: Path, ending: dict) -> None:
    """The ending added to what the view wrote last (its run, cost, ...), which the table keeps."""
    write_json(status, read_json(status) | ending)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
