"""The workspace's git history: one commit per attempt, read back through its trailers.

Git is the only database. `commit_attempt` writes a commit whose message ends in trailers
(`Run: 2`, `Attempt: 1`, `Status: failed`, ...; see docs/architecture.md); `read_history` reads
them back with one `git log` call, so every tool built on it works on any clone of a workspace.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import git

from agent import gitguard
from agent.attempt import NOTES, TRAILER_ORDER, Attempt, Status, _int  # Attempt: re-exported
from agent.sandbox import printable
from agent.ui import prog

AGENT_NAME = "sae-agent"
AGENT_EMAIL = "sae-agent@localhost"

# The Error of an attempt whose run changed the repository or other files it must not touch
# (agent/gitguard.py, Workspace.restore_after_run); the findings follow it.
TAMPERED = "the run changed what it must not"

LINK_MODE = 0o120000  # git's mode for a symbolic link

_TRAILER_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
# Field and record separators for `git log --format`: bytes that never occur in a message.
_FS, _RS = "\x1f", "\x1e"


class HistoryError(Exception):
    """A user-facing problem (not a workspace, no such run, ...). The CLI exits with status 2."""


# -- writing ------------------------------------------------------------------------------

def init_repo(path: Path) -> git.Repo:
    """`git init` at `path` (created if missing), with a local identity; a new history to guard."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    gitguard.safe_git(git.Git(path)).init("--quiet", f"--initial-branch={gitguard.default_branch()}")
    repo = gitguard.repo_at(path)
    ensure_identity(repo)
    gitguard.open_guard(path, fresh=True)
    return repo


def repo_at(path) -> git.Repo:
    """The repository at `path` for reading; every git command runs with gitguard's options."""
    return gitguard.repo_at(path)


def ensure_identity(repo: git.Repo) -> None:
    """Write user.name/email into the repo's own config when it has none: the agent's git reads
    no global config (gitguard), so the user's identity, if any, is copied, else the agent's."""
    local = repo.config_reader("repository")
    missing = [key for key in ("name", "email") if not local.get_value("user", key, default="")]
    if missing:
        reader = repo.config_reader()  # parsed by gitpython, never run: global identity, if any
        defaults = {"name": AGENT_NAME, "email": AGENT_EMAIL}
        with repo.config_writer("repository") as w:
            for key in missing:
                w.set_value("user", key, reader.get_value("user", key, default="") or defaults[key])


def format_message(subject: str, trailers: dict[str, str], body: str = "") -> str:
    """subject, blank line, body, blank line, `Key: value` trailers (git interpret-trailers format).
    Valid UTF-8 whatever reached it: a file name a run chose may hold bytes that are not."""
    subject = printable(" ".join(str(subject).split()))
    body = printable(body)
    if not subject:
        raise ValueError("a commit needs a subject")
    parts = [subject]
    if body.strip():
        parts.append(body.strip("\n"))
    lines = []
    for key, value in _ordered(trailers):
        if not _TRAILER_KEY.match(key):
            raise ValueError(f"bad trailer key {key!r}: letters, digits and '-' only")
        value = printable(_one_line(value))
        if value:
            lines.append(f"{key}: {value}")
    if lines:
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def commit_attempt(workspace: Path, *, subject: str, trailers: Attempt | dict[str, str], body: str = "",
                   paths: list[str] | None = None) -> str:
    """Commit the workspace as one attempt and return the new sha.

    Stages everything (additions, changes, deletions) or only `paths`; commits even when nothing
    changed, because an attempt is an event whether or not it touched a file. First the guard
    puts back anything a run changed in `.git`; if it found something, the attempt is recorded
    as failed with what was found (`Tampered:`), whatever its status was going to be.
    `trailers` is the attempt (its `to_trailers()`), or plain trailers for a commit that is none.
    """
    if isinstance(trailers, Attempt):
        trailers = trailers.to_trailers()
    guard = gitguard.guard(workspace)
    try:
        findings = guard.check()
    except gitguard.GuardError as exc:
        raise HistoryError(f"the history of {workspace} cannot be restored: {exc}") from None
    if findings:
        subject, trailers = tampered(subject, trailers, findings)
    repo = gitguard.repo_at(workspace)
    ensure_identity(repo)
    if paths is None:
        repo.git.add("--all")
    elif paths:
        repo.git.add("--all", "--", *paths)
    message = format_message(subject, trailers, body)
    with tempfile.TemporaryDirectory() as tmp:
        message_file = Path(tmp) / "message.txt"
        message_file.write_text(message, encoding="utf-8")
        # --cleanup=whitespace: keep lines starting with '#' (LLM text quotes Python comments).
        repo.git.commit("--allow-empty", "--no-verify", "--no-gpg-sign", "--cleanup=whitespace",
                        "-F", str(message_file))
    guard.record()
    return repo.head.commit.hexsha


