"""Generated code that reaches the workspace (the fallback box, or a bug) cannot change its history,
its settings, or crash the agent with what it leaves behind.

Each case is a planted reply through the strict loopback server whose code, when run, attacks the
workspace by its absolute path (as code outside a box could): a git hook, `git reset --hard`,
`rm -rf .git`, a rewritten template.json, links and bad bytes in the editable files, a stale
index.lock, a multi-megabyte log line. Afterwards the history must be intact and truthful.
"""

import io
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import git
import pytest
from rich.console import Console

from agent import gitguard, history, review, runner, workspace
from agent.cli import main
from agent.process import RunStatus
from mini import NOTES, block, last_user, run_agent, workspace_of

@pytest.fixture(autouse=True)
def _fallback_box(monkeypatch):
    """These attacks need the workspace within reach, as in the staged fallback box (in bwrap the
    workspace is not even visible: test_bwrap_keeps_the_workspace_out_of_reach checks that)."""
    monkeypatch.setenv("AGENT_SANDBOX", "staged")


GOOD = "Run 1.\n\n" + block("    accuracy = ACCURACY\n", "    accuracy = ACCURACY + 0.05\n")
SECRET = "sk-live-tamper-test-0123456789"


def hostile(results: Path, *payload: str, note: str = "Run it.") -> tuple[str, str]:
    """A reply whose run attacks the workspace through its absolute path, then writes results;
    and the block that takes the attack out again."""
    lines = ["import glob, os, shutil, subprocess",
             f"ws = sorted(glob.glob({str(results)!r} + '/*_mini_idea'))[-1]", *payload]
    body = "".join(f"    {line}\n" for line in lines)
    attack = f"{note}\n\n" + block("def main():\n", "def main():\n" + body)
    return attack, block("def main():\n" + body, "def main():\n")


def statuses(ws: Path) -> list[tuple[int, int, str]]:
    return [(a.run, a.attempt, a.status) for a in history.read_history(ws)]


def log_json(ws: Path, capsys) -> list[dict]:
    capsys.readouterr()
    assert main(["log", str(ws), "--json"]) == 0
    return json.loads(capsys.readouterr().out)["attempts"]


def all_sent(fake) -> str:
    return json.dumps([r.body for r in fake.requests])


def assert_history_sound(ws: Path) -> None:
    repo = git.Repo(ws)
    subprocess.run(["git", "-C", str(ws), "fsck", "--no-progress"], check=True, capture_output=True)
    assert not repo.head.is_detached
    assert not repo.is_dirty(untracked_files=True), repo.git.status()


# -- history --------------------------------------------------------------------------------

def test_a_planted_hook_never_runs_and_the_attempt_is_recorded_as_failed(fake_llm, idea, tmp_path, capsys):
    results = tmp_path / "results"
    marker = tmp_path / "hook-ran"
    hook = f"#!/bin/sh\nsed -i 's/Status: failed/Status: success/' \"$1\"\ntouch {marker}\n"
    attack, _ = hostile(results, "p = os.path.join(ws, '.git', 'hooks', 'prepare-commit-msg')",
                        f"open(p, 'w').write({hook!r})", "os.chmod(p, 0o755)")
    fake_llm.script([attack, "ALL_COMPLETED"])
    assert run_agent(idea, results, "--no-smoke", fake=fake_llm) == 0
    ws = workspace_of(results)
    assert not marker.exists(), "the hook ran"
    assert not (ws / ".git" / "hooks" / "prepare-commit-msg").exists()
    rows = log_json(ws, capsys)
    assert [(r["run"], r["status"]) for r in rows] == [(0, "baseline"), (1, "failed")]
    assert "prepare-commit-msg" in rows[1]["error"]
    attempt = history.read_history(ws)[1]
    assert "prepare-commit-msg" in attempt.trailers["Tampered"]
    assert "prepare-commit-msg" in last_user(fake_llm.requests[1]), "the coder is told"
    assert_history_sound(ws)


