"""Command line: each command is a thin function over the modules that do the work.

Exit status: 0 success, 1 the work ran but did not succeed (a failed idea, a blocking finding),
2 bad input (a malformed idea, not a workspace, an unknown run, a misconfigured model), 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # litellm must not reach the network

from rich.table import Table
from rich.text import Text

from agent import __version__, launch, ui
from agent.edits import EDIT_FORMATS
from agent.options import DEFAULT_RESULTS, RunOptions, SlurmOptions, UsageError
from agent.ui import console, err_console


# -- run ----------------------------------------------------------------------------------

def run_options(args: argparse.Namespace) -> RunOptions:
    """The typed record of `run`/`resume`'s options: the only thing the code below the CLI reads."""
    slurm = SlurmOptions(partition=args.slurm_partition, gpus=args.slurm_gpus, cpus=args.slurm_cpus,
                         mem_gb=args.slurm_mem, time=args.slurm_time, account=args.slurm_account)
    return RunOptions(results=getattr(args, "results", DEFAULT_RESULTS), profile=getattr(args, "profile", None),
                      model=args.model, api_base=args.api_base, max_runs=args.max_runs,
                      max_attempts=args.max_attempts, timeout=args.timeout, llm_timeout=args.llm_timeout,
                      max_cost=args.max_cost, max_tokens=args.max_tokens, context_window=args.context_window,
                      smoke=not args.no_smoke,
                      sandbox=args.sandbox, executor=args.executor, edit_format=args.edit_format or "auto", slurm=slurm)


def _check_results_dir(results: str) -> None:
    path = Path(results)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--results {results} is a file, not a folder: give the folder that "
                         "should hold the workspaces (it is made if missing)")


def cmd_run(args) -> int:
    from agent.idea import load_idea

    opts = run_options(args)
    _check_results_dir(opts.results)
    ideas = [load_idea(_idea_path(p)) for p in args.ideas]  # every idea is checked before any work,
    executors = [launch.executor_for_idea(opts, idea) for idea in ideas]  # its profile and executor too
    coders = [launch.coder_for(idea, opts) for idea in ideas]  # and every model, before any workspace
    if len(ideas) > 1:
        from agent import parallel  # many ideas at once, one process each
        jobs = parallel.jobs_wanted(args.jobs, len(ideas), opts.executor, args.gpus)
        if jobs > 1:
            return parallel.run_parallel(ideas, opts, console, jobs=jobs, gpus_flag=args.gpus,
                                         verbosity=verbosity(args))
    box = launch.box_for(opts.sandbox)  # once for all the ideas: its warning is printed once
    outcomes = []
    for idea, coder, executor in zip(ideas, coders, executors):
        outcomes.append((idea, launch.run_one(idea, coder, opts, executor, box=box, verbosity=verbosity(args))))
    if len(ideas) > 1:
        _summary(outcomes)
    return 0 if all(o is not None and o.ok for _, o in outcomes) else 1


def _idea_path(given: str) -> Path:
    """The idea file as given; if there is none, a shipped idea of that name (`ideas/x.md` or `x`)."""
    path = Path(given)
    if path.exists():
        return path
    from agent.resources import ideas_dir
    name = path.name if path.suffix == ".md" else f"{path.name}.md"
    shipped = ideas_dir() / name
    return shipped if shipped.is_file() else path


def verbosity(args) -> int:
    """-q is -1, -v 1, -vv 2: the level of the console's log and of the workspace's agent.log."""
    return -1 if getattr(args, "quiet", False) else getattr(args, "verbose", 0) or 0


def _summary(outcomes) -> None:
    table = Table(title="ideas")
    for col in ("idea", "workspace", "runs", "result"):
        table.add_column(col)
    for idea, o in outcomes:
        if o is None:
            table.add_row(Text(idea.name), "-", "0", Text("no workspace", style="red"))
        else:
            table.add_row(Text(idea.name), Text(str(o.workspace)), str(o.runs_completed),
                          Text(o.stopped_because, style="green" if o.ok else "red"))
    ui.print_unclipped(console, table)


# -- resume -------------------------------------------------------------------------------