def tampered(subject: str, trailers: dict[str, str], findings: list[str]) -> tuple[str, dict[str, str]]:
    """An attempt's subject and trailers once tampering was found: failed, saying what."""
    what = "; ".join(findings)
    error = f"{TAMPERED}: {what}"
    if trailers.get("Error") and TAMPERED not in trailers["Error"]:
        error += f" (besides: {trailers['Error']})"
    if "Run" not in trailers:  # a commit that is no attempt says what was found, no status
        return subject, dict(trailers, Error=error, Tampered=what)
    a = replace(Attempt.from_trailers(trailers), status=Status.FAILED, error=error, tampered=what)
    a.extra.pop("Status", None)
    subject = f"run {trailers['Run']} attempt {trailers.get('Attempt', '1')}: failed — {TAMPERED}"
    return subject, a.to_trailers()


def _ordered(trailers: dict[str, str]):
    known = [(k, trailers[k]) for k in TRAILER_ORDER if k in trailers]
    return known + [(k, v) for k, v in trailers.items() if k not in TRAILER_ORDER]


def _one_line(value) -> str:
    if value is None:
        return ""
    return " ".join(str(value).split())


# -- reading ------------------------------------------------------------------------------

def is_workspace(path) -> bool:
    try:
        open_workspace(path)
    except HistoryError:
        return False
    return True


def open_workspace(path) -> git.Repo:
    """The workspace's repo, or HistoryError saying why `path` is not a workspace."""
    path = Path(path)
    if not path.exists():
        raise HistoryError(f"{path} does not exist")
    if not path.is_dir():
        raise HistoryError(f"{path} is not a workspace: it is a file, not a folder")
    try:
        repo = gitguard.repo_at(path)  # no search upwards: a folder inside another repo is not one
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        backup = gitguard.backup_path(path)
        if (backup / "HEAD").is_file():
            raise HistoryError(f"{path} has lost its .git; its history is backed up in {backup}: "
                               f"`{prog()} resume {path}` restores it") from None
        raise HistoryError(f"{path} is not a workspace: no git repository there "
                           f"(workspaces are made by `{prog()} run`)") from None
    if repo.bare or Path(repo.working_tree_dir).resolve() != path.resolve():
        raise HistoryError(f"{path} is not a workspace: it is not the top of a git work tree")
    if not repo.head.is_valid():
        raise HistoryError(f"{path} is not a workspace: its git repository has no commits")
    if not _attempt_records(repo):
        has_transcript = (path / "transcript.json").exists()
        raise HistoryError(
            f"{path} is not a workspace: no commit carries a 'Run:' trailer"
            + ("" if has_transcript else " and there is no transcript.json"))
    return repo


def read_history(workspace: Path) -> list[Attempt]:
    """Every attempt, oldest first, from the commit trailers; commits without `Run:` are skipped."""
    repo = open_workspace(workspace)
    return [_to_attempt(r) for r in _attempt_records(repo)]


def _attempt_records(repo: git.Repo) -> list[dict]:
    fmt = _FS.join(["%H", "%aI", "%s", "%(trailers:only,unfold)"]) + _RS
    try:
        out = repo.git.log("--reverse", f"--format={fmt}", "HEAD")
    except git.GitCommandError:
        return []
    records = []
    for chunk in out.split(_RS):
        chunk = chunk.strip("\n")
        if not chunk:
            continue
        sha, date, subject, trailer_text = (chunk.split(_FS) + [""] * 4)[:4]
        trailers: dict[str, str] = {}
        for line in trailer_text.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                trailers[key.strip()] = value.strip()  # a repeated key: the last one wins
        if "Run" in trailers and _int(trailers["Run"]) is not None:
            records.append({"sha": sha, "date": date, "subject": subject, "trailers": trailers})
    return records