@pytest.mark.parametrize("attack", ["reset", "rmtree"])
def test_a_run_that_rewrites_or_removes_the_history_loses_no_attempt(fake_llm, idea, tmp_path, capsys, attack):
    results = tmp_path / "results"
    payload = {
        "reset": ["root = subprocess.run(['git', '-C', ws, 'rev-list', '--max-parents=0', 'HEAD'], "
                  "capture_output=True, text=True).stdout.split()[-1]",
                  "subprocess.run(['git', '-C', ws, 'reset', '--hard', '-q', root], check=True)"],
        "rmtree": ["shutil.rmtree(os.path.join(ws, '.git'))"],
    }[attack]
    planted, _ = hostile(results, *payload, note="Run 2.")
    run2 = planted + "\n" + block("STEPS = 100\n", "STEPS = 100  # run 2\n")
    fake_llm.script([GOOD, run2, "ALL_COMPLETED", NOTES])
    assert run_agent(idea, results, "--no-smoke", fake=fake_llm) == 0
    ws = workspace_of(results)

    assert statuses(ws) == [(0, 1, "baseline"), (1, 1, "success"), (2, 1, "failed"), (1, 2, "notes")]
    rows = log_json(ws, capsys)
    assert [r["status"] for r in rows] == ["baseline", "success", "failed", "notes"]
    tampered = history.read_history(ws)[2]
    assert "changed what it must not" in tampered.error or "protected" in tampered.error
    assert (".git" if attack == "rmtree" else "the branch") in tampered.trailers["Tampered"]
    repo = git.Repo(ws)
    head_files = {b.path for b in repo.head.commit.tree.traverse()}
    assert {"run_0/final_info.json", "run_1/final_info.json", "run_2/log.txt"} <= head_files
    assert "STEPS = 100  # run 2" in repo.git.show(f"{tampered.sha}:experiment.py"), "the code as run"
    assert "ACCURACY + 0.05" in (ws / "experiment.py").read_text()
    assert_history_sound(ws)


def test_a_history_removed_between_sessions_comes_back_on_resume(fake_llm, idea, tmp_path, capsys):
    results = tmp_path / "results"
    fake_llm.script([GOOD, "ALL_COMPLETED", NOTES])
    assert run_agent(idea, results, "--no-smoke", fake=fake_llm) == 0
    ws = workspace_of(results)
    before = statuses(ws)
    shutil.rmtree(ws / ".git")  # a run's daemon did it after the agent ended

    capsys.readouterr()
    assert main(["log", str(ws)]) == 2
    assert "resume" in capsys.readouterr().err, "log says how to get it back"
    fake_llm.script(["ALL_COMPLETED", NOTES])
    assert main(["resume", str(ws), "--api-base", fake_llm.url, "--no-smoke"]) == 0
    after = statuses(ws)
    assert after[:len(before)] == before, "every attempt is back"
    assert after[len(before)][2] == "failed" and ".git" in history.read_history(ws)[len(before)].error
    assert_history_sound(ws)


def test_git_reads_no_code_running_config_from_the_workspace(tmp_path):
    """Hooks, fsmonitor, filters and aliases planted in .git never run in the agent's git."""
    ws = tmp_path / "ws"
    history.init_repo(ws)
    (ws / "a.txt").write_text("a\n")
    history.commit_attempt(ws, subject="run 0: baseline", trailers={"Run": "0", "Status": "baseline"})
    marker = tmp_path / "ran"
    script = tmp_path / "evil.sh"
    script.write_text(f"#!/bin/sh\necho $0 >> {marker}\ncat\n")
    script.chmod(0o755)
    with (ws / ".git" / "config").open("a") as f:
        f.write(f"[core]\n\tfsmonitor = {script}\n[filter \"evil\"]\n\tclean = {script}\n"
                f"\tsmudge = {script}\n[diff \"evil\"]\n\ttextconv = {script}\n")
    (ws / ".gitattributes").write_text("* filter=evil diff=evil\n")
    for name in ("pre-commit", "prepare-commit-msg", "commit-msg", "post-commit"):
        hook = ws / ".git" / "hooks" / name
        hook.write_text(f"#!/bin/sh\necho {name} >> {marker}\n")
        hook.chmod(0o755)
    (ws / "a.txt").write_text("b\n")
    history.commit_attempt(ws, subject="run 1 attempt 1: success",
                           trailers={"Run": "1", "Attempt": "1", "Status": "success"})
    history.read_history(ws)
    review.attempt_detail(ws, "1.1")  # a diff: textconv would run here
    assert not marker.exists(), marker.read_text()
    attempt = history.find_attempt(ws, "1.1")
    assert attempt.status == "failed", "planted config and hooks are the attempt's failure"
    for word in ("fsmonitor", "filter.evil.clean", "pre-commit"):
        assert word in attempt.trailers["Tampered"]
    assert "fsmonitor" not in (ws / ".git" / "config").read_text()


def test_the_backup_lives_outside_the_workspace_and_follows_each_commit(tmp_path):
    ws = tmp_path / "ws"
    history.init_repo(ws)
    (ws / "a.txt").write_text("a\n")
    sha = history.commit_attempt(ws, subject="run 0: baseline", trailers={"Run": "0", "Status": "baseline"})
    backup = gitguard.backup_path(ws)
    assert not backup.resolve().is_relative_to(ws.resolve())
    assert git.Repo(backup).head.commit.hexsha == sha


