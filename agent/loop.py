"""The experiment loop for one idea: idea → workspace → conversation → edits → checks → runner → history.

Each reply from the coder is one *attempt* of the current run, and every attempt is a commit:
edits that did not apply, a gate that refused the code, a run that crashed, a run that worked.
Budgets are separate: `max_attempts` counts executions of a run, `max_fixes` counts replies whose
edits never reached a run (failed blocks, gate findings, a file that already failed, no edits).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable


from agent import baseline, checks, edits, execution, failures, history, prompts, results
from agent.attempt import NOTES, RAN, Attempt, Status, restores_trailers
from agent.coder import BudgetExceeded, LLMError, Reply
from agent.conversation import TRANSCRIPT_JSON, Conversation, ConversationError
from agent.edits import EditStatus
from agent.process import RunStatus
from agent.ui import prog
from agent.workspace import TRANSCRIPTS, Workspace

if TYPE_CHECKING:
    from agent.executors import JobRecord

DONE_MARKER = "ALL_COMPLETED"
# The marker ends the idea only on a line of its own (markdown emphasis or a full stop allowed):
# prose that mentions it ("I will say ALL_COMPLETED when ...") does not.
_DONE_LINE = re.compile(r"^[ \t>]*[*_`]*" + DONE_MARKER + r"[*_`]*[ \t.!]*$", re.M)
NOTES_FILE = "notes.txt"
# What the attempt's record says of a reply the provider cut at its output limit.
TRUNCATED = "the reply was cut off at the model's output limit (finish_reason: length); none of it was applied"
LANGS = {".py": "python", ".txt": "text", ".md": "markdown", ".json": "json"}


@dataclass
class LoopOptions:
    max_runs: int = 5
    max_attempts: int = 4      # executions of one run before the idea stops
    max_fixes: int = 6         # replies whose edits never ran (gate, failed blocks, no edits)
    timeout: float = 3600.0    # seconds for one run
    smoke: bool = True         # a few-steps run before the full one, where the profile allows it
    sandbox: str | None = None  # "bwrap" | "staged"; None: the strongest that works here
    executor: object = None    # agent/executors.py: where runs execute (None: here, as a child)
    edit_format: str = "auto"  # --edit-format: "diff", "whole" or "auto" (agent/edits.py EDIT_FORMATS)


@dataclass
class LoopState:
    """Where the loop stands; rebuilt from git history on resume."""
    run: int = 1
    attempt: int = 0            # replies received for this run
    executions: int = 0         # times this run was executed
    fixes: int = 0              # replies for this run whose edits never ran
    failed_hashes: set[str] = field(default_factory=set)
    last_signature: str | None = None
    last_good_sha: str | None = None
    last_good_run: int = 0
    completed_runs: list[int] = field(default_factory=list)
    reattach: JobRecord | None = None   # a Slurm job still training this run, found on resume


@dataclass
class LoopOutcome:
    workspace: Path
    runs_completed: int
    stopped_because: str
    ok: bool


class Stop(Exception):
    """Ends the idea cleanly: everything is committed, the reason is reported."""

    def __init__(self, reason: str, ok: bool = True):
        super().__init__(reason)
        self.reason, self.ok = reason, ok


def says_done(reply: str) -> bool:
    return bool(_DONE_LINE.search(reply))


def files_text(ws: Workspace, names: list[str] | None = None) -> str:
    names = names or [n for n in ws.template.editable if n.endswith(".py")]
    dumps = []
    for name in names:
        if ws.regular_file(name):  # never a link: its target may be outside the workspace
            dumps.append(prompts.FILE_DUMP.format(
                name=name, lang=LANGS.get(Path(name).suffix, ""), content=ws.read(name).rstrip("\n")))
    return "\n".join(dumps)


def files_that_matter(ws: Workspace, edited: Iterable[str], traceback: str | None = None) -> list[str]:
    """The editable source files a failure message shows: the ones the attempt edited and the
    ones its traceback passes through, in the template's order. Not every file every time: a
    plot.py the coder never touched and the run never reached is only noise (and tokens)."""
    sources = [n for n in ws.template.editable if n.endswith(".py")]
    wanted = set(edited) | set(failures.files_in_traceback(traceback, sources))
    return [n for n in sources if n in wanted] or sources


def start_conversation(ws: Workspace, max_runs: int, edit_format: str = "auto") -> Conversation:
    editable = ", ".join(ws.template.editable)
    protected = ", ".join(ws.template.protected) or "everything else"
    command = ws.template.display_command()
    conv = Conversation(prompts.SYSTEM.format(editable=editable, protected=protected, command=command,
                                              **prompts.edit_words(edit_format)))
    seeds = ws.baseline_seeds()
    conv.add_user(prompts.TASK.format(
        title=ws.idea.title, motivation=ws.idea.motivation, experiment=ws.idea.experiment,
        plan=ws.idea.plan or "(none given: plan it yourself)", max_runs=max_runs,
        baseline=results.describe_baseline(seeds, ws.baseline_references()), headline_note=headline_note(seeds[0]),
        command=command, files=files_text(ws)))
    return conv


def headline_note(baseline: dict) -> str:
    """What the profile's headline metrics mean, where they are not the language models' probing ("" then)."""
    note = prompts.HEADLINE_NOTES.get(results.headline_metrics(baseline)[0], "")
    world = results.world(baseline)
    return note.format(world=f" ({world})" if world else "")


class ExperimentLoop:
    def __init__(self, ws: Workspace, coder, view, options: LoopOptions,
                 conv: Conversation | None = None, state: LoopState | None = None):
        self.ws, self.coder, self.view, self.opt = ws, coder, view, options
        self.conv = conv or start_conversation(ws, options.max_runs, options.edit_format)
        self.words = prompts.edit_words(options.edit_format)  # how the prompts say to edit
        self._format_restated = False  # --edit-format auto restates both formats once
        self._unparsed_replies = 0     # replies whose SEARCH/REPLACE blocks could not be parsed
        self._done_refused = False  # an ALL_COMPLETED before any code ran is refused, but not twice running
        self.state = state or LoopState()
        self.baseline = ws.baseline()
        self.baseline_seeds = ws.baseline_seeds()
        self.baseline_frontier = ws.baseline_frontier()
        self.baseline_references = ws.baseline_references()
        self.pipeline = execution.Pipeline(ws.path, ws.template, ws.profile, protected=ws.protected_files(),
                                           box=options.sandbox, timeout=options.timeout, on_line=view.log,
                                           executor=options.executor)
        self._step: execution.Step | None = None
        self._reply_cost: float | None = 0.0  # of the reply not yet committed
        self._reply_tokens = 0
        self.notes_written = False
        self._before_run = None    # the workspace just before the current run (TreeSnapshot)
        self._edited: list[str] = []
        self._tampered: list[str] = []  # what the last run changed outside its output folder

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> LoopOutcome:
        for warning in self.ws.warnings:
            self.view.say(("workspace:", "yellow"), f" {warning}")
        try:
            try:
                if self.state.reattach is not None:
                    self.follow_job(self.state.reattach)
                while self.state.run <= self.opt.max_runs:
                    self.step()
                reason = f"all {self.opt.max_runs} runs done"
            except Stop as stop:
                if not stop.ok:
                    raise
                reason = stop.reason
            self.write_notes(reason)
            self.settle()
            return self._outcome(reason, ok=True)
        except Stop as stop:
            self.settle()
            self.view.say(("stopped:", "red"), f" {stop.reason}")
            return self._outcome(stop.reason, ok=False)
        except KeyboardInterrupt:
            self.interrupted()
            raise

    def _outcome(self, reason: str, ok: bool) -> LoopOutcome:
        return LoopOutcome(self.ws.path, len(self.state.completed_runs), reason, ok)

    def step(self) -> None:
        """One reply from the coder and everything that follows from it."""
        st = self.state
        st.attempt += 1
        self._before_run = None  # set just before this reply's run, if it gets one
        self._edited = []  # the files this reply changed: what its failure messages show
        self.view.set(run=st.run, attempt=st.attempt, phase="waiting for the LLM")
        answer = self.ask()
        if answer.truncated:
            return self.cut_off()
        reply = answer.text
        self.view.set(phase="applying edits")
        before = self.ws.editable_files()
        new_files, outcomes = self.apply(reply, before, self.ws.template.editable)
        self._edited = list(new_files)
        unwritable = self.write_files(new_files)
        if unwritable:
            self.conv.add_user(prompts.EDITS_FAILED.format(feedback="\n".join(unwritable)))
            return self.refuse(unwritable[0], new_files, before, status=Status.EDIT_FAILED)
        done = says_done(reply)
        problems = [o for o in outcomes if o.status != EditStatus.APPLIED]
        if problems or "experiment.py" in new_files:
            self._done_refused = False   # an edit came between: the next ALL_COMPLETED is refused again
        if problems:
            return self.edits_failed(outcomes, problems, new_files, before)
        if done and "experiment.py" not in new_files and not self._done_refused and not self.code_ran():
            self._done_refused = True   # said again at once, it ends the idea as the coder wishes
            self.conv.add_user("\n\n".join([self.prompt(prompts.DONE_BEFORE_ANY_RUN, run=st.run),
                                             *self.format_reminder()]))
            return self.no_run(Status.NO_EDITS, "ALL_COMPLETED before any code ran: refused, the idea was not tried")
        if done and "experiment.py" not in new_files:
            # AI-Scientist's contract: ALL_COMPLETED ends the experiments; notes may come with it.
            if NOTES_FILE in new_files and st.completed_runs:
                self.commit_notes(updated=True)
            elif new_files:   # a write-up with no run to write about: kept, as the reply's attempt
                error = "ALL_COMPLETED with no run completed; its files are kept"
                self.commit(f"run {st.run} attempt {st.attempt}: {Status.NO_EDITS} — {error}", Status.NO_EDITS,
                            error=error)
            raise Stop("the coder reported ALL_COMPLETED")
        if "experiment.py" not in new_files:
            self.conv.add_user(self.no_edits_text(reply))
            return self.no_run(Status.NO_EDITS, "the reply changed nothing in experiment.py")
        if not self.gate_passes(new_files, before):
            return
        code = self.ws.read("experiment.py")
        if failures.content_hash(code) in st.failed_hashes:
            self.conv.add_user(prompts.ALREADY_FAILED.format(
                file="experiment.py", files=files_text(self.ws, files_that_matter(self.ws, new_files))))
            return self.refuse("this exact experiment.py already failed", new_files, before)
        self._before_run = self.ws.snapshot()  # restore_protected compares the run's leftovers with it
        self.execute(code)
        if done and st.executions == 0:  # the run worked (a success resets the count)
            raise Stop("the coder reported ALL_COMPLETED")

    def follow_job(self, record: JobRecord) -> None:
        """The resumed agent's first step: the interrupted attempt's Slurm job is still training
        the code as it stands, so the loop follows it to its end rather than running it again."""
        st = self.state
        st.attempt += 1
        st.reattach = None
        self.view.say(f"run_{st.run} attempt {st.attempt}: following Slurm job {record.job_id}, still running")
        self._before_run = self.ws.snapshot()
        self.execute(self.ws.read("experiment.py"), attach_stage=Path(record.cwd))

    def prompt(self, template: str, **fields) -> str:
        """A prompt filled in, its how-to-edit words those of --edit-format."""
        return template.format(**{**self.words, **fields})

    def apply(self, reply: str, files: dict[str, str], editable) -> tuple[dict[str, str], list]:
        return edits.apply_reply(reply, files, editable, edit_format=self.opt.edit_format,
                                 protected=self.ws.template.protected)

    def cut_off(self) -> None:
        """The provider stopped the reply at its output limit: none of it is applied, since a cut
        SEARCH/REPLACE block or whole file would leave a broken file, and the coder hears why."""
        self.view.say("the reply was cut off at the model's output limit: nothing applied", style="yellow")
        self.conv.add_user(self.prompt(prompts.REPLY_CUT_OFF, shorter=prompts.SHORTER[self.opt.edit_format]))
        self.no_run(Status.EDIT_FAILED, TRUNCATED)

    def code_ran(self) -> bool:
        """Whether any code of the coder's has run in this idea. Until then ALL_COMPLETED is refused:
        small models answer the first task with it alone, and the 1.5B one gave up with it after
        the gate refused its first file (two bugs the gate named)."""
        return any(a.run >= 1 and a.status in RAN for a in history.read_history(self.ws.path))

    def no_edits_text(self, reply: str) -> str:
        """NO_EDITS, with what else the reply held: files whole that diff mode does not apply; under
        auto, the first time, both formats restated in full."""
        wording = prompts.NO_EDITS if self.code_ran() else prompts.NO_EDITS_BEFORE_ANY_RUN
        parts = [self.prompt(wording, run=self.state.run)]
        if self.opt.edit_format == "diff":
            whole, _ = edits.find_whole_files(reply, self.ws.template.editable)
            if whole:
                parts.append(prompts.WHOLE_NOT_APPLIED.format(files=", ".join(sorted({w.path for w in whole}))))
        parts += self.format_reminder()
        return "\n\n".join(parts)

    def format_reminder(self) -> list[str]:
        """Under --edit-format auto, the formats in full, once: after the first reply with no usable edit."""
        if self.opt.edit_format != "auto" or self._format_restated:
            return []
        self._format_restated = True
        return [prompts.FORMAT_REMINDER]

    def whole_instead(self, outcomes) -> list[str]:
        """Under --edit-format auto, from the second reply whose blocks could not be parsed: ask for
        the whole file. Small models copy the format's markers wrongly again and again (the 1.5B
        model left out `=======` three replies running), yet write whole files well."""
        if self.opt.edit_format != "auto" or not any(o.status == EditStatus.MALFORMED for o in outcomes):
            return []
        self._unparsed_replies += 1
        return [prompts.WHOLE_INSTEAD.format(count=self._unparsed_replies)] if self._unparsed_replies >= 2 else []

    def ask(self) -> Reply:
        # Tokens and cost belong to the reply that is coming, as its provider reported them
        # (litellm's usage and price; cost None when the model is unpriced): a Ctrl-C while
        # waiting must not commit the previous reply's again.
        self._reply_tokens, self._reply_cost = 0, 0.0
        try:
            reply = self.coder.complete(self.conv)
            self._reply_tokens = reply.prompt_tokens + reply.completion_tokens
            self._reply_cost = reply.cost
        except BudgetExceeded as exc:
            raise Stop(f"budget reached: {exc}") from None
        except LLMError as exc:
            raise Stop(f"the LLM call failed: {exc}", ok=False) from None
        finally:
            self.save_transcript()
        return reply

    def write_files(self, new_files: dict[str, str]) -> list[str]:
        """Write the edited files; return why any could not be written (nothing raises).

        An editable file that a run replaced by a link is replaced by a regular file (the link
        is removed, never followed); a path that leads outside the workspace is refused.
        """
        refused = []
        for rel, text in new_files.items():
            link = self.ws.path / rel
            if link.is_symlink() and edits.allowed(rel, self.ws.template.editable):
                link.unlink()
            try:
                target = edits.safe_path(self.ws.path, rel, self.ws.template.editable)
            except edits.EditRefused as exc:
                refused.append(str(exc))
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        return refused

    # -- checks ---------------------------------------------------------------------------

    def gate_findings(self, new_files: dict[str, str], before: dict[str, str]) -> list:
        self.view.set(phase="checking the edit")
        findings = []
        for rel, text in new_files.items():
            if rel.endswith(".py"):
                findings += checks.check_source(text, before.get(rel), path=rel, search_path=self.ws.path,
                                                keep_fields=tuple(baseline.knobs(self.ws)))
        return findings

    def edits_failed(self, outcomes, problems, new_files: dict[str, str], before: dict[str, str]) -> None:
        """Some blocks did not apply. The ones that did are checked by the gate too, and the
        LLM hears both in one turn: what failed, and what the gate found in what applied."""
        error = edits.feedback(problems).splitlines()[0]
        findings = self.gate_findings(new_files, before) if new_files else []
        blocking = [f for f in findings if f.blocking]
        if blocking:
            self.refuse(error, new_files, before, status=Status.EDIT_FAILED)
            self.conv.add_user(self.prompt(prompts.EDITS_FAILED_AND_GATE,
                feedback=edits.feedback(problems), findings=checks.format_findings(findings),
                files=files_text(self.ws, files_that_matter(self.ws, [*new_files, *(f.path for f in findings)]))))
            return None
        feedback = edits.feedback(outcomes)
        if findings:
            feedback += "\n" + prompts.GATE_NOTES.format(findings=checks.format_findings(findings))
        if not new_files:  # nothing of the reply was usable
            feedback = "\n\n".join([feedback.rstrip("\n"), *self.format_reminder(), *self.whole_instead(outcomes)])
        self.conv.add_user(prompts.EDITS_FAILED.format(feedback=feedback))
        return self.no_run(Status.EDIT_FAILED, error)

    def gate_passes(self, new_files: dict[str, str], before: dict[str, str]) -> bool:
        findings = self.gate_findings(new_files, before)
        blocking = [f for f in findings if f.blocking]
        if not blocking:
            if findings:
                self.view.say(checks.format_findings(findings))
            return True
        report = checks.format_findings(findings)
        self.view.say(("gate: the edit was not run", "yellow"), f"\n{report}")
        self.refuse(f"{blocking[0].path}:{blocking[0].line}: {blocking[0].message}", new_files, before)
        shown = files_that_matter(self.ws, [*new_files, *(f.path for f in findings)])
        self.conv.add_user(self.prompt(prompts.GATE_FAILED, findings=report, files=files_text(self.ws, shown)))
        return False

    def refuse(self, error: str, new_files: dict[str, str], before: dict[str, str],
               status: Status = Status.GATE_FAILED) -> None:
        """Commit code that will not be run (history shows what was tried), then put the files
        back: a gutted or known-broken file must not be what the next edit builds on. The
        putting back is committed too, so the work tree is never left dirty (a resume would take
        it for an interrupted attempt)."""
        try:
            self.no_run(status, error)
        finally:
            self.put_back(before, new_files)

    def put_back(self, before: dict[str, str], new_files: dict[str, str]) -> None:
        for rel in new_files:
            if rel in before:
                self.write_files({rel: before[rel]})
            else:  # the reply created it
                (self.ws.path / rel).unlink(missing_ok=True)
        st = self.state
        history.commit_attempt(self.ws.path, subject=f"restore the files as they were before run "
                               f"{st.run} attempt {max(st.attempt, 1)}",
                               trailers=restores_trailers(st.run, max(st.attempt, 1)),
                               paths=sorted(new_files))

    def no_run(self, status: Status, error: str) -> None:
        """A reply whose code never ran: commit it and charge the fix budget."""
        st = self.state
        st.fixes += 1
        self.commit(f"run {st.run} attempt {st.attempt}: {status} — {error}", status, error=error)
        if st.fixes >= self.opt.max_fixes:
            raise Stop(f"run {st.run}: {st.fixes} replies in a row produced no runnable code", ok=False)

    # -- running --------------------------------------------------------------------------

    def execute(self, code: str, attach_stage: Path | None = None) -> None:
        st = self.state
        st.executions += 1
        out_dir = f"run_{st.run}"
        started = time.monotonic()
        step = self.smoke_run(out_dir) if attach_stage is None else None
        smoke_failed = step is not None and not step.ok
        if not smoke_failed:
            self.view.set(phase=f"running {out_dir}")
            step = self.run_step(out_dir, smoke=False, attach_stage=attach_stage)
        self._step = step
        seconds = time.monotonic() - started
        result = step.result
        if result.status == RunStatus.INTERRUPTED:
            raise KeyboardInterrupt
        if result.status == RunStatus.LOST:  # the cluster's fault, not the code's: not charged
            self.commit(f"run {st.run} attempt {st.attempt}: interrupted — {result.error}", Status.INTERRUPTED,
                        error=result.error, seconds=seconds)
            raise Stop(f"{result.error}; `{prog()} resume {self.ws.path}` runs it again", ok=False)
        tampered = self.restore_protected()
        if tampered:
            return self.failed(code, out_dir, seconds, f"the run modified protected files: {', '.join(tampered)}",
                               self.prompt(prompts.PROTECTED_MODIFIED, files=", ".join(tampered)), None)
        where = " (in the smoke run)" if smoke_failed else ""
        if step.problem:
            return self.failed(code, out_dir, seconds, step.problem + where,
                               prompts.RESULTS_INVALID.format(run=st.run, problem=step.problem), None)
        if step.ok:
            try:
                current = results.load_results(self.ws.path / out_dir)
            except results.ResultsError as exc:
                return self.failed(code, out_dir, seconds, str(exc),
                                   prompts.RESULTS_INVALID.format(run=st.run, problem=exc), None)
            problems = results.untrained_problems(current)
            if problems:
                return self.failed(code, out_dir, seconds, f"untrained: {problems[0]}",
                                   prompts.UNTRAINED.format(run=st.run, problems="\n".join(problems)), None)
            return self.succeeded(out_dir, current, seconds)
        error = result.error or ("timed out" if result.status == RunStatus.TIMEOUT else f"exit {result.returncode}")
        if step.phase == "evaluate":
            error = f"evaluation failed: {error}"
        error += where
        detail = failures.feedback_text(result)
        template = prompts.EVALUATION_FAILED if step.phase == "evaluate" else prompts.RUN_FAILED
        self._edited = files_that_matter(self.ws, self._edited, result.traceback)  # what RESTORED shows too
        feedback = self.prompt(
            template, run=st.run, attempt=st.executions, max_attempts=self.opt.max_attempts,
            command=self.ws.template.display_command(out_dir), feedback=detail,
            files=files_text(self.ws, self._edited))
        self.failed(code, out_dir, seconds, error, feedback, result.signature, detail=detail)

    def run_step(self, out_dir: str, smoke: bool, attach_stage: Path | None = None) -> execution.Step:
        try:
            return self.pipeline.run(out_dir, smoke=smoke, attach_stage=attach_stage)
        except execution.PrepareError as exc:   # the environment, not the coder's code
            raise Stop(str(exc), ok=False) from None

    def smoke_run(self, out_dir: str) -> execution.Step | None:
        smoke_profiles = self.ws.template.smoke_profiles
        if not self.opt.smoke or (smoke_profiles is not None and self.ws.profile not in smoke_profiles):
            return None
        self.view.set(phase=f"smoke-testing {out_dir}")
        return self.run_step(out_dir, smoke=True)

    def restore_protected(self) -> list[str]:
        """Whatever the run changed outside its output folder is flagged and put back, so the
        next run is fair and the history true: the git history itself (a moved branch, a
        removed .git, planted hooks), the harness and settings, the editable files as they were
        run, new files, links in the output folder."""
        before, self._before_run = self._before_run, None
        self._tampered = self.ws.restore_after_run(before, f"run_{self.state.run}")
        return list(self._tampered)

    def succeeded(self, out_dir: str, current: dict, seconds: float) -> None:
        st = self.state
        summary = results.subject_summary(self.baseline, current, self.baseline_seeds)
        record = results.uncertainty_record(self.baseline_seeds, current, self.baseline_frontier,
                                            self.baseline_references)
        (self.ws.path / out_dir / "intervals.json").write_text(json.dumps(record, indent=2) + "\n")
        self.view.say((f"run {st.run} succeeded", "green"), f": {summary}")
        st.last_good_sha = self.commit(f"run {st.run}: {summary}", Status.SUCCESS, seconds=seconds)
        st.last_good_run, st.last_signature = st.run, None
        st.completed_runs.append(st.run)
        runs_left = self.opt.max_runs - st.run
        self.conv.add_user(prompts.RUN_SUCCEEDED.format(
            run=st.run, comparison=results.compare(self.baseline, current, self.baseline_seeds, self.baseline_frontier,
                                                   self.baseline_references),
            runs_left=runs_left,
            next_command=self.ws.template.display_command(f"run_{st.run + 1}")))
        st.run, st.attempt, st.executions, st.fixes = st.run + 1, 0, 0, 0

    def failed(self, code: str, out_dir: str, seconds: float, error: str, feedback: str,
               signature: str | None, detail: str | None = None) -> None:
        st = self.state
        self.view.say((f"run {st.run} attempt {st.attempt} failed", "red"), f": {error}")
        st.failed_hashes.add(failures.content_hash(code))
        self.commit(f"run {st.run} attempt {st.attempt}: failed — {error}", Status.FAILED,
                    error=error, seconds=seconds, signature=signature)
        if signature and signature == st.last_signature:
            # The restored files replace the failing ones in the message: no stale file dump.
            feedback = prompts.ERROR_FOR_REFERENCE.format(restored=self.restore_last_good(signature),
                                                          error=detail or error)
            st.last_signature = None
        else:
            st.last_signature = signature
        self.conv.add_user(feedback)
        if st.executions >= self.opt.max_attempts:
            raise Stop(f"run {st.run} failed {st.executions} times; giving up on this idea", ok=False)

    def restore_last_good(self, signature: str) -> str:
        """The same error twice in a row: put back the code of the last run that worked."""
        repo = history.open_workspace(self.ws.path)
        sha = self.state.last_good_sha or history.root_commit(repo)
        text = history.file_at(repo, sha, "experiment.py")
        if text is not None:
            (self.ws.path / "experiment.py").write_text(text, encoding="utf-8")
        self.view.say(f"same error twice ({signature}): experiment.py restored "
                      f"from run {self.state.last_good_run}", style="yellow")
        return prompts.RESTORED.format(signature=signature, file="experiment.py",
                                       restored_run=self.state.last_good_run, run=self.state.run,
                                       files=files_text(self.ws, files_that_matter(self.ws, ["experiment.py",
                                                                                        *self._edited])))

    # -- ending ---------------------------------------------------------------------------

    def write_notes(self, reason: str) -> None:
        """After the last run the coder writes up notes.txt; one reply, edits to notes only."""
        st = self.state
        if not st.completed_runs or self.notes_written:
            return
        self.conv.add_user(self.prompt(prompts.WRITE_NOTES, reason=reason))
        self.view.set(phase="waiting for the LLM (notes)")
        try:
            reply = self.ask()
        except Stop as stop:
            self.view.say(f"notes not written: {stop.reason}", style="yellow")
            return
        if reply.truncated:  # a cut write-up is not applied half-way either
            self.view.say(f"notes not written: {TRUNCATED}", style="yellow")
            return self.commit_notes(updated=False, error=TRUNCATED)
        files = {NOTES_FILE: self.ws.read(NOTES_FILE)}
        new_files, outcomes = self.apply(reply.text, files, [NOTES_FILE])
        self.write_files(new_files)
        self.commit_notes(updated=bool(new_files))

    def commit_notes(self, updated: bool, error: str | None = None) -> None:
        """The write-up belongs to the last run that worked, as its next attempt."""
        st = self.state
        self.notes_written = updated
        run = max(st.completed_runs)
        attempt = 1 + max(a.attempt for a in history.read_history(self.ws.path) if a.run == run)
        final = self.score_final_split()
        self.commit(f"notes: {'updated' if updated else 'not updated'} after {len(st.completed_runs)} run(s)",
                    Status.NOTES if updated else Status.NOTES_MISSING, run=run, attempt=attempt, body=final,
                    error=error)

    def score_final_split(self) -> str | None:
        """Score the baseline's seeds and every completed run once on the final split, which the
        coder never hears about: five rounds of tuning against the test split cannot overfit it.
        Writes `final_split.json`; returns the lines for the commit body."""
        st = self.state
        self.view.set(phase="scoring the final split")
        seeds = baseline.final_split_scores(self.ws, self.pipeline.evaluate_final)
        if not seeds:
            return None
        best_on_test = max(st.completed_runs, key=lambda r: self._primary(f"run_{r}"))
        record, lines = {"baseline_seeds": len(seeds), "headline_metrics": list(results.headline_metrics(seeds[0])),
                         "best_on_test": best_on_test, "runs": {}}, []
        for run in st.completed_runs:
            path = self.pipeline.evaluate_final(f"run_{run}")
            if path is None:
                continue
            current = json.loads(path.read_text())
            summary = results.subject_summary(seeds[0], current, seeds)
            record["runs"][run] = results.uncertainty_record(seeds, current)
            lines.append(f"run {run}{' (best on the test split)' if run == best_on_test else ''}: {summary}")
        (self.ws.path / "final_split.json").write_text(json.dumps(record, indent=2) + "\n")
        self.view.say("final split (never shown to the coder):\n  " + "\n  ".join(lines))
        return "Final split (scored once, never shown to the coder):\n" + "\n".join(lines)

    def _primary(self, out_dir: str) -> float:
        """The run's value of its profile's primary metric (top-1 accuracy, or a synthetic world's F1)."""
        try:
            value = results.primary_value(results.load_results(self.ws.path / out_dir))
        except results.ResultsError:
            return float("-inf")
        return float("-inf") if value is None else value

    def settle(self) -> None:
        """The idea ends: commit the conversation's last turns (a final ALL_COMPLETED, a failed
        call's pending turn) so the work tree is clean and a resume finds no phantom attempt."""
        self.save_transcript()
        repo = history.repo_at(self.ws.path)
        if repo.git.status("--porcelain", "--", *TRANSCRIPTS):
            history.commit_attempt(self.ws.path, subject="transcript: the conversation as the idea ended",
                                   trailers={}, paths=list(TRANSCRIPTS))

    def interrupted(self) -> None:
        st = self.state
        self.view.say("interrupted: committing the attempt as it stands", style="yellow")
        # Interrupted mid-run: what the run changed so far is put back and named, as after any run.
        tampered = self.restore_protected() if self._before_run is not None else []
        if tampered:
            self.commit(f"run {st.run} attempt {max(st.attempt, 1)}: failed — {history.TAMPERED}", Status.FAILED,
                        error=f"{history.TAMPERED}: {'; '.join(tampered)} (then interrupted by the user)")
            return
        self.commit(f"run {st.run} attempt {max(st.attempt, 1)}: interrupted", Status.INTERRUPTED,
                    error="interrupted by the user")

    # -- history --------------------------------------------------------------------------

    def save_transcript(self) -> None:
        self.conv.save(self.ws.path)

    def commit(self, subject: str, status: Status, *, error: str | None = None,
               seconds: float | None = None, run: int | None = None, attempt: int | None = None,
               body: str | None = None, signature: str | None = None) -> str:
        self.view.set(phase="committing")
        self.save_transcript()
        st = self.state
        record = Attempt(run=run if run is not None else st.run,
                         attempt=attempt if attempt is not None else max(st.attempt, 1), status=status,
                         model=self.coder.name, profile=str(self.ws.profile), tokens=self._reply_tokens,
                         cost=self._reply_cost, duration=seconds, error=error or None, signature=signature)
        step, self._step = self._step, None
        if step is not None:   # this attempt ran: which box, and the hash of the results the agent read
            record.sandbox, record.executor = step.box, step.result.executor
            record.slurm_job = str(step.result.job_id) if step.result.job_id else None
            record.results_sha256 = step.results_sha256 or None
        if self._tampered:
            record.tampered = "; ".join(self._tampered)
            self._tampered = []
        sha = history.commit_attempt(self.ws.path, subject=subject[:200], trailers=record, body=body or "")
        self._reply_tokens, self._reply_cost = 0, 0.0  # charged once, to the first commit after the reply
        return sha


def rebuild_state(ws: Workspace) -> LoopState:
    """Where an interrupted idea stands, from its git history (works on any clone)."""
    repo = history.open_workspace(ws.path)
    st = LoopState()
    for a in history.read_history(ws.path):
        if a.run == 0:
            continue
        if a.status == Status.SUCCESS:
            st.completed_runs.append(a.run)
            st.last_good_sha, st.last_good_run = a.sha, a.run
            st.run, st.attempt, st.executions, st.fixes = a.run + 1, 0, 0, 0
            st.last_signature = None
        elif a.run == st.run and a.status not in NOTES:
            st.attempt = max(st.attempt, a.attempt)
            if a.status == Status.FAILED:
                st.executions += 1
                code = history.file_at(repo, a.sha, "experiment.py")
                if code is not None:
                    st.failed_hashes.add(failures.content_hash(code))
                # As `failed` does it: the same signature twice restored the code and reset it.
                signature = a.signature
                st.last_signature = None if signature and signature == st.last_signature else signature
            elif a.status != Status.INTERRUPTED:
                st.fixes += 1
    return st


def load_transcript(ws: Workspace, repo) -> Conversation | None:
    """The saved conversation: transcript.json as a regular file in the workspace (it holds the
    latest reply, which may not be committed yet), else as last committed; never through a link."""
    file = ws.regular_file(TRANSCRIPT_JSON)
    if file is not None:
        try:
            return Conversation.load(file)
        except ConversationError:
            pass  # a run wrote over it, or it was cut short: the committed one is the truth
    text = history.file_at(repo, "HEAD", TRANSCRIPT_JSON)
    if text:
        try:
            return Conversation.loads(text, source=f"{TRANSCRIPT_JSON} as last committed")
        except ConversationError:
            return None
    return None


def prepare_resume(ws: Workspace, max_runs: int, executor=None,
                   edit_format: str = "auto") -> tuple[LoopState, Conversation, str | None]:
    """Commit a half-written attempt as interrupted, then rebuild state and conversation.

    A run whose Slurm job is still running is followed to its end (`state.reattach`) when its
    staged copy is still there and holds the code as it stands; otherwise the job is cancelled,
    the attempt counted as interrupted, and the run starts again (never two at once).

    Returns the model last used (from the transcript's usage, else the commit trailers) so a
    resume without --model goes on with the same coder.
    """
    repo = history.open_workspace(ws.path)
    state = rebuild_state(ws)
    # What a run left behind when the agent was stopped: a restored history, changed settings or
    # harness, links or bad bytes in the editable files. All put back and named in the commit.
    found = ws.tampering + ws.restore_after_run(None, f"run_{state.run}") + ws.repair_leftovers()
    dirty = bool(found) or ws.is_dirty()
    conv = load_transcript(ws, repo) or start_conversation(ws, max_runs, edit_format)
    attempts = history.read_history(ws.path)
    model = (conv.usage[-1].get("model") if conv.usage else None) or next(
        (a.model for a in reversed(attempts) if a.model and a.model != "template"), None)
    # A Slurm job of the interrupted run may still be going (the agent died, the job did not).
    record = executor.live_job(ws.path / f"run_{state.run}") if executor is not None else None
    if record is not None:
        still_ours = execution.staged_as_now(ws.path, Path(record.cwd), ws.template.editable)
        if still_ours and not found and not record.smoke and not conv.pending_user:
            state.reattach = record
            return state, conv, model
        from agent.executors import scancel
        scancel(record.job_id)
        dirty = True
    if dirty:
        # A half-written attempt: keep it, as interrupted, or as failed when its run tampered.
        state.attempt += 1
        subject = f"run {state.run} attempt {state.attempt}: interrupted — found uncommitted on resume"
        trailers = Attempt(run=state.run, attempt=state.attempt, status=Status.INTERRUPTED,
                           model=model or "unknown", profile=str(ws.profile), error="interrupted").to_trailers()
        if found:
            subject, trailers = history.tampered(subject, trailers, found)
        conv.save(ws.path)  # the conversation the agent goes on with is the one committed
        history.commit_attempt(ws.path, subject=subject, trailers=trailers)
    if not conv.pending_user:
        conv.add_user(prompts.RESUMED.format(run=state.run, files=files_text(ws)))
    return state, conv, model