def cmd_resume(args) -> int:
    from dataclasses import replace

    from agent import workspace
    from agent.logs import workspace_log
    from agent.loop import ExperimentLoop, prepare_resume
    from agent.ui import LiveView

    opts = run_options(args)
    try:
        ws = workspace.open_workspace(Path(args.workspace))
    except workspace.WorkspaceError as exc:
        raise UsageError(str(exc)) from None
    if not (opts.executor or os.environ.get("AGENT_EXECUTOR")) and any(ws.path.glob("run_*/slurm_job.json")):
        opts = replace(opts, executor="slurm")  # its runs were Slurm jobs: one may still be running
        console.print("resuming with --executor slurm: this workspace's runs were Slurm jobs")
    loop_opts = launch.loop_options(opts, ws.idea, launch.executor_for(opts, ws.template, ws.profile),
                                    launch.box_for(opts.sandbox))
    state, conv, recorded_model = prepare_resume(ws, loop_opts.max_runs, loop_opts.executor, loop_opts.edit_format)
    coder = launch.coder_for(ws.idea, replace(opts, model=opts.model or recorded_model))
    coder.count_usage(conv.usage)  # the caps count what the idea has spent already
    if hasattr(coder, "played"):  # a replay continues after the replies already played
        coder.played = len(conv.assistant_replies())
    console.print(Text(f"resuming {ws.path} at run {state.run} "
                       f"({len(state.completed_runs)} run(s) already done) with {coder.name}"))
    for note in getattr(coder, "notes", None) or []:  # the context window's source among them
        console.print(ui.message(f"note: {note}", style="dim"))
    quiet = verbosity(args) < 0
    # The log opens after prepare_resume: lines set aside last time must not look half-written.
    with LiveView(console, ws.idea.name, loop_opts.max_runs, coder, quiet=quiet) as view, \
            workspace_log(ws.path, verbosity(args)):
        outcome = ExperimentLoop(ws, coder, view, loop_opts, conv=conv, state=state).run()
    launch.report_outcome(outcome)
    return 0 if outcome.ok else 1


# -- prepare ------------------------------------------------------------------------------

def cmd_prepare(args) -> int:
    """Compute every cached entry a profile's runs need, once (resumable: done entries are kept)."""
    import re

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from agent import execution
    from agent.idea import TEMPLATES_DIR
    from agent.template import load_template
    template = load_template(TEMPLATES_DIR / args.template)
    profile = template.choose_profile(args.profile)
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(f"preparing {profile}", total=None)

        def on_line(line: str) -> None:
            m = re.search(r"(\d+)/(\d+) (tokens|vectors)", line)   # a language model's, or a synthetic world's
            if m:
                progress.update(task, completed=int(m.group(1)), total=int(m.group(2)),
                                description=f"{profile}: training {'activations' if m.group(3) == 'tokens' else 'vectors'}")
            elif line.strip():
                progress.console.print(line, markup=False, highlight=False, soft_wrap=True)

        pipeline = execution.Pipeline(template.root, template, profile, on_line=on_line,
                                      protected=execution.protected_from_template(template))
        try:
            dirs = pipeline.prepare(smoke=False)
            if template.smoke_profiles is None or profile in template.smoke_profiles:
                pipeline.prepare(smoke=True)
        except execution.PrepareError as exc:
            raise UsageError(str(exc)) from None
    console.print(f"profile {profile} prepared: {len(dirs['eval'])} cache entries under "
                  f"{execution.cache_dir()}", soft_wrap=True)
    return 0


# -- small commands -----------------------------------------------------------------------

def cmd_ideas_import(args) -> int:
    from agent.idea import import_ideas

    for path in import_ideas(args.json, args.out):
        console.print(Text(f"wrote {path}"))
    return 0


def cmd_check(args) -> int:
    from agent.checks import check_command

    return check_command(Path(args.file), Path(args.before) if args.before else None)


def cmd_log(args) -> int:
    from agent import review
    return review.log(Path(args.workspace), as_json=args.json, console=console)


def cmd_show(args) -> int:
    from agent import review
    return review.show(Path(args.workspace), args.run, console=console)


def cmd_replay(args) -> int:
    from agent import review
    return review.replay(Path(args.workspace), args.run, console=console, timeout=args.timeout,
                         tolerance=args.tolerance, box=args.sandbox)


def cmd_report(args) -> int:
    from agent import review
    return review.report(Path(args.workspace), console=console, out=Path(args.out) if args.out else None)


def cmd_import(args) -> int:
    from agent import aider_import

    summary = aider_import.import_log(Path(args.log), Path(args.onto), Path(args.out) if args.out else None)
    aider_import.print_summary(summary, console)
    return 0


def cmd_export(args) -> int:
    from agent import export

    results = export.export_workspace(Path(args.workspace), args.to, uri=args.uri,
                                      project=args.project)
    for r in results:
        console.print(Text(f"{r.label}: {'already exported' if r.existed else 'exported'} "
                           f"as {args.to} run {r.run_id}"))
    created = sum(1 for r in results if not r.existed)
    console.print(Text(f"{created} new run(s), {len(results) - created} already there; "
                       f"{export.where(args.to, args.uri, results)}"))
    return 0


# -- parser -------------------------------------------------------------------------------

