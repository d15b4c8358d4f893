"""The git history as the workspace's database: written with trailers, read back from any clone."""

import subprocess
from dataclasses import fields, replace

import git
import pytest

from agent import history
from agent.attempt import Attempt, Status
from agent.history import HistoryError


def attempt_trailers(run, attempt, status, **extra):
    t = {"Run": str(run), "Attempt": str(attempt), "Status": status}
    t.update(extra)
    return t


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A workspace with a baseline, a failed attempt, and its successful retry."""
    # A bare CI machine: no global git identity at all.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    ws = tmp_path / "ws"
    history.init_repo(ws)
    (ws / "experiment.py").write_text("print('baseline')\n")
    (ws / "transcript.json").write_text('{"messages": []}')
    history.commit_attempt(ws, subject="run 0: baseline", trailers=attempt_trailers(
        0, 0, "baseline", Duration="12.5s", Profile="tiny"))
    (ws / "experiment.py").write_text("raise AttributeError('no ae')\n")
    history.commit_attempt(ws, subject="run 1 attempt 1: failed — AttributeError: no ae",
                           body="The model tried to rename the trainer.",
                           trailers=attempt_trailers(
                               1, 1, "failed", Duration="3.0s", Model="openai/deepseek-reasoner",
                               Cost="$0.0123", Tokens="15234",
                               Error="AttributeError: 'CustomTrainer' object has no attribute 'ae'",
                               Profile="tiny"))
    (ws / "experiment.py").write_text("print('fixed')\n")
    history.commit_attempt(ws, subject="run 1: sae_top_1 0.742 (+0.031 vs run 0)",
                           trailers=attempt_trailers(1, 2, "success", Duration="41.2s",
                                                     Cost="$0.0100", Tokens="9000"))
    return ws


def test_history_reads_back_every_trailer_oldest_first(workspace):
    attempts = history.read_history(workspace)
    assert [(a.run, a.attempt, a.status) for a in attempts] == [
        (0, 0, "baseline"), (1, 1, "failed"), (1, 2, "success")]
    failed = attempts[1]
    assert failed.duration == 3.0
    assert failed.cost == pytest.approx(0.0123)
    assert failed.tokens == 15234
    assert failed.model == "openai/deepseek-reasoner"
    assert failed.error == "AttributeError: 'CustomTrainer' object has no attribute 'ae'"
    assert failed.profile == "tiny"
    assert failed.subject.startswith("run 1 attempt 1: failed")
    assert len(failed.sha) == 40


def test_commit_message_is_in_git_trailer_format(workspace):
    """`git interpret-trailers --parse` (git's own parser) finds exactly our trailers."""
    repo = git.Repo(workspace)
    message = repo.commit("HEAD~1").message
    parsed = subprocess.run(["git", "interpret-trailers", "--parse"], input=message,
                            capture_output=True, text=True, check=True).stdout
    assert parsed.splitlines() == [
        "Run: 1", "Attempt: 1", "Status: failed", "Duration: 3.0s",
        "Model: openai/deepseek-reasoner", "Cost: $0.0123", "Tokens: 15234",
        "Error: AttributeError: 'CustomTrainer' object has no attribute 'ae'", "Profile: tiny"]
    assert "The model tried to rename the trainer." in message


def test_commits_work_without_any_configured_identity(workspace):
    repo = git.Repo(workspace)
    assert repo.head.commit.author.name == "sae-agent"


def test_multiline_values_and_comment_lines_survive(workspace):
    sha = history.commit_attempt(
        workspace, subject="run 2 attempt 1: failed",
        body="# a markdown heading the LLM wrote\nstill here",
        trailers=attempt_trailers(2, 1, "failed", Error="ValueError: bad\n  shape (3,)"))
    a = history.find_attempt(workspace, "2.1")
    assert a.sha == sha
    assert a.error == "ValueError: bad shape (3,)"
    assert "# a markdown heading the LLM wrote" in git.Repo(workspace).commit(sha).message


def test_attempt_without_changes_is_still_a_commit(workspace):
    before = len(history.read_history(workspace))
    history.commit_attempt(workspace, subject="run 2 attempt 1: gate-failed",
                           trailers=attempt_trailers(2, 1, "gate-failed"))
    assert len(history.read_history(workspace)) == before + 1


def test_deletions_are_staged_and_paths_limit_what_is_committed(workspace):
    repo = git.Repo(workspace)
    (workspace / "experiment.py").unlink()
    (workspace / "notes.txt").write_text("notes")
    (workspace / "scratch.txt").write_text("not this time")
    history.commit_attempt(workspace, subject="run 2 attempt 1: notes",
                           trailers=attempt_trailers(2, 1, "notes"),
                           paths=["experiment.py", "notes.txt"])
    tree = {b.path for b in repo.head.commit.tree.traverse()}
    assert "experiment.py" not in tree and "notes.txt" in tree and "scratch.txt" not in tree


def test_commits_without_a_run_trailer_are_ignored(workspace):
    history.commit_attempt(workspace, subject="manual tweak", trailers={"Reviewed-by": "me"})
    assert [a.label for a in history.read_history(workspace)] == ["0.0", "1.1", "1.2"]


def test_history_reads_from_a_clone(workspace, tmp_path):
    clone = tmp_path / "clone"
    git.Repo.clone_from(str(workspace), str(clone))
    assert [a.label for a in history.read_history(clone)] == ["0.0", "1.1", "1.2"]


def test_find_attempt_by_run_and_by_run_dot_attempt(workspace):
    assert history.find_attempt(workspace, "1").attempt == 2  # the run's last attempt
    assert history.find_attempt(workspace, "1.1").status == "failed"
    assert history.find_attempt(workspace, "0").status == "baseline"


@pytest.mark.parametrize("status", ["notes", "notes-missing"])
def test_find_attempt_prefers_a_real_attempt_over_a_notes_commit(workspace, status):
    history.commit_attempt(workspace, subject="notes for run 1",
                           trailers=attempt_trailers(1, 3, status))
    assert history.find_attempt(workspace, "1").status == "success"
    assert history.find_attempt(workspace, "1.3").status == status


@pytest.mark.parametrize("spec, words", [
    ("5", ["run 5 does not exist", "runs 0, 1 (attempts 1-2)"]),
    ("1.7", ["run 1 has no attempt 7", "1.1, 1.2"]),
    ("latest", ["'latest' is not an attempt", "RUN.ATTEMPT"]),
])
def test_find_attempt_says_what_exists(workspace, spec, words):
    with pytest.raises(HistoryError) as e:
        history.find_attempt(workspace, spec)
    for w in words:
        assert w in str(e.value)


def test_not_a_workspace_messages(tmp_path):
    with pytest.raises(HistoryError, match="does not exist"):
        history.open_workspace(tmp_path / "missing")
    with pytest.raises(HistoryError, match="no git repository"):
        history.open_workspace(tmp_path)
    history.init_repo(tmp_path / "empty")
    with pytest.raises(HistoryError, match="no commits"):
        history.open_workspace(tmp_path / "empty")
    plain = tmp_path / "plain"
    history.init_repo(plain)
    (plain / "a.txt").write_text("a")
    history.commit_attempt(plain, subject="just a repo", trailers={})
    with pytest.raises(HistoryError, match="no commit carries a 'Run:' trailer"):
        history.open_workspace(plain)
    assert not history.is_workspace(plain)


def test_a_folder_inside_a_workspace_is_not_a_workspace(workspace):
    (workspace / "run_1").mkdir()
    assert history.is_workspace(workspace)
    assert not history.is_workspace(workspace / "run_1")


def test_file_at_reads_a_past_version(workspace):
    repo = git.Repo(workspace)
    first = history.find_attempt(workspace, "1.1")
    assert history.file_at(repo, first.sha, "experiment.py") == "raise AttributeError('no ae')\n"
    assert history.file_at(repo, first.sha, "nope.txt") is None


def test_root_commit_is_the_baseline_from_any_later_commit(workspace):
    repo = git.Repo(workspace)
    baseline = history.find_attempt(workspace, "0").sha
    assert history.root_commit(repo) == baseline
    assert history.root_commit(repo, history.find_attempt(workspace, "1.1").sha) == baseline
    # An unrelated history merged in is a second root: the workspace's own is still the one named.
    tree = repo.head.commit.tree.hexsha
    other = repo.git.commit_tree(tree, "-m", "another root")
    merge = repo.git.commit_tree(tree, "-p", "HEAD", "-p", other, "-m", "merge")
    assert history.root_commit(repo, merge) == baseline


# -- the typed record: Attempt.to_trailers / from_trailers --------------------------------

def every_field() -> Attempt:
    return Attempt(run=3, attempt=2, status=Status.FAILED, duration=41.2, model="openai/deepseek-reasoner",
                   cost=0.0123, tokens=15234, error="ValueError: bad shape (3,)", profile="tiny",
                   signature="ValueError @ experiment.py:main | bad shape (#,)",
                   tampered=".git/hooks/prepare-commit-msg", sandbox="bwrap", executor="slurm",
                   slurm_job="4711", results_sha256="3b59" * 16,
                   extra={"Reviewed-by": "a researcher <r@example.org>", "Edits": "2 applied"})


def test_every_field_of_an_attempt_survives_a_commit(workspace):
    written = every_field()
    assert {f.name for f in fields(Attempt)} - {"sha", "subject", "date"} <= \
        {n for n in vars(written) if getattr(written, n) not in (None, {})}, "every_field misses one"
    sha = history.commit_attempt(workspace, subject="run 3 attempt 2: failed", trailers=written)
    read = history.find_attempt(workspace, "3.2")
    assert read.sha == sha and read.subject == "run 3 attempt 2: failed" and read.date is not None
    assert replace(read, sha="", subject="", date=None) == written
    assert isinstance(read.status, Status)
    # The user's own trailer is kept in the commit and comes back in order after the known ones.
    assert list(read.trailers)[-2:] == ["Reviewed-by", "Edits"]


def test_trailers_are_written_in_the_format_old_workspaces_have():
    assert Attempt(run=1, attempt=1, status=Status.SUCCESS, duration=12.34, cost=0.01234,
                   tokens=0).to_trailers() == {
        "Run": "1", "Attempt": "1", "Status": "success", "Duration": "12.3s", "Cost": "$0.0123",
        "Tokens": "0"}


def test_a_trailer_that_does_not_parse_is_kept_as_written(workspace):
    history.commit_attempt(workspace, subject="run 2 attempt 1: by hand", trailers=attempt_trailers(
        2, 1, "reviewed-by-hand", Duration="about a minute", Cost="$0.01", Tokens="1,200"))
    a = history.find_attempt(workspace, "2.1")
    assert a.status is Status.UNKNOWN and a.duration is None and a.cost == 0.01 and a.tokens == 1200
    assert a.trailers["Status"] == "reviewed-by-hand" and a.trailers["Duration"] == "about a minute"
    # Written back (as `tampered` does), nothing the user wrote is lost.
    again = Attempt.from_trailers(a.to_trailers())
    assert again.to_trailers() == a.to_trailers()


def test_every_status_reads_back_as_itself(workspace):
    for i, status in enumerate(Status, start=1):
        history.commit_attempt(workspace, subject=f"run 5 attempt {i}: {status}",
                               trailers=Attempt(run=5, attempt=i, status=status))
    back = [a.status for a in history.read_history(workspace) if a.run == 5]
    assert back == list(Status)
