"""The loop end to end: a strict loopback provider, real git, real subprocess runs.

These use a small test template (tests/data/mini_template: no torch, runs in a blink) so each
scenario takes seconds; tests/test_ground_truth.py drives the real SAE template the same way.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import git
import pytest

from agent import history, sandbox
from agent.cli import main
from mini import FIX_ERROR, MINI, MODEL, NOTES, PLANT_ERROR, block, last_user, run_agent, workspace_of

REPO = Path(__file__).resolve().parent.parent


def subjects(ws: Path) -> list[str]:
    return [a.subject for a in history.read_history(ws)]


def test_planted_error_reaches_the_next_prompt_and_the_fix_runs(fake_llm, idea, tmp_path):
    fake_llm.script([PLANT_ERROR, FIX_ERROR, "Done.\nALL_COMPLETED", NOTES])
    results = tmp_path / "results"
    assert run_agent(idea, results, fake=fake_llm) == 0
    ws = workspace_of(results)

    assert fake_llm.violations == [] and len(fake_llm.requests) == 4
    second = last_user(fake_llm.requests[1])
    assert "ZeroDivisionError" in second and "accuracy = ACCURACY / 0" in second
    assert "sae_top_1" in last_user(fake_llm.requests[2])  # results summarised against run 0

    attempts = history.read_history(ws)
    assert [(a.run, a.attempt, a.status) for a in attempts] == [
        (0, 1, "baseline"), (1, 1, "failed"), (1, 2, "success"), (1, 3, "notes")]
    assert attempts[1].subject == "run 1 attempt 1: failed — ZeroDivisionError: float division by zero (in the smoke run)"
    # The mini template keeps no per-example evidence and has one seed: no interval, and it says so.
    assert attempts[2].subject == "run 1: sae_top_1 0.800 (+0.050 vs run 0, no interval)"
    assert all(a.model == MODEL for a in attempts[1:]) and attempts[1].error.startswith("ZeroDivisionError")
    assert attempts[2].duration is not None

    repo = git.Repo(ws)
    assert not repo.is_dirty(untracked_files=True), "everything is committed"
    tracked = repo.git.ls_files().split()
    for name in ("run_0/final_info.json", "run_1/final_info.json", "run_1/log.txt", "transcript.json",
                 "transcript.md", "idea.md", "profile.json", "experiment.py"):
        assert name in tracked
    assert "ACCURACY + 0.05" in (ws / "experiment.py").read_text()
    assert "raised top-1" in (ws / "notes.txt").read_text()
    failed_code = repo.git.show(f"{attempts[1].sha}:experiment.py")
    assert "ACCURACY / 0" in failed_code, "the failed attempt's commit holds the code as run"
    transcript = json.loads((ws / "transcript.json").read_text())
    assert [m["role"] for m in transcript["messages"]][:3] == ["system", "user", "assistant"]


def test_failure_feedback_shows_the_files_that_matter_not_plot_py(fake_llm, idea, tmp_path):
    """After a failed run the coder sees experiment.py (edited, in the traceback), not an untouched
    plot.py that the run never reached; a reply that also edited plot.py gets plot.py back too."""
    both = ("Run 1.\n\n" + block("    accuracy = ACCURACY\n", "    accuracy = ACCURACY[0]\n")
            + block('print("no plots in the mini template")\n', 'print("still no plots")\n', "plot.py"))
    fix = "Fix.\n\n" + block("    accuracy = ACCURACY / 0\n", "    accuracy = ACCURACY / 0.0\n")
    fake_llm.script([PLANT_ERROR, fix, both, "Done.\nALL_COMPLETED"])
    results = tmp_path / "results"
    run_agent(idea, results, "--max-attempts", "4", fake=fake_llm)
    assert fake_llm.violations == [] and len(fake_llm.requests) == 4
    first = [m for m in fake_llm.requests[0].messages if m["role"] == "user"][0]["content"]
    assert "plot.py\n```python" in first, "the task itself still shows every editable file"

    feedback = last_user(fake_llm.requests[1])
    assert "ZeroDivisionError" in feedback and "experiment.py\n```python" in feedback
    assert "accuracy = ACCURACY / 0" in feedback and "def main():" in feedback  # the whole current file
    assert "plot.py" not in feedback and "no plots in the mini template" not in feedback

    feedback = last_user(fake_llm.requests[2])  # the same error twice: experiment.py restored, shown
    assert "ZeroDivisionError" in feedback and "experiment.py\n```python" in feedback and "plot.py" not in feedback

    feedback = last_user(fake_llm.requests[3])  # the third reply edited plot.py too: now it matters
    assert "TypeError" in feedback
    assert "experiment.py\n```python" in feedback and "plot.py\n```python\nprint(\"still no plots\")" in feedback


def test_placeholder_edit_is_stopped_by_the_gate_and_never_run(fake_llm, idea, tmp_path):
    placeholder = block("def train():\n    accuracy = ACCURACY\n    return accuracy\n",
                        "def train():\n    # Existing train code...\n    pass\n")
    good = block("    accuracy = ACCURACY\n", "    accuracy = ACCURACY + 0.01\n")
    fake_llm.script([placeholder, good, "ALL_COMPLETED", NOTES])
    results = tmp_path / "results"
    assert run_agent(idea, results, fake=fake_llm) == 0
    ws = workspace_of(results)
    attempts = history.read_history(ws)
    assert [a.status for a in attempts] == ["baseline", "gate-failed", "success", "notes"]
    gate_commit = git.Repo(ws).commit(attempts[1].sha)
    assert "run_1/log.txt" not in [str(p) for p in gate_commit.stats.files], "the gate ran nothing"
    feedback = last_user(fake_llm.requests[1])
    assert "Existing train code" in feedback and "NOT run" in feedback
    assert fake_llm.violations == []


def test_same_error_twice_restores_and_a_failed_file_is_never_rerun(fake_llm, idea, tmp_path):
    good = block("    accuracy = ACCURACY\n", "    accuracy = ACCURACY + 0.01\n")
    break1 = block("    accuracy = ACCURACY + 0.01\n", "    accuracy = ACCURACY / 0\n")
    break2 = block("STEPS = 100\n", "STEPS = 100  # more steps later\n")  # same error again
    fake_llm.script([good, break1, break2, break1, "ALL_COMPLETED", NOTES])
    results = tmp_path / "results"
    assert run_agent(idea, results, fake=fake_llm) == 0
    ws = workspace_of(results)
    attempts = history.read_history(ws)
    assert [(a.run, a.status) for a in attempts] == [
        (0, "baseline"), (1, "success"), (2, "failed"), (2, "failed"), (2, "gate-failed"), (1, "notes")]
    restored = last_user(fake_llm.requests[3])
    assert "restored" in restored and "ZeroDivisionError" in restored
    assert "already failed" in last_user(fake_llm.requests[4]), "break1 re-sent: not run again"
    assert attempts[4].error == "this exact experiment.py already failed"
    assert "ACCURACY + 0.01" in (ws / "experiment.py").read_text(), "run 1's code is back"
    assert fake_llm.violations == []


def test_reply_without_edits_gets_a_reminder(fake_llm, idea, tmp_path):
    fake_llm.script(["I think we should try something.", FIX_ERROR.replace("ACCURACY / 0", "ACCURACY"),
                     "ALL_COMPLETED", NOTES])
    results = tmp_path / "results"
    assert run_agent(idea, results, fake=fake_llm) == 0
    assert "changed nothing in experiment.py" in last_user(fake_llm.requests[1])
    statuses = [a.status for a in history.read_history(workspace_of(results))]
    assert statuses == ["baseline", "no-edits", "success", "notes"]


def test_provider_error_stops_cleanly_with_its_words(fake_llm, idea, tmp_path, capsys):
    from fake_llm import error
    fake_llm.script([error(400, "Model Not Exist")])
    results = tmp_path / "results"
    assert run_agent(idea, results, fake=fake_llm) == 1
    out = capsys.readouterr()
    assert "Model Not Exist" in out.out + out.err
    ws = workspace_of(results)
    assert [a.status for a in history.read_history(ws)] == ["baseline"]
    transcript = json.loads((ws / "transcript.json").read_text())
    assert transcript["messages"][-1]["role"] == "user", "no dangling assistant turn"


def test_missing_key_is_reported_before_any_workspace(idea, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    results = tmp_path / "results"
    code = main(["run", str(idea), "--results", str(results), "--model", "anthropic/claude-3-5-sonnet-20240620"])
    assert code == 2 and "ANTHROPIC_API_KEY" in capsys.readouterr().err
    assert not results.exists()


def test_offline_replay_when_no_model_is_configured(idea, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("AGENT_MODEL", raising=False)
    replies = [PLANT_ERROR, FIX_ERROR, "ALL_COMPLETED", NOTES]
    idea.with_name("mini_idea.replay.json").write_text(json.dumps({"model": "reference", "replies": replies}))
    results = tmp_path / "results"
    assert run_agent(idea, results) == 0
    assert "offline replay — no LLM is called" in capsys.readouterr().out
    attempts = history.read_history(workspace_of(results))
    assert [a.status for a in attempts] == ["baseline", "failed", "success", "notes"]
    assert attempts[1].model.startswith("replay:") and attempts[1].model.endswith("mini_idea.replay.json")


def test_baseline_is_cached_per_template_and_profile(fake_llm, idea, tmp_path):
    fake_llm.script(["ALL_COMPLETED"] * 4)   # an idea not tried: refused once, then taken
    results = tmp_path / "results"
    assert run_agent(idea, results, "--max-runs", "1", fake=fake_llm) == 0
    time.sleep(1.1)  # workspaces are named by the second
    assert run_agent(idea, results, "--max-runs", "1", fake=fake_llm) == 0
    first, second = sorted(p for p in results.iterdir())
    bodies = [git.Repo(ws).commit(history.read_history(ws)[0].sha).message for ws in (first, second)]
    assert "baseline run of the unmodified template" in bodies[0]
    assert "cached baseline" in bodies[1]


def test_all_completed_before_the_idea_was_tried_is_refused_once(fake_llm, idea, tmp_path):
    """Qwen2.5-Coder 0.5B and 1.5B, run for real, both answered the first task with ALL_COMPLETED
    alone (the 0.5B after a reply with no edit). The coder is told the idea has not been tried."""
    fake_llm.script(["Here are the metrics I expect: f1 0.5.", "ALL_COMPLETED", PLANT_ERROR.replace(
        "ACCURACY / 0", "ACCURACY + 0.01"), NOTES])
    results = tmp_path / "results"
    assert run_agent(idea, results, "--max-runs", "1", fake=fake_llm) == 0
    ws = workspace_of(results)
    attempts = history.read_history(ws)
    assert [(a.run, a.status) for a in attempts] == [
        (0, "baseline"), (1, "no-edits"), (1, "no-edits"), (1, "success"), (1, "notes")], subjects(ws)
    assert "ALL_COMPLETED" not in last_user(fake_llm.requests[1])   # not offered before a try
    assert "not accepted" in last_user(fake_llm.requests[2]) and "before any code ran" in attempts[2].error
    assert fake_llm.violations == []


def test_untrained_baseline_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SAE_CACHE_DIR", str(tmp_path / "cache"))
    template = tmp_path / "untrained"
    import shutil
    shutil.copytree(MINI, template)
    exp = template / "experiment.py"
    exp.write_text(exp.read_text().replace("ACCURACY = 0.75", "ACCURACY = 0.5").replace("STEPS = 100", "STEPS = 0"))
    idea = tmp_path / "idea.md"
    idea.write_text(f"---\ntemplate: {template}\n---\n# T\n## Experiment\n1. x\n")
    idea.with_name("idea.replay.json").write_text(json.dumps({"replies": ["ALL_COMPLETED"]}))
    assert main(["run", str(idea), "--results", str(tmp_path / "results")]) == 1
    err = capsys.readouterr().err
    assert "looks untrained" in err and "Refusing to start" in err


def _spawn(args, env):
    return subprocess.Popen([sys.executable, "-m", "agent", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _wait_for(predicate, seconds=60.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


SLOW_RUN = "Run 1.\n\n" + block("def train():\n", "def train():\n    import time\n    time.sleep(120)\n")
UNSLOW = "Resumed: drop the sleep.\n\n" + block("    import time\n    time.sleep(120)\n",
                                                   "    accuracy_bonus = 0.02\n") + "\n" + block(
    "    accuracy = ACCURACY\n", "    accuracy = ACCURACY + accuracy_bonus\n")


@pytest.mark.parametrize("how", ["sigkill", "sigint"])
def test_stopped_mid_run_then_resumed_loses_nothing(fake_llm, idea, tmp_path, how, capsys):
    env = dict(os.environ, OPENAI_API_KEY="sk-fake", PYTHONUNBUFFERED="1")
    results = tmp_path / "results"
    fake_llm.script([SLOW_RUN])
    proc = _spawn(["run", str(idea), "--results", str(results), "--model", MODEL,
                   "--api-base", fake_llm.url, "--no-smoke"], env)
    try:
        assert _wait_for(lambda: results.exists() and any(results.glob("*/run_1/log.txt"))), "run 1 started"
        os.killpg(proc.pid, signal.SIGKILL if how == "sigkill" else signal.SIGINT)
        output, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    ws = workspace_of(results)
    if how == "sigint":
        assert proc.returncode == 130, output
        assert history.read_history(ws)[-1].status == "interrupted"

    fake_llm.script([UNSLOW, "ALL_COMPLETED", NOTES])
    code = main(["resume", str(ws), "--api-base", fake_llm.url, "--no-smoke"])  # in this process
    assert code == 0, "".join(capsys.readouterr())
    attempts = history.read_history(ws)
    assert [(a.run, a.status) for a in attempts] == [
        (0, "baseline"), (1, "interrupted"), (1, "success"), (1, "notes")]
    assert attempts[2].model == MODEL, "the recorded model is reused"
    assert "interrupted" in last_user(fake_llm.requests[1]).lower()
    assert fake_llm.violations == []
    assert "accuracy_bonus" in (ws / "experiment.py").read_text()


def test_a_run_that_writes_no_results_is_a_failure(fake_llm, idea, tmp_path):
    no_results = block("    write_results(args.out_dir, train(), STEPS)\n", "    train()\n")
    fake_llm.script([no_results, "ALL_COMPLETED"])
    results = tmp_path / "results"
    assert run_agent(idea, results, fake=fake_llm) == 0
    attempts = history.read_history(workspace_of(results))
    assert attempts[1].status == "failed" and "final_info.json" in attempts[1].error
    assert "final_info.json" in last_user(fake_llm.requests[1])


@pytest.mark.parametrize("box", ["bwrap", "staged"])
def test_a_run_cannot_modify_the_harness(fake_llm, idea, tmp_path, box):
    if box == "bwrap" and not sandbox.bwrap_works():
        pytest.skip("bubblewrap is not installed here (CI installs it)")
    tamper = block("def main():\n", "def main():\n    open('harness/__init__.py', 'a').write('# tampered\\n')\n")
    fake_llm.script([tamper, "ALL_COMPLETED"])
    results = tmp_path / "results"
    assert run_agent(idea, results, "--no-smoke", "--sandbox", box, fake=fake_llm) == 0
    ws = workspace_of(results)
    attempts = history.read_history(ws)
    assert "tampered" not in (ws / "harness" / "__init__.py").read_text()
    assert attempts[1].trailers.get("Sandbox") == box
    if box == "bwrap":   # the harness is read-only in the box: the write itself fails
        assert attempts[1].status == "failed" and "Read-only file system" in attempts[1].error
    else:                # the write went to a throw-away stage; the workspace's harness never changed
        assert attempts[1].status == "success"


def test_several_ideas_run_one_after_another_with_a_summary(fake_llm, idea, tmp_path, capsys):
    second = idea.with_name("second_idea.md")
    second.write_text(idea.read_text().replace("# Raise the accuracy", "# Lower the accuracy"))
    fake_llm.script([FIX_ERROR.replace("ACCURACY / 0", "ACCURACY"), "ALL_COMPLETED", NOTES,
                     "ALL_COMPLETED", "ALL_COMPLETED"])
    results = tmp_path / "results"
    code = main(["run", str(idea), str(second), "--results", str(results), "--model", MODEL,
                 "--api-base", fake_llm.url])
    assert code == 0
    out = capsys.readouterr().out
    assert "mini_idea" in out and "second_idea" in out and "ideas" in out
    names = sorted(p.name.split("_", 2)[2] for p in results.iterdir())
    assert names == ["mini_idea", "second_idea"]


def test_no_model_and_no_recorded_replies_says_what_to_do(idea, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("AGENT_MODEL", raising=False)
    results = tmp_path / "results"
    assert main(["run", str(idea), "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert "--model" in err and "AGENT_MODEL" in err and "replay" in err
    assert not results.exists()


def test_unknown_profile_is_refused_before_any_workspace(fake_llm, idea, tmp_path, capsys):
    results = tmp_path / "results"
    assert run_agent(idea, results, "--profile", "huge", fake=fake_llm) == 2
    err = capsys.readouterr().err
    assert "no profile 'huge'" in err and "choose one of: tiny" in err
    assert not results.exists() and fake_llm.requests == []