class _HelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" where an option has a real default its help does not already state."""

    def _get_help_string(self, action):
        help_text = action.help or ""
        if ("default" in help_text or action.default in (None, False, argparse.SUPPRESS)
                or not action.option_strings):
            return help_text
        return f"{help_text} (default: %(default)s)"


def _positive(kind):
    """An argparse type: a number above zero, else exit 2 with the reason."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
        return value
    parse.__name__ = f"positive {kind.__name__}"
    return parse


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _output_args() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="count", default=0,
                       help="more detail: -v info messages, -vv debug (also in the workspace's agent.log)")
    group.add_argument("-q", "--quiet", action="store_true",
                       help="only results and errors: no run output, phase lines or warnings")
    return common


WORKSPACE_HELP = "a workspace folder made by `run` (results/<timestamp>_<idea>)"


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="any litellm model string (deepseek/deepseek-reasoner, anthropic/..., "
                   "ollama_chat/...), local:PATH.gguf (served here: python -m agent.local_model), "
                   "or replay:PATH; default $AGENT_MODEL, else the idea's recorded replies")
    p.add_argument("--api-base", help="an OpenAI-compatible server (default $AGENT_API_BASE)")
    p.add_argument("--max-runs", type=_positive(int), metavar="N",
                   help="runs after the baseline (default: the idea's, else 5)")
    p.add_argument("--max-attempts", type=_positive(int), metavar="N",
                   help="executions of one run before giving up (default: the idea's, else 4)")
    p.add_argument("--timeout", type=_positive(float), default=3600, metavar="SECONDS",
                   help="seconds for one run")
    p.add_argument("--llm-timeout", type=_positive(float), default=600, metavar="SECONDS",
                   help="seconds for one LLM call")
    p.add_argument("--max-cost", type=_positive(float), metavar="DOLLARS",
                   help="stop the idea cleanly past this many dollars (default: no limit)")
    p.add_argument("--max-tokens", type=_positive(int), metavar="N",
                   help="stop the idea cleanly past this many tokens (default: no limit)")
    p.add_argument("--context-window", type=_positive(int), metavar="TOKENS",
                   help="the model's context window, prompt and reply together: every prompt is cut to fit "
                        "it (default: litellm's model list, else what the --api-base server reports, else 8192)")
    p.add_argument("--no-smoke", action="store_true", help="skip the few-steps smoke run before each run")
    p.add_argument("--sandbox", choices=("bwrap", "staged"),
                   help="the box generated code runs in (default $AGENT_SANDBOX, else bwrap where it works)")
    p.add_argument("--edit-format", choices=EDIT_FORMATS,
                   help="how the coder edits: diff (SEARCH/REPLACE blocks), whole (whole files; the default "
                        "for --model local:…), auto (asks for diffs, also applies whole files; the default)")
    p.add_argument("--executor", choices=("local", "slurm"),
                   help="where runs execute: here, or each run a Slurm job (default $AGENT_EXECUTOR, else local)")
    p.add_argument("--slurm-partition", help="Slurm partition (default: the profile's, else the cluster's)")
    p.add_argument("--slurm-gpus", type=int, help="GPUs per job (default: the profile's)")
    p.add_argument("--slurm-cpus", type=int, help="CPUs per job (default: the profile's)")
    p.add_argument("--slurm-mem", type=float, help="memory per job in GB (default: the profile's)")
    p.add_argument("--slurm-time", help="job time limit, minutes or [D-]HH:MM:SS (default: from --timeout)")
    p.add_argument("--slurm-account", help="Slurm account to charge")


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    prog = prog or ui.prog()
    common = _output_args()
    parser = argparse.ArgumentParser(prog=prog, formatter_class=_HelpFormatter,
                                     description="An autonomous, git-recorded experiment loop for SAE research.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="what to do; `COMMAND --help` for its options")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text, parents=[common],
                              formatter_class=_HelpFormatter)

    p = command("run", "run one or more ideas, each in its own workspace")
    p.add_argument("ideas", nargs="+", metavar="IDEA",
                   help="idea markdown files, or the name of a shipped idea (lateral_inhibition)")
    p.add_argument("--results", default=DEFAULT_RESULTS, metavar="DIR",
                   help="parent folder of the workspaces, relative to the current directory")
    p.add_argument("--profile", help="template profile: tiny, cpu, gemma-2-2b (default: cpu, or the GPU one)")
    p.add_argument("--jobs", type=int, default=None,
                   help="ideas at once, each in its own process (default: one per visible GPU, else 1)")
    p.add_argument("--gpus", help="GPUs to share among the ideas, e.g. 0,2 (default: all visible)")
    _model_args(p)
    p.set_defaults(func=cmd_run)

    p = command("resume", "continue an idea that stopped (Ctrl-C, crash, budget)")
    p.add_argument("workspace", help=WORKSPACE_HELP)
    _model_args(p)
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("ideas", help="manage idea files", formatter_class=_HelpFormatter)
    isub = p.add_subparsers(dest="ideas_command", required=True, metavar="SUBCOMMAND", help="import")
    ip = isub.add_parser("import", help="convert an AI-Scientist ideas.json into idea files",
                         parents=[common], formatter_class=_HelpFormatter)
    ip.add_argument("json", help="an AI-Scientist ideas.json (a list of objects with Name, Title, ...)")
    ip.add_argument("--out", default=".", metavar="DIR", help="folder for the .md files")
    ip.set_defaults(func=cmd_ideas_import)

    p = command("check", "the pre-run gate on a file: exit 1 if a finding would block a run")
    p.add_argument("file", help="a Python file, e.g. a workspace's experiment.py")
    p.add_argument("--before", help="the file before the edit: report only what the edit introduced")
    p.set_defaults(func=cmd_check)

    p = command("log", "a table of every attempt in a workspace")
    p.add_argument("workspace", help=WORKSPACE_HELP)
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(func=cmd_log)

    p = command("show", "what the LLM said, the diff, and the outcome of one attempt")
    p.add_argument("workspace", help=WORKSPACE_HELP)
    p.add_argument("run", help="RUN or RUN.ATTEMPT, e.g. 2 or 2.1")
    p.set_defaults(func=cmd_show)

    p = command("prepare", "compute the cached activations a profile needs (run also does it when needed)")
    p.add_argument("--profile", help="tiny | cpu | gemma-2-2b (default: the template's)")
    p.add_argument("--template", default="sae_variants", help="the template")
    p.set_defaults(func=cmd_prepare)

    p = command("replay", "re-run an attempt in a scratch copy beside the workspace and compare")
    p.add_argument("workspace", help=WORKSPACE_HELP)
    p.add_argument("run", help="RUN or RUN.ATTEMPT, e.g. 2 or 2.1")
    p.add_argument("--timeout", type=_positive(float), metavar="SECONDS",
                   help="seconds (default: 3x the recorded duration, at least 600)")
    p.add_argument("--tolerance", type=_non_negative, default=0.02,
                   help="absolute tolerance for accuracies and explained variance")
    p.add_argument("--sandbox", choices=("bwrap", "staged"), help="the box the replay runs in (default: the strongest here)")
    p.set_defaults(func=cmd_replay)

    p = command("report", "write a self-contained report of a workspace")
    p.add_argument("workspace", help=WORKSPACE_HELP)
    p.add_argument("--out", help="output file: .html or .md (default <workspace>.report.html beside it)")
    p.set_defaults(func=cmd_report)

    p = command("import", "turn an AI-Scientist/aider chat log into a workspace")
    p.add_argument("log", help="an aider chat history (.aider.chat.history.md)")
    p.add_argument("--onto", required=True, help="the file the log's edits were written against")
    p.add_argument("--out", metavar="DIR",
                   help="workspace folder (default: results/imported_<log name> in the current directory)")
    p.set_defaults(func=cmd_import)

    p = command("export", "copy a workspace's attempts to an experiment tracker, one tracked run each")
    p.add_argument("workspace", help=WORKSPACE_HELP)
    p.add_argument("--to", required=True, choices=("mlflow", "wandb"), help="the tracker")
    p.add_argument("--uri", help="MLflow: tracking URI (default $MLFLOW_TRACKING_URI, else MLflow's "
                   "own default); wandb: the run directory (default: the current directory)")
    p.add_argument("--project", help="MLflow experiment / wandb project (default: sae-agent)")
    p.set_defaults(func=cmd_export)
    return parser


def user_errors() -> tuple[type[Exception], ...]:
    from agent.export import ExportError
    from agent.executors import ExecutorError
    from agent.history import HistoryError
    from agent.idea import IdeaError
    from agent.sandbox import SandboxError
    from agent.template import TemplateError
    from agent.workspace import WorkspaceError

    return (UsageError, IdeaError, HistoryError, SandboxError, TemplateError, WorkspaceError, ExportError,
            ExecutorError)


def main(argv: list[str] | None = None) -> int:
    from agent.logs import setup_logging

    ui.set_prog(ui.program_name())
    args = build_parser().parse_args(argv)
    setup_logging(verbosity(args), err_console)
    try:
        from agent.local_model import serving_args  # --model local:X.gguf: a server for the command's length
        with serving_args(args):
            return args.func(args)
    except KeyboardInterrupt:
        err_console.print(ui.message(("interrupted", "yellow"), " — the attempt was committed; "
                                     f"continue with `{ui.prog()} resume WORKSPACE`"))
        return 130
    except user_errors() as exc:
        launch.print_error(exc)
        return 2
