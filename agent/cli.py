"""Command line: each command is a thin function over the modules that do the work.

Exit status: 0 success, 1 the work ran but did not succeed (a failed idea, a blocking finding),
2 bad input (a malformed idea, not a workspace, an unknown run, a misconfigured model), 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # litellm must not reach the network

from rich.console import Console
from rich.table import Table

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS = REPO_ROOT / "results"
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


class UsageError(Exception):
    """Bad input from the user: reported in one message, exit status 2."""


# -- run ----------------------------------------------------------------------------------

def _coder_for(idea, args):
    from agent import coder as coder_mod

    model, api_base = coder_mod.resolve_model(args.model, args.api_base)
    replay = idea.replay_file() if idea is not None else None
    try:
        return coder_mod.make_coder(model, api_base, timeout=args.llm_timeout, max_cost=args.max_cost,
                                    max_tokens=args.max_tokens,
                                    replay_default=replay if replay and replay.exists() else None)
    except coder_mod.LLMError as exc:
        raise UsageError(str(exc)) from None


def _banner(coder, idea) -> None:
    if coder.name.startswith("replay:"):
        console.print(f"[bold yellow]offline replay — no LLM is called[/bold yellow] "
                      f"(recorded replies: {coder.name[len('replay:'):]})")
    else:
        console.print(f"coder: [bold]{coder.name}[/bold]")
    for note in getattr(coder, "notes", None) or []:
        console.print(f"[dim]note: {note}[/dim]")
    console.print(f"idea: [bold]{idea.title}[/bold] ({idea.path})")


def _executor_for(args, template, profile):
    """Where runs execute (--executor, $AGENT_EXECUTOR), with the profile's Slurm resources."""
    from agent import executors

    try:
        settings = executors.SlurmSettings(
            partition=args.slurm_partition, gpus=args.slurm_gpus, cpus=args.slurm_cpus,
            mem_gb=args.slurm_mem, account=args.slurm_account,
            time_min=executors.parse_time(args.slurm_time) if args.slurm_time else None)
        return executors.make_executor(args.executor, settings).for_profile(template, profile)
    except executors.ExecutorError as exc:
        raise UsageError(str(exc)) from None


def cmd_run(args) -> int:
    from agent.idea import load_idea

    from agent.template import load_template

    ideas = [load_idea(p) for p in args.ideas]  # every idea is checked before any work,
    executors = []
    for idea in ideas:  # its profile and its executor too
        template = load_template(idea.template_dir)
        executors.append(_executor_for(args, template, template.choose_profile(args.profile or idea.profile)))
    coders = [_coder_for(idea, args) for idea in ideas]  # and every model, before any workspace
    if len(ideas) > 1:
        from agent import parallel  # many ideas at once, one process each
        if parallel.jobs_wanted(args) > 1:
            return parallel.run_parallel(ideas, args, console)
    outcomes = []
    for idea, coder, executor in zip(ideas, coders, executors):
        outcomes.append((idea, _run_one(idea, coder, args, executor)))
    if len(ideas) > 1:
        _summary(outcomes)
    return 0 if all(o is not None and o.ok for _, o in outcomes) else 1


def _options(args, idea, executor=None):
    from agent.loop import LoopOptions

    return LoopOptions(max_runs=args.max_runs or idea.max_runs or 5,
                       max_attempts=args.max_attempts or idea.max_attempts or 4,
                       timeout=args.timeout, smoke=not args.no_smoke, executor=executor)


def _run_one(idea, coder, args, executor=None, view_factory=None):
    from agent import workspace
    from agent.loop import ExperimentLoop
    from agent.ui import LiveView

    _banner(coder, idea)
    opts = _options(args, idea, executor)
    view_factory = view_factory or (lambda: LiveView(console, idea.name, opts.max_runs, coder))
    with view_factory() as view:
        view.set(phase="making the workspace and the baseline")
        try:
            ws = workspace.create(idea, Path(args.results), args.profile, timeout=args.timeout,
                                  on_line=view.log, executor=executor)
        except workspace.WorkspaceError as exc:
            err_console.print(f"[red]error:[/red] {exc}")
            return None
        console.print(f"workspace: {ws.path} (profile {ws.profile})")
        outcome = ExperimentLoop(ws, coder, view, opts).run()
    _report_outcome(outcome)
    return outcome


