"""Launching an idea: a run's setup built from the typed options, and one idea's loop run with it.

One place turns a `RunOptions` (agent/options.py) into what a run needs: the coder, the box its
code runs in, where its runs execute, its limits. `run`, `resume` and each `--jobs` child
(agent/cli.py, agent/child.py) all set up through here, so an idea is run alike however it was
started. A setup that cannot be made is the user's to fix: `UsageError`, exit status 2.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text

from agent import ui
from agent.options import RunOptions, UsageError
from agent.ui import LiveView, console, err_console


# -- the setup ----------------------------------------------------------------------------

def coder_for(idea, opts: RunOptions):
    """The LLM (or the idea's recorded replies, offline) with the options' caps."""
    from agent import coder as coder_mod

    model, api_base = coder_mod.resolve_model(opts.model, opts.api_base)
    replay = idea.replay_file() if idea is not None else None
    try:
        return coder_mod.make_coder(model, api_base, timeout=opts.llm_timeout, max_cost=opts.max_cost,
                                    max_tokens=opts.max_tokens, context_window=opts.context_window,
                                    replay_default=replay if replay and replay.exists() else None)
    except coder_mod.LLMError as exc:
        raise UsageError(str(exc)) from None


def executor_for(opts: RunOptions, template, profile):
    """Where runs execute (--executor, $AGENT_EXECUTOR), with the profile's Slurm resources."""
    from agent import executors

    try:
        return executors.make_executor(opts.executor, opts.slurm.settings()).for_profile(template, profile)
    except executors.ExecutorError as exc:
        raise UsageError(str(exc)) from None


def executor_for_idea(opts: RunOptions, idea):
    """Where a new workspace's runs execute: at the profile its workspace will be made with."""
    from agent.template import load_template

    template = load_template(idea.template_dir)
    return executor_for(opts, template, template.choose_profile(opts.profile or idea.profile))


def box_for(requested: str | None) -> str:
    """The box every run goes in; refused (exit 2) when the one asked for cannot run here.
    Called once per command, so the staged fallback's warning is printed once."""
    from agent import sandbox

    box = sandbox.choose(requested)
    if box == "staged":
        err_console.print(f"[yellow]warning:[/yellow] {sandbox.staged_warning()}", soft_wrap=True)
    return box


def max_runs(opts: RunOptions, idea) -> int:
    return opts.max_runs or idea.max_runs or 5


def loop_options(opts: RunOptions, idea, executor, box: str):
    """The loop's limits: the options' own, else the idea's, else the defaults."""
    from agent.loop import LoopOptions

    return LoopOptions(max_runs=max_runs(opts, idea), max_attempts=opts.max_attempts or idea.max_attempts or 4,
                       timeout=opts.timeout, smoke=opts.smoke, sandbox=box, executor=executor,
                       edit_format=opts.edit_format)


# -- one idea -----------------------------------------------------------------------------

def run_one(idea, coder, opts: RunOptions, executor=None, view_factory=None, *, box: str,
            verbosity: int = 0):
    """A new workspace for `idea` and its loop to the end; None when no workspace could be made.
    `view_factory` makes the live view (a `--jobs` child's also writes its status file)."""
    from agent import baseline, workspace
    from agent.logs import workspace_log
    from agent.loop import ExperimentLoop

    _banner(coder, idea)
    loop_opts = loop_options(opts, idea, executor, box)
    view_factory = view_factory or (lambda: LiveView(console, idea.name, loop_opts.max_runs, coder,
                                                     quiet=verbosity < 0))
    with view_factory() as view:
        view.set(phase="making the workspace and the baseline")
        try:
            ws = workspace.create(idea, Path(opts.results).resolve(), opts.profile)
            baseline.establish(ws, timeout=opts.timeout, on_line=view.log, sandbox=box, executor=executor)
        except workspace.WorkspaceError as exc:
            print_error(exc)
            return None
        console.print(Text(f"workspace: {ws.path} (profile {ws.profile})"))
        with workspace_log(ws.path, verbosity):
            outcome = ExperimentLoop(ws, coder, view, loop_opts).run()
    report_outcome(outcome)
    return outcome


def _banner(coder, idea) -> None:
    say = ui.message
    if coder.name.startswith("replay:"):
        console.print(say(("offline replay — no LLM is called", "bold yellow"),
                          f" (recorded replies: {coder.name[len('replay:'):]})"))
    else:
        console.print(say("coder: ", (coder.name, "bold")))
    for note in getattr(coder, "notes", None) or []:
        console.print(say(f"note: {note}", style="dim"))
    console.print(say("idea: ", (idea.title, "bold"), f" ({idea.path})"))


def report_outcome(outcome) -> None:
    """How the idea ended, and the commands that look at it or go on with it."""
    prog = ui.prog()
    console.print(ui.message((outcome.stopped_because, "green" if outcome.ok else "red"),
                             f" — {outcome.runs_completed} run(s) completed; history: "
                             f"{prog} log {outcome.workspace}"))
    if not outcome.ok:
        console.print(Text(f"to look at the last attempt: {prog} show {outcome.workspace} "
                           f"{outcome.runs_completed + 1}; to go on (any model): {prog} resume "
                           f"{outcome.workspace} [--model M]"))


def print_error(exc: BaseException) -> None:
    err_console.print(ui.message(("error:", "red"), f" {exc}"))