# -- settings -------------------------------------------------------------------------------

def test_a_rewritten_template_and_profile_change_nothing_now_or_on_resume(fake_llm, idea, tmp_path, monkeypatch):
    monkeypatch.setenv("TAMPER_TEST_SECRET", SECRET)
    results = tmp_path / "results"
    evil = {"editable": ["experiment.py", "harness/__init__.py"], "protected": [],
            "command": ["{python}", "experiment.py", "--out_dir={out_dir}"],
            "env_allow": {"tiny": ["TAMPER_TEST_SECRET"], "cpu": ["TAMPER_TEST_SECRET"]}, "profiles": ["tiny", "cpu"]}
    rewrite, undo = hostile(results, f"open(os.path.join(ws, 'template.json'), 'w').write({json.dumps(evil)!r})",
                      "open(os.path.join(ws, 'profile.json'), 'w').write('{\"profile\": \"cpu\"}')")
    fake_llm.script([rewrite, "ALL_COMPLETED"])
    assert run_agent(idea, results, "--no-smoke", fake=fake_llm) == 0
    ws = workspace_of(results)
    first = history.read_history(ws)[1]
    assert first.status == "failed" and "template.json" in first.trailers["Tampered"]
    assert json.loads((ws / "template.json").read_text())["protected"] == ["harness/"]

    # As if a run had rewritten them while the agent was stopped.
    (ws / "template.json").write_text(json.dumps(evil))
    (ws / "profile.json").write_text('{"profile": "cpu"}')
    reopened = workspace.open_workspace(ws)
    assert reopened.template.protected == ("harness/",) and reopened.profile == "tiny"
    assert reopened.template.allowed_env("tiny") == [] and "harness/__init__.py" not in reopened.template.editable

    harness_edit = "Edit the harness.\n\n" + block('KEY = "mini-model/blocks.0.hook_resid_post"\n',
                                                   'KEY = "cheated"\n', path="harness/__init__.py")
    leak = "Print it.\n\n" + undo + "\n" + block(
        "def main():\n", "def main():\n    print('secret:', __import__('os').environ.get('TAMPER_TEST_SECRET'))\n")
    fake_llm.script([harness_edit, leak, "ALL_COMPLETED", NOTES])
    assert main(["resume", str(ws), "--api-base", fake_llm.url, "--no-smoke"]) == 0
    attempts = history.read_history(ws)
    resumed = attempts[2]
    assert resumed.status == "failed" and "template.json" in resumed.error and "profile.json" in resumed.error
    assert "not editable" in last_user(fake_llm.requests[-3]), "the harness stays read-only"
    assert 'KEY = "mini-model' in (ws / "harness" / "__init__.py").read_text()
    assert all(a.profile == "tiny" for a in attempts)
    log = (ws / f"run_{attempts[-2].run}" / "log.txt").read_text()
    assert "secret: None" in log, "env_allow from the rewritten template.json was ignored"
    assert SECRET not in all_sent(fake_llm)
    assert SECRET not in subprocess.run(["git", "-C", str(ws), "log", "-p", "--all"],
                                        capture_output=True, text=True).stdout


# -- leftovers ------------------------------------------------------------------------------

def _outside_secret(tmp_path: Path) -> Path:
    outside = tmp_path / "outside.txt"
    outside.write_text(f"OUTSIDE {SECRET}\n")
    return outside