def _report_outcome(outcome) -> None:
    colour = "green" if outcome.ok else "red"
    console.print(f"[{colour}]{outcome.stopped_because}[/{colour}] — {outcome.runs_completed} run(s) "
                  f"completed; history: python -m agent log {outcome.workspace}")
    if not outcome.ok:
        console.print(f"to look at the last attempt: python -m agent show {outcome.workspace} "
                      f"{outcome.runs_completed + 1}; to go on (any model): python -m agent resume "
                      f"{outcome.workspace} [--model M]")


def _summary(outcomes) -> None:
    table = Table(title="ideas")
    for col in ("idea", "workspace", "runs", "result"):
        table.add_column(col)
    for idea, o in outcomes:
        if o is None:
            table.add_row(idea.name, "-", "0", "[red]no workspace[/red]")
        else:
            table.add_row(idea.name, str(o.workspace), str(o.runs_completed),
                          ("[green]" if o.ok else "[red]") + o.stopped_because)
    console.print(table)


# -- resume -------------------------------------------------------------------------------

def cmd_resume(args) -> int:
    from agent import workspace
    from agent.loop import ExperimentLoop, prepare_resume
    from agent.ui import LiveView

    try:
        ws = workspace.open_workspace(Path(args.workspace))
    except workspace.WorkspaceError as exc:
        raise UsageError(str(exc)) from None
    if not (args.executor or os.environ.get("AGENT_EXECUTOR")) and any(ws.path.glob("run_*/slurm_job.json")):
        args.executor = "slurm"  # its runs were Slurm jobs: one may still be running
        console.print("resuming with --executor slurm: this workspace's runs were Slurm jobs")
    opts = _options(args, ws.idea, _executor_for(args, ws.template, ws.profile))
    state, conv, recorded_model = prepare_resume(ws, opts.max_runs, opts.executor)
    args.model = args.model or recorded_model
    coder = _coder_for(ws.idea, args)
    coder.count_usage(conv.usage)  # the caps count what the idea has spent already
    if hasattr(coder, "played"):  # a replay continues after the replies already played
        coder.played = len(conv.assistant_replies())
    console.print(f"resuming {ws.path} at run {state.run} "
                  f"({len(state.completed_runs)} run(s) already done) with {coder.name}")
    if state.reattach is not None:
        console.print(f"run {state.run} is still Slurm job {state.reattach.job_id}: waiting for it")
    with LiveView(console, ws.idea.name, opts.max_runs, coder) as view:
        outcome = ExperimentLoop(ws, coder, view, opts, conv=conv, state=state).run()
    _report_outcome(outcome)
    return 0 if outcome.ok else 1


# -- small commands -----------------------------------------------------------------------

def cmd_ideas_import(args) -> int:
    from agent.idea import import_ideas

    for path in import_ideas(args.json, args.out):
        console.print(f"wrote {path}")
    return 0


def cmd_check(args) -> int:
    from agent.checks import check_command

    return check_command(Path(args.file), Path(args.before) if args.before else None)


def _review(name):
    def command(args) -> int:
        from agent import review
        return getattr(review, name)(args, console)
    return command


def cmd_import(args) -> int:
    from agent.aider_import import import_command

    return import_command(args, console)


# -- parser -------------------------------------------------------------------------------