def _to_attempt(rec: dict) -> Attempt:
    return Attempt.from_trailers(rec["trailers"], sha=rec["sha"], subject=rec["subject"],
                                 date=datetime.fromisoformat(rec["date"]))


# -- finding one attempt ------------------------------------------------------------------

_SPEC = re.compile(r"^\s*(?:run[ _]?)?(\d+)(?:\.(\d+))?\s*$", re.I)


def find_attempt(workspace: Path, spec: str, attempts: list[Attempt] | None = None) -> Attempt:
    """`"2"` → the last attempt of run 2; `"2.1"` → run 2 attempt 1. HistoryError if absent."""
    if attempts is None:
        attempts = read_history(workspace)
    m = _SPEC.match(str(spec))
    if not m:
        raise HistoryError(f"{spec!r} is not an attempt: write RUN or RUN.ATTEMPT, e.g. 2 or 2.1."
                           f" This workspace has: {describe_runs(attempts)}")
    run = int(m.group(1))
    of_run = [a for a in attempts if a.run == run]
    if not of_run:
        raise HistoryError(f"run {run} does not exist in {workspace}. "
                           f"This workspace has: {describe_runs(attempts)}")
    if m.group(2) is None:
        # The run's last real attempt; a notes commit (status notes, notes-missing) only stands
        # in when there is nothing else.
        real = [a for a in of_run if a.status not in NOTES]
        return (real or of_run)[-1]
    number = int(m.group(2))
    matching = [a for a in of_run if a.attempt == number]
    if not matching:
        have = ", ".join(sorted({a.label for a in of_run}, key=_label_key))
        raise HistoryError(f"run {run} has no attempt {number}; it has: {have}")
    return matching[-1]  # a resumed workspace may record the same attempt twice: the latest wins


def describe_runs(attempts: list[Attempt]) -> str:
    """`0, 1 (attempts 1-3), 2`: what exists, for error messages."""
    if not attempts:
        return "no attempts"
    by_run: dict[int, list[int]] = {}
    for a in attempts:
        by_run.setdefault(a.run, []).append(a.attempt)
    parts = []
    for run in sorted(by_run):
        numbers = sorted(set(by_run[run]))
        if len(numbers) <= 1:
            parts.append(f"{run}")
        elif numbers == list(range(numbers[0], numbers[-1] + 1)):
            parts.append(f"{run} (attempts {numbers[0]}-{numbers[-1]})")
        else:
            parts.append(f"{run} (attempts {', '.join(map(str, numbers))})")
    return "runs " + ", ".join(parts)


def _label_key(label: str):
    run, _, attempt = label.partition(".")
    return int(run), int(attempt or 0)


def previous_attempt(attempts: list[Attempt], current: Attempt) -> Attempt | None:
    """The attempt committed just before `current` in the history (None for the first)."""
    for i, a in enumerate(attempts):
        if a.sha == current.sha:
            return attempts[i - 1] if i > 0 else None
    return None


# -- reading files at a commit ------------------------------------------------------------

def root_commit(repo: git.Repo, rev: str = "HEAD") -> str:
    """The workspace's first commit, the one `rev` descends from: the template as the workspace
    was made, whose harness and settings no run can have changed. Followed along first parents,
    so a history with a second root (an unrelated one merged in) still names the workspace's own."""
    return repo.git.rev_list("--first-parent", "--max-parents=0", rev).split()[0]


def file_at(repo: git.Repo, sha: str, path: str) -> str | None:
    """The text of `path` at commit `sha`, or None if it was not there."""
    try:
        blob = repo.commit(sha).tree / path
    except KeyError:
        return None
    if blob.type != "blob" or blob.mode == LINK_MODE:  # a committed symlink is not a file's text
        return None
    return blob.data_stream.read().decode("utf-8", errors="replace")