def test_links_bad_bytes_a_stale_lock_and_a_huge_line_fail_the_attempt_and_the_loop_goes_on(
        fake_llm, idea, tmp_path, capsys):
    results = tmp_path / "results"
    outside = _outside_secret(tmp_path)
    leftovers, undo = hostile(
        results,
        "os.remove(os.path.join(ws, 'plot.py'))",
        f"os.symlink({str(outside)!r}, os.path.join(ws, 'plot.py'))",
        "open(os.path.join(ws, 'notes.txt'), 'wb').write(b'# Notes\\n\\xff\\xfe bad bytes\\n')",
        "open(os.path.join(ws, '.git', 'index.lock'), 'w').write('')",
        "os.makedirs(os.path.join(ws, 'run_1'), exist_ok=True)",
        f"os.symlink({str(outside)!r}, os.path.join(ws, 'run_1', 'leak.txt'))",
        "print('x' * 3_000_000)")
    plot_edit = "Fix the plot.\n\n" + block('print("no plots in the mini template")\n', 'print("still no plots")\n',
                                            path="plot.py") + "\n" + undo + "\n" + GOOD.split("\n\n", 1)[1]
    fake_llm.script([leftovers, plot_edit, "ALL_COMPLETED", NOTES])
    assert run_agent(idea, results, "--no-smoke", fake=fake_llm) == 0
    ws = workspace_of(results)

    assert statuses(ws) == [(0, 1, "baseline"), (1, 1, "failed"), (1, 2, "success"), (1, 3, "notes")]
    tampered = history.read_history(ws)[1].trailers["Tampered"]
    for word in ("plot.py", "notes.txt", "index.lock", "run_1/leak.txt"):
        assert word in tampered
    assert not (ws / "plot.py").is_symlink() and "still no plots" in (ws / "plot.py").read_text()
    (ws / "notes.txt").read_text(encoding="utf-8")
    assert SECRET not in all_sent(fake_llm), "an outside file reached the LLM"
    assert_history_sound(ws)

    out = io.StringIO()
    started = time.monotonic()
    assert review.show(ws, "1.1", console=Console(file=out, width=120)) == 0
    shown = time.monotonic() - started
    assert len(out.getvalue()) < 200_000, "show bounds what it prints"
    print(f"show on a 3 MB log line: {shown:.2f}s")
    assert main(["report", str(ws), "--out", str(tmp_path / "r.md")]) == 0
    assert SECRET not in (tmp_path / "r.md").read_text()


def test_leftovers_from_a_stopped_session_are_put_back_on_resume(fake_llm, idea, tmp_path, capsys):
    results = tmp_path / "results"
    fake_llm.script([GOOD, "ALL_COMPLETED", NOTES])
    assert run_agent(idea, results, "--no-smoke", fake=fake_llm) == 0
    ws = workspace_of(results)
    done = len(history.read_history(ws))
    outside = _outside_secret(tmp_path)
    (ws / "plot.py").unlink()
    (ws / "plot.py").symlink_to(outside)
    (ws / "notes.txt").write_bytes(b"# Notes\n\xff\xfe\n")
    (ws / ".git" / "index.lock").write_text("")
    (ws / "transcript.json").unlink()
    (ws / "transcript.json").symlink_to(outside)

    plot_edit = "Plot.\n\n" + block('print("no plots in the mini template")\n', 'print("plots")\n', path="plot.py")
    fake_llm.script([plot_edit, "ALL_COMPLETED", NOTES])
    assert main(["resume", str(ws), "--api-base", fake_llm.url, "--no-smoke"]) == 0
    resumed = history.read_history(ws)[done]
    assert resumed.status == "failed" and "plot.py" in resumed.error and "notes.txt" in resumed.error
    assert SECRET not in all_sent(fake_llm)
    assert not (ws / "plot.py").is_symlink() and not (ws / "transcript.json").is_symlink()
    assert "Raise the accuracy" in json.dumps(fake_llm.requests[-1].messages), "the conversation went on"
    assert_history_sound(ws)


def test_replay_and_report_work_on_a_commit_that_holds_a_link_to_outside(tmp_path, capsys):
    """Workspaces made before these guards may hold a committed link: it is skipped, not a crash."""
    ws = tmp_path / "results" / "20250101_000000_linked"
    history.init_repo(ws)
    (ws / "template.json").write_text(json.dumps({"editable": ["experiment.py", "plot.py"],
                                                  "profiles": ["tiny"], "smoke_profiles": []}))
    (ws / "profile.json").write_text('{"profile": "tiny"}\n')
    (ws / "experiment.py").write_text("raise ValueError('planted failure 42 of 7')\n")
    (ws / "plot.py").symlink_to(_outside_secret(tmp_path))
    history.commit_attempt(ws, subject="run 0: baseline", trailers={"Run": "0", "Attempt": "1", "Status": "baseline"})
    result = runner.run_experiment(ws, "run_1", timeout=60)
    assert result.status != RunStatus.OK
    history.commit_attempt(ws, subject="run 1 attempt 1: failed", trailers={
        "Run": "1", "Attempt": "1", "Status": "failed", "Error": result.error})
    out = io.StringIO()
    review.replay(ws, "1.1", console=Console(file=out, width=200))
    text = out.getvalue()
    assert "plot.py" in text and "not extracted" in text
    assert "reproduced" in text
    assert "recorded: ValueError: planted failure 42 of 7" in text, "the real error, not the signature"
    assert "NfN" not in text.replace("\n", " ").split("replay output")[0] or "planted failure 42" in text
    assert review.report(ws, console=Console(file=io.StringIO()), out=tmp_path / "r.html") == 0
    assert SECRET not in (tmp_path / "r.html").read_text()