def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="any litellm model string (deepseek/deepseek-reasoner, anthropic/..., "
                   "ollama_chat/...), or replay:PATH; default $AGENT_MODEL, else the idea's recorded replies")
    p.add_argument("--api-base", help="an OpenAI-compatible server (default $AGENT_API_BASE)")
    p.add_argument("--max-runs", type=int, help="runs after the baseline (default: the idea's, else 5)")
    p.add_argument("--max-attempts", type=int, help="executions of one run before giving up (default 4)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds for one run (default 3600)")
    p.add_argument("--llm-timeout", type=float, default=600, help="seconds for one LLM call (default 600)")
    p.add_argument("--max-cost", type=float, help="stop the idea cleanly past this many dollars")
    p.add_argument("--max-tokens", type=int, help="stop the idea cleanly past this many tokens")
    p.add_argument("--no-smoke", action="store_true", help="skip the few-steps smoke run before each run")
    p.add_argument("--executor", choices=("local", "slurm"),
                   help="where runs execute: here, or each run a Slurm job (default $AGENT_EXECUTOR, else local)")
    p.add_argument("--slurm-partition", help="Slurm partition (default: the profile's, else the cluster's)")
    p.add_argument("--slurm-gpus", type=int, help="GPUs per job (default: the profile's)")
    p.add_argument("--slurm-cpus", type=int, help="CPUs per job (default: the profile's)")
    p.add_argument("--slurm-mem", type=float, help="memory per job in GB (default: the profile's)")
    p.add_argument("--slurm-time", help="job time limit, minutes or [D-]HH:MM:SS (default: from --timeout)")
    p.add_argument("--slurm-account", help="Slurm account to charge")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m agent",
                                     description="An autonomous, git-recorded experiment loop for SAE research.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run one or more ideas, each in its own workspace")
    p.add_argument("ideas", nargs="+", help="idea markdown files (ideas/*.md)")
    p.add_argument("--results", default=str(DEFAULT_RESULTS), help="parent folder of workspaces")
    p.add_argument("--profile", help="template profile: tiny, cpu, gemma-2-2b (default: cpu, or the GPU one)")
    p.add_argument("--jobs", type=int, default=None,
                   help="ideas at once, each in its own process (default: one per visible GPU, else 1)")
    p.add_argument("--gpus", help="GPUs to share among the ideas, e.g. 0,2 (default: all visible)")
    _model_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("resume", help="continue an idea that stopped (Ctrl-C, crash, budget)")
    p.add_argument("workspace")
    _model_args(p)
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("ideas", help="manage idea files")
    isub = p.add_subparsers(dest="ideas_command", required=True, metavar="SUBCOMMAND")
    ip = isub.add_parser("import", help="convert an AI-Scientist ideas.json into idea files")
    ip.add_argument("json")
    ip.add_argument("--out", default=str(REPO_ROOT / "ideas"), help="folder for the .md files")
    ip.set_defaults(func=cmd_ideas_import)

    p = sub.add_parser("check", help="the pre-run gate on a file: exit 1 if a finding would block a run")
    p.add_argument("file")
    p.add_argument("--before", help="the file before the edit: report only what the edit introduced")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("log", help="a table of every attempt in a workspace")
    p.add_argument("workspace")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(func=_review("log_command"))

    p = sub.add_parser("show", help="what the LLM said, the diff, and the outcome of one attempt")
    p.add_argument("workspace")
    p.add_argument("run", help="RUN or RUN.ATTEMPT, e.g. 2 or 2.1")
    p.set_defaults(func=_review("show_command"))

    p = sub.add_parser("replay", help="re-run an attempt in a scratch copy beside the workspace and compare")
    p.add_argument("workspace")
    p.add_argument("run", help="RUN or RUN.ATTEMPT")
    p.add_argument("--timeout", type=float, help="seconds (default: 3x the recorded duration, at least 600)")
    p.add_argument("--tolerance", type=float, default=0.02,
                   help="absolute tolerance for accuracies and explained variance (default 0.02)")
    p.set_defaults(func=_review("replay_command"))

    p = sub.add_parser("report", help="write a self-contained report of a workspace")
    p.add_argument("workspace")
    p.add_argument("--out", help="output file: .html or .md (default <workspace>.report.html beside it)")
    p.set_defaults(func=_review("report_command"))

    p = sub.add_parser("import", help="turn an AI-Scientist/aider chat log into a workspace")
    p.add_argument("log")
    p.add_argument("--onto", required=True, help="the file the log's edits were written against")
    p.add_argument("--out", help="workspace folder (default results/imported_<log name>)")
    p.set_defaults(func=cmd_import)
    return parser


def user_errors() -> tuple[type[Exception], ...]:
    from agent.executors import ExecutorError
    from agent.history import HistoryError
    from agent.idea import IdeaError
    from agent.template import TemplateError
    from agent.workspace import WorkspaceError

    return (UsageError, IdeaError, HistoryError, TemplateError, WorkspaceError, ExecutorError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/yellow] — the attempt was committed; "
                          "continue with `python -m agent resume WORKSPACE`")
        return 130
    except user_errors() as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        return 2
