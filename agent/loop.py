"""The experiment loop for one idea: idea → workspace → conversation → edits → checks → runner → history.

Each reply from the coder is one *attempt* of the current run, and every attempt is a commit:
edits that did not apply, a gate that refused the code, a run that crashed, a run that worked.
Budgets are separate: `max_attempts` counts executions of a run, `max_fixes` counts replies whose
edits never reached a run (failed blocks, gate findings, a file that already failed, no edits).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from agent import checks, edits, history, prompts, results, runner
from agent.coder import BudgetExceeded, LLMError
from agent.conversation import Conversation
from agent.workspace import Workspace

DONE_MARKER = "ALL_COMPLETED"
NOTES_FILE = "notes.txt"
LANGS = {".py": "python", ".txt": "text", ".md": "markdown", ".json": "json"}


@dataclass
class LoopOptions:
    max_runs: int = 5
    max_attempts: int = 4      # executions of one run before the idea stops
    max_fixes: int = 6         # replies whose edits never ran (gate, failed blocks, no edits)
    timeout: float = 3600.0    # seconds for one run
    smoke: bool = True         # a few-steps run before the full one, where the profile allows it
    executor: object = None    # agent/executors.py: where runs execute (None: here, as a child)


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
    reattach: object = None     # a resumed run's Slurm job still running (executors.JobRecord)


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


def files_text(ws: Workspace, names: list[str] | None = None) -> str:
    names = names or [n for n in ws.template.editable if n.endswith(".py")]
    dumps = []
    for name in names:
        if (ws.path / name).exists():
            dumps.append(prompts.FILE_DUMP.format(
                name=name, lang=LANGS.get(Path(name).suffix, ""), content=ws.read(name).rstrip("\n")))
    return "\n".join(dumps)


def start_conversation(ws: Workspace, max_runs: int) -> Conversation:
    editable = ", ".join(ws.template.editable)
    protected = ", ".join(ws.template.protected) or "everything else"
    command = ws.template.display_command()
    conv = Conversation(prompts.SYSTEM.format(editable=editable, protected=protected, command=command))
    baseline = ws.baseline()
    conv.add_user(prompts.TASK.format(
        title=ws.idea.title, motivation=ws.idea.motivation, experiment=ws.idea.experiment,
        plan=ws.idea.plan or "(none given: plan it yourself)", max_runs=max_runs,
        baseline=results.compare(baseline, baseline), command=command, files=files_text(ws)))
    return conv


class ExperimentLoop:
    def __init__(self, ws: Workspace, coder, view, options: LoopOptions,
                 conv: Conversation | None = None, state: LoopState | None = None):
        self.ws, self.coder, self.view, self.opt = ws, coder, view, options
        self.conv = conv or start_conversation(ws, options.max_runs)
        self.state = state or LoopState()
        self.baseline = ws.baseline()
        self._reply_cost = 0.0
        self._reply_tokens = 0
        self.notes_written = False

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> LoopOutcome:
        try:
            try:
                if self.state.reattach is not None:
                    self.resume_job()
                while self.state.run <= self.opt.max_runs:
                    self.step()
                reason = f"all {self.opt.max_runs} runs done"
            except Stop as stop:
                if not stop.ok:
                    raise
                reason = stop.reason
            self.write_notes(reason)
            return self._outcome(reason, ok=True)
        except Stop as stop:
            self.save_transcript()
            self.view.say(f"[red]stopped:[/red] {stop.reason}")
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
        self.view.set(run=st.run, attempt=st.attempt, phase="waiting for the LLM")
        reply = self.ask()
        self.view.set(phase="applying edits")
        before = self.ws.editable_files()
        new_files, outcomes = edits.apply_reply(reply, before, self.ws.template.editable)
        self.write_files(new_files)
        done = DONE_MARKER in reply
        problems = [o for o in outcomes if o.status != "applied"]
        if problems:
            self.conv.add_user(prompts.EDITS_FAILED.format(feedback=edits.feedback(outcomes)))
            return self.no_run("edit-failed", edits.feedback(problems).splitlines()[0])
        if done and "experiment.py" not in new_files:
            # AI-Scientist's contract: ALL_COMPLETED ends the experiments; notes may come with it.
            if NOTES_FILE in new_files and st.completed_runs:
                self.commit_notes(updated=True)
            raise Stop("the coder reported ALL_COMPLETED")
        if "experiment.py" not in new_files:
            self.conv.add_user(prompts.NO_EDITS.format(run=st.run))
            return self.no_run("no-edits", "the reply changed nothing in experiment.py")
        if not self.gate_passes(new_files, before):
            return
        code = self.ws.read("experiment.py")
        if runner.content_hash(code) in st.failed_hashes:
            self.conv.add_user(prompts.ALREADY_FAILED.format(file="experiment.py", files=files_text(self.ws)))
            return self.refuse("this exact experiment.py already failed", new_files, before)
        self.execute(code)
        if done and st.executions == 0:  # the run worked (a success resets the count)
            raise Stop("the coder reported ALL_COMPLETED")

    def resume_job(self) -> None:
        """A resumed idea whose run is still a live job: wait for it instead of asking again."""
        st = self.state
        record, st.reattach = st.reattach, None
        st.attempt += 1
        self.view.set(run=st.run, attempt=st.attempt, phase=f"re-attaching to job {record.job_id}")
        self.execute(self.ws.read("experiment.py"), reattach=record)

    def ask(self) -> str:
        try:
            before_tokens, before_cost = self.coder.total_tokens, self.coder.total_cost or 0.0
            reply = self.coder.complete(self.conv)
            self._reply_tokens = self.coder.total_tokens - before_tokens
            self._reply_cost = (self.coder.total_cost or 0.0) - before_cost
        except BudgetExceeded as exc:
            raise Stop(f"budget reached: {exc}") from None
        except LLMError as exc:
            raise Stop(f"the LLM call failed: {exc}", ok=False) from None
        finally:
            self.save_transcript()
        return reply.text

    def write_files(self, new_files: dict[str, str]) -> None:
        for rel, text in new_files.items():
            target = edits.safe_path(self.ws.path, rel, self.ws.template.editable)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")

    # -- checks ---------------------------------------------------------------------------

    def gate_passes(self, new_files: dict[str, str], before: dict[str, str]) -> bool:
        self.view.set(phase="checking the edit")
        findings = []
        for rel, text in new_files.items():
            if rel.endswith(".py"):
                findings += checks.check_source(text, before.get(rel), path=rel, search_path=self.ws.path)
        blocking = [f for f in findings if f.blocking]
        if not blocking:
            if findings:
                self.view.say(checks.format_findings(findings))
            return True
        report = checks.format_findings(findings)
        self.view.say(f"[yellow]gate: the edit was not run[/yellow]\n{report}")
        self.refuse(f"{blocking[0].path}:{blocking[0].line}: {blocking[0].message}", new_files, before)
        self.conv.add_user(prompts.GATE_FAILED.format(findings=report, files=files_text(self.ws)))
        return False

    def refuse(self, error: str, new_files: dict[str, str], before: dict[str, str]) -> None:
        """Commit code that will not be run (history shows what was tried), then put the files
        back: a gutted or known-broken file must not be what the next edit builds on."""
        try:
            self.no_run("gate-failed", error)
        finally:
            self.write_files({rel: before.get(rel, "") for rel in new_files})

    def no_run(self, status: str, error: str) -> None:
        """A reply whose code never ran: commit it and charge the fix budget."""
        st = self.state
        st.fixes += 1
        self.commit(f"run {st.run} attempt {st.attempt}: {status} — {error}", status, error=error)
        if st.fixes >= self.opt.max_fixes:
            raise Stop(f"run {st.run}: {st.fixes} replies in a row produced no runnable code", ok=False)

    # -- running --------------------------------------------------------------------------

    def execute(self, code: str, reattach=None) -> None:
        st = self.state
        st.executions += 1
        out_dir = f"run_{st.run}"
        started = time.monotonic()
        full_job_running = reattach is not None and not reattach.smoke
        result = None if full_job_running else self.smoke_run(out_dir)
        smoke_failed = result is not None and result.status != "ok"
        if not smoke_failed:
            self.view.set(phase=f"running {out_dir}")
            if not full_job_running:  # a job still running writes into it
                shutil.rmtree(self.ws.path / out_dir, ignore_errors=True)
            result = self.run_command(out_dir, smoke=False)
        seconds = time.monotonic() - started
        if result.status == "interrupted":
            raise KeyboardInterrupt
        if result.status == "lost":  # the cluster's fault, not the code's: not charged
            self.commit(f"run {st.run} attempt {st.attempt}: interrupted — {result.error}", "interrupted",
                        error=result.error, seconds=seconds)
            raise Stop(f"{result.error}; `python -m agent resume {self.ws.path}` runs it again", ok=False)
        tampered = self.restore_protected()
        if tampered:
            return self.failed(code, out_dir, seconds, f"the run modified protected files: {', '.join(tampered)}",
                               prompts.PROTECTED_MODIFIED.format(files=", ".join(tampered)), None)
        if result.status == "ok":
            try:
                current = results.load_results(self.ws.path / out_dir)
            except results.ResultsError as exc:
                return self.failed(code, out_dir, seconds, str(exc),
                                   prompts.RESULTS_INVALID.format(run=st.run, problem=exc), None)
            return self.succeeded(out_dir, current, seconds)
        error = result.error or ("timed out" if result.status == "timeout" else f"exit {result.returncode}")
        if smoke_failed:
            error = f"{error} (in the smoke run)"
        detail = runner.feedback_text(result)
        feedback = prompts.RUN_FAILED.format(
            run=st.run, attempt=st.executions, max_attempts=self.opt.max_attempts,
            command=self.ws.template.display_command(out_dir), feedback=detail, files=files_text(self.ws))
        self.failed(code, out_dir, seconds, error, feedback, result.signature, detail=detail)

    def smoke_run(self, out_dir: str):
        smoke_profiles = self.ws.template.smoke_profiles
        if not self.opt.smoke or (smoke_profiles is not None and self.ws.profile not in smoke_profiles):
            return None
        self.view.set(phase=f"smoke-testing {out_dir}")
        return self.run_command(out_dir, smoke=True)

    def run_command(self, out_dir: str, smoke: bool):
        env = self.ws.run_env() | ({"SAE_SMOKE": "1"} if smoke else {})
        return runner.run_experiment(
            self.ws.path, out_dir, command=self.ws.template.argv(out_dir), timeout=self.opt.timeout,
            env_allow=self.ws.template.allowed_env(self.ws.profile), extra_env=env, on_line=self.view.log,
            executor=self.opt.executor, **self.ws.template.resource_limits(self.ws.profile))

    def restore_protected(self) -> list[str]:
        """Harness files the run changed are flagged and put back, so the next run is fair."""
        protected = list(self.ws.template.protected)
        if not protected:
            return []
        repo = history.open_workspace(self.ws.path)
        changed = [line[3:] for line in repo.git.status("--porcelain", "--", *protected).splitlines()]
        if changed:
            repo.git.checkout("HEAD", "--", *protected)
            repo.git.clean("-fdq", "--", *protected)
        return changed

    def succeeded(self, out_dir: str, current: dict, seconds: float) -> None:
        st = self.state
        summary = results.subject_summary(self.baseline, current)
        self.view.say(f"[green]run {st.run} succeeded[/green]: {summary}")
        st.last_good_sha = self.commit(f"run {st.run}: {summary}", "success", seconds=seconds)
        st.last_good_run, st.last_signature = st.run, None
        st.completed_runs.append(st.run)
        runs_left = self.opt.max_runs - st.run
        self.conv.add_user(prompts.RUN_SUCCEEDED.format(
            run=st.run, comparison=results.compare(self.baseline, current), runs_left=runs_left,
            next_command=self.ws.template.display_command(f"run_{st.run + 1}")))
        st.run, st.attempt, st.executions, st.fixes = st.run + 1, 0, 0, 0

    def failed(self, code: str, out_dir: str, seconds: float, error: str, feedback: str,
               signature: str | None, detail: str | None = None) -> None:
        st = self.state
        self.view.say(f"[red]run {st.run} attempt {st.attempt} failed[/red]: {error}")
        st.failed_hashes.add(runner.content_hash(code))
        self.commit(f"run {st.run} attempt {st.attempt}: failed — {error}", "failed",
                    error=error, seconds=seconds)
        if signature and signature == st.last_signature:
            # The restored files replace the failing ones in the message: no stale file dump.
            feedback = self.restore_last_good(signature) + "\n\nThe error, for reference:\n\n" + (detail or error)
            st.last_signature = None
        else:
            st.last_signature = signature
        self.conv.add_user(feedback)
        if st.executions >= self.opt.max_attempts:
            raise Stop(f"run {st.run} failed {st.executions} times; giving up on this idea", ok=False)

    def restore_last_good(self, signature: str) -> str:
        """The same error twice in a row: put back the code of the last run that worked."""
        repo = history.open_workspace(self.ws.path)
        sha = self.state.last_good_sha or repo.git.rev_list("--max-parents=0", "HEAD").split()[0]
        text = history.file_at(repo, sha, "experiment.py")
        if text is not None:
            (self.ws.path / "experiment.py").write_text(text, encoding="utf-8")
        self.view.say(f"[yellow]same error twice ({signature}): experiment.py restored "
                      f"from run {self.state.last_good_run}[/yellow]")
        return prompts.RESTORED.format(signature=signature, file="experiment.py",
                                       restored_run=self.state.last_good_run, run=self.state.run,
                                       files=files_text(self.ws))

    # -- ending ---------------------------------------------------------------------------

    def write_notes(self, reason: str) -> None:
        """After the last run the coder writes up notes.txt; one reply, edits to notes only."""
        st = self.state
        if not st.completed_runs or self.notes_written:
            return
        self.conv.add_user(prompts.WRITE_NOTES.format(reason=reason))
        self.view.set(phase="waiting for the LLM (notes)")
        try:
            reply = self.ask()
        except Stop as stop:
            self.view.say(f"[yellow]notes not written: {stop.reason}[/yellow]")
            return
        files = {NOTES_FILE: self.ws.read(NOTES_FILE)}
        new_files, outcomes = edits.apply_reply(reply, files, [NOTES_FILE])
        self.write_files(new_files)
        self.commit_notes(updated=bool(new_files))

    def commit_notes(self, updated: bool) -> None:
        """The write-up belongs to the last run that worked, as its next attempt."""
        st = self.state
        self.notes_written = updated
        run = max(st.completed_runs)
        attempt = 1 + max(a.attempt for a in history.read_history(self.ws.path) if a.run == run)
        self.commit(f"notes: {'updated' if updated else 'not updated'} after {len(st.completed_runs)} run(s)",
                    "notes" if updated else "notes-missing", run=run, attempt=attempt)

    def interrupted(self) -> None:
        st = self.state
        self.view.say("[yellow]interrupted: committing the attempt as it stands[/yellow]")
        self.commit(f"run {st.run} attempt {max(st.attempt, 1)}: interrupted", "interrupted",
                    error="interrupted by the user")

    # -- history --------------------------------------------------------------------------

    def save_transcript(self) -> None:
        self.conv.save(self.ws.path)

    def commit(self, subject: str, status: str, *, error: str | None = None,
               seconds: float | None = None, run: int | None = None, attempt: int | None = None) -> str:
        self.view.set(phase="committing")
        self.save_transcript()
        st = self.state
        trailers = {"Run": str(run if run is not None else st.run),
                    "Attempt": str(attempt if attempt is not None else max(st.attempt, 1)),
                    "Status": status, "Model": self.coder.name, "Profile": str(self.ws.profile),
                    "Tokens": str(self._reply_tokens), "Cost": f"${self._reply_cost:.4f}"}
        if seconds is not None:
            trailers["Duration"] = f"{seconds:.1f}s"
        if error:
            trailers["Error"] = error
        return history.commit_attempt(self.ws.path, subject=subject[:200], trailers=trailers)


def rebuild_state(ws: Workspace) -> LoopState:
    """Where an interrupted idea stands, from its git history (works on any clone)."""
    repo = history.open_workspace(ws.path)
    st = LoopState()
    for a in history.read_history(ws.path):
        if a.run == 0:
            continue
        if a.status == "success":
            st.completed_runs.append(a.run)
            st.last_good_sha, st.last_good_run = a.sha, a.run
            st.run, st.attempt, st.executions, st.fixes = a.run + 1, 0, 0, 0
            st.last_signature = None
        elif a.run == st.run and a.status not in ("notes", "notes-missing"):
            st.attempt = max(st.attempt, a.attempt)
            if a.status == "failed":
                st.executions += 1
                code = history.file_at(repo, a.sha, "experiment.py")
                if code is not None:
                    st.failed_hashes.add(runner.content_hash(code))
            elif a.status != "interrupted":
                st.fixes += 1
    return st


def prepare_resume(ws: Workspace, max_runs: int, executor=None) -> tuple[LoopState, Conversation, str | None]:
    """Commit a half-written attempt as interrupted, then rebuild state and conversation.

    A run whose job is still running (`executor.live_job`, Slurm) is not interrupted: the state
    says to re-attach to it, and the conversation waits for its outcome.

    Returns the model last used (from the transcript's usage, else the commit trailers) so a
    resume without --model goes on with the same coder.
    """
    repo = history.open_workspace(ws.path)
    transcript = ws.path / "transcript.json"
    conv = Conversation.load(transcript) if transcript.exists() else start_conversation(ws, max_runs)
    attempts = history.read_history(ws.path)
    model = (conv.usage[-1].get("model") if conv.usage else None) or next(
        (a.model for a in reversed(attempts) if a.model and a.model != "template"), None)
    state = rebuild_state(ws)
    state.reattach = executor.live_job(ws.path / f"run_{state.run}") if executor is not None else None
    if state.reattach is not None:
        return state, conv, model
    if repo.is_dirty(untracked_files=True):  # a half-written attempt: keep it, as interrupted
        state.attempt += 1
        history.commit_attempt(ws.path, subject=f"run {state.run} attempt {state.attempt}: "
                               "interrupted — found uncommitted on resume",
                               trailers={"Run": str(state.run), "Attempt": str(state.attempt),
                                         "Status": "interrupted", "Model": model or "unknown",
                                         "Profile": str(ws.profile), "Error": "interrupted"})
    if not conv.pending_user:
        conv.add_user(prompts.RESUMED.format(run=state.run, files=files_text(ws)))
    return state, conv, model