def _repo_with_attempt(tmp_path):
    ws = tmp_path / "ws"
    history.init_repo(ws)
    (ws / "a.txt").write_text("a\n")
    history.commit_attempt(ws, subject="run 0: baseline", trailers={"Run": "0", "Status": "baseline"})
    return ws


def test_a_persons_commit_and_a_stale_lock_between_sessions_are_no_tampering(tmp_path):
    ws = _repo_with_attempt(tmp_path)
    (ws / "a.txt").write_text("by hand\n")
    subprocess.run(["git", "-C", str(ws), "-c", "user.name=me", "-c", "user.email=me@x", "commit",
                    "-qam", "a manual tweak"], check=True)
    (ws / ".git" / "index.lock").write_text("")  # git was killed mid-command
    guard, warnings = gitguard.open_guard(ws)
    assert guard.tampering == [] and any("index.lock" in w for w in warnings)
    assert git.Repo(ws).head.commit.message.startswith("a manual tweak"), "the person's commit stays"
    assert git.Repo(gitguard.backup_path(ws)).head.commit.message.startswith("a manual tweak")


def test_a_history_lost_with_its_backup_is_a_clear_error_not_a_traceback(tmp_path):
    ws = _repo_with_attempt(tmp_path)
    shutil.rmtree(ws / ".git")
    shutil.rmtree(gitguard.backup_path(ws))
    with pytest.raises(history.HistoryError, match="cannot be restored"):
        history.commit_attempt(ws, subject="run 1 attempt 1: failed", trailers={"Run": "1", "Status": "failed"})


def test_a_commit_the_run_added_on_top_is_taken_off_the_branch_but_kept(tmp_path):
    ws = _repo_with_attempt(tmp_path)
    good = git.Repo(ws).head.commit.hexsha
    (ws / "a.txt").write_text("forged\n")
    subprocess.run(["git", "-C", str(ws), "-c", "user.name=x", "-c", "user.email=y", "commit", "-qam",
                    "run 1: sae_top_1 0.999\n\nRun: 1\nAttempt: 1\nStatus: success"], check=True)
    forged = git.Repo(ws).head.commit.hexsha
    found = gitguard.guard(ws).check(keep=[])
    assert found and "the branch" in found[0]
    repo = git.Repo(ws)
    assert repo.head.commit.hexsha == good and (ws / "a.txt").read_text() == "a\n"
    assert forged in repo.git.for_each_ref("refs/sae-agent/displaced", format="%(objectname)")
    assert [a.status for a in history.read_history(ws)] == ["baseline"]


def test_a_run_interrupted_after_it_tampered_is_put_back_and_named(fake_llm, idea, tmp_path):
    import signal
    import threading
    results = tmp_path / "results"
    outside = _outside_secret(tmp_path)
    attack, _ = hostile(results, "os.remove(os.path.join(ws, 'plot.py'))",
                        f"os.symlink({str(outside)!r}, os.path.join(ws, 'plot.py'))",
                        "import time; time.sleep(20)")
    fake_llm.script([attack])

    def interrupt_once_linked():
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if any(p.is_symlink() for p in results.glob("*/plot.py")):
                break
            time.sleep(0.05)
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_once_linked, daemon=True).start()
    assert run_agent(idea, results, "--no-smoke", fake=fake_llm) == 130
    ws = workspace_of(results)
    last = history.read_history(ws)[-1]
    assert last.status == "failed" and "plot.py" in last.error and "interrupted" in last.error
    assert not (ws / "plot.py").is_symlink()
    assert_history_sound(ws)


@pytest.mark.skipif(not __import__("agent.sandbox").sandbox.bwrap_works(), reason="bubblewrap is not installed here")
def test_bwrap_keeps_the_workspace_out_of_reach(fake_llm, idea, tmp_path, monkeypatch):
    monkeypatch.setenv("AGENT_SANDBOX", "bwrap")
    results = tmp_path / "results"
    attack, _ = hostile(results, "print('REACHED', ws)",
                        "open(os.path.join(ws, '.git', 'hooks', 'prepare-commit-msg'), 'w').write('exit 0')")
    fake_llm.script([attack, "ALL_COMPLETED"])
    assert run_agent(idea, results, "--no-smoke", fake=fake_llm) == 0
    ws = workspace_of(results)
    log = (ws / "run_1" / "log.txt").read_text()
    assert "REACHED" not in log and "IndexError" in log          # the glob finds nothing in the box
    assert not (ws / ".git" / "hooks" / "prepare-commit-msg").exists()
