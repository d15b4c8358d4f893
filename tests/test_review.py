"""log / show / replay / report on a workspace whose attempts really ran.

The fixture builds a workspace the way the loop does: a template (template.json, experiment.py,
plot.py), a baseline run, a failed attempt and its fix, each run with agent.runner and committed
with history.commit_attempt, the transcript saved by agent.conversation at every commit.
"""

import hashlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import git
import numpy as np
import pytest
from rich.console import Console

from agent import cli, history, review, runner
from agent.attempt import Status
from agent.conversation import Conversation
from agent.process import RunStatus
from mini import MINI

SAE = "tiny-model/blocks.3.hook_resid_post"

EXPERIMENT = '''\
import argparse, json, os

TOP_1 = {top1}


def build_trainer():
    class Trainer:
        pass
    trainer = Trainer()
    {trainer_line}
    return trainer


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out_dir", required=True)
    out_dir = parser.parse_args().out_dir
    profile = os.environ.get("SAE_PROFILE") or json.load(open("profile.json"))["profile"]
    trainer = build_trainer()
    print("training with", trainer.ae)
    shift = float(os.environ.get("SAE_TEST_SHIFT", "0"))
    if os.environ.get("SAE_SMOKE"):
        print("smoke run")
    steps = 100 if profile == "tiny" else 5000
    info = {{"{sae}": {{
        "eval_type_id": "sparse_probing",
        "eval_result_metrics": {{"sae": {{"sae_top_1_test_accuracy": TOP_1 + shift,
                                          "sae_test_accuracy": 0.9}}}},
        "core_metrics": {{"l0": 30.0, "explained_variance": 0.8, "frac_dead": 0.01}},
        "training": {{"training_steps": steps}}}}}}
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "final_info.json"), "w") as f:
        json.dump(info, f)


if __name__ == "__main__":
    main()
'''

PLOT = '''\
import json, glob
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
runs = sorted(glob.glob("run_*/final_info.json"))
values = [list(json.load(open(p)).values())[0]["eval_result_metrics"]["sae"]["sae_top_1_test_accuracy"]
          for p in runs]
plt.bar(range(len(values)), values)
plt.savefig("top1.png")
'''

TEMPLATE = {"editable": ["experiment.py", "plot.py", "notes.txt"], "protected": [],
            "command": ["{python}", "experiment.py", "--out_dir={out_dir}"],
            "profiles": ["tiny", "cpu"], "default_profile": "tiny", "smoke_profiles": [],
            "env_allow": {"tiny": ["SAE_TEST_SHIFT"]}}   # the tolerance test's knob reaches the replay


def experiment(top1: float, works: bool = True) -> str:
    line = "trainer.ae = 'sae'" if works else "pass  # the LLM forgot to set trainer.ae"
    return EXPERIMENT.format(top1=top1, trainer_line=line, sae=SAE)


class Builder:
    """Writes, runs and commits attempts like the loop does."""

    def __init__(self, path: Path):
        self.path = path
        self.conv = Conversation("You are an SAE researcher.")

    def attempt(self, run: int, attempt: int, code: str | None, reply: str | None,
                status: str | None = None, cost: float = 0.01) -> str:
        if code is not None:
            (self.path / "experiment.py").write_text(code)
        if reply is not None:
            self.conv.add_assistant(reply)
        out_dir = f"run_{run}"
        error, seconds = None, 0.0
        if status is None:
            result = runner.run_experiment(self.path, out_dir, timeout=60,
                                           extra_env={"SAE_PROFILE": "tiny"})
            status = ("baseline" if run == 0 else "success") if result.status == RunStatus.OK else "failed"
            error, seconds = result.error, result.duration
        self.conv.save(self.path)
        trailers = {"Run": str(run), "Attempt": str(attempt), "Status": status,
                    "Model": "openai/fake", "Profile": "tiny", "Duration": f"{seconds:.1f}s"}
        if run:
            trailers.update({"Cost": f"${cost:.4f}", "Tokens": "1000"})
        if error:
            trailers["Error"] = error
        subject = f"run {run} attempt {attempt}: {status}" + (f" — {error}" if error else "")
        sha = history.commit_attempt(self.path, subject=subject, trailers=trailers)
        return sha

    def user(self, text: str) -> None:
        self.conv.add_user(text)


@pytest.fixture
def workspace(tmp_path) -> Path:
    ws = tmp_path / "results" / "20250101_000000_tiny_idea"
    history.init_repo(ws)
    (ws / "template.json").write_text(json.dumps(TEMPLATE))
    (ws / "plot.py").write_text(PLOT)
    (ws / "idea.md").write_text("# Tiny idea\n\nMake top-1 accuracy go up.\n")
    (ws / "profile.json").write_text('{"profile": "tiny"}\n')
    (ws / "notes.txt").write_text("Run 1 raised top-1 by 0.05.\n")
    b = Builder(ws)
    b.user("Implement the tiny idea.")
    b.attempt(0, 1, experiment(0.70), None)
    b.attempt(1, 1, experiment(0.75, works=False),
              "I will raise TOP_1.\n\nexperiment.py\n```python\n<<<<<<< SEARCH\n...")
    b.user("Run 1 failed: AttributeError")
    b.attempt(1, 2, experiment(0.75), "Set trainer.ae so the run can finish.")
    b.user("Run 1 completed.")
    b.attempt(2, 1, None, "experiment.py\n```python\nthis does not compile", status="gate-failed")
    return ws


def said(text: str) -> str:
    """What the user read, with rich's line wrapping undone."""
    return " ".join(text.split())


def wide() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=220, color_system=None), buffer


def snapshot(ws: Path) -> dict:
    """Everything a user could notice changing: files, HEAD, branch, status, worktrees."""
    repo = git.Repo(ws)
    files = {}
    for p in sorted(ws.rglob("*")):
        if p.is_file() and ".git" not in p.relative_to(ws).parts:
            files[str(p.relative_to(ws))] = (hashlib.sha256(p.read_bytes()).hexdigest(),
                                             p.stat().st_mtime_ns)
    return {"files": files, "head": repo.head.commit.hexsha, "branch": repo.active_branch.name,
            "status": repo.git.status("--porcelain"), "worktrees": repo.git.worktree("list"),
            "refs": sorted(r.path for r in repo.refs)}


# -- log ----------------------------------------------------------------------------------

def test_log_table_shows_metrics_change_against_run_0(workspace):
    console, out = wide()
    assert review.log(workspace, console=console) == 0
    text = out.getvalue()
    row = {tuple(ln.split()[:3]): ln for ln in text.splitlines() if len(ln.split()) >= 3}
    assert "0.700" in row[("0", "1", "baseline")]
    assert "0.750 +0.050" in row[("1", "2", "success")]
    assert "AttributeError: 'Trainer' object has no attribute 'ae'" in row[("1", "1", "failed")]
    assert "gate-failed" in text
    assert "cost $0.0300" in text  # three LLM replies at $0.01


def test_log_on_a_narrow_terminal_lists_errors_under_the_table(workspace):
    buffer = io.StringIO()
    terminal = Console(file=buffer, width=110, color_system=None, force_terminal=True)
    assert review.log(workspace, console=terminal) == 0
    text = buffer.getvalue()
    assert "1.1: AttributeError: 'Trainer' object has no attribute 'ae'" in text
    assert max(len(ln) for ln in text.splitlines()) <= 110


def test_log_through_a_pipe_crops_nothing(workspace, capsys, monkeypatch):
    """`agent log WS | grep` with no COLUMNS: whole commits and errors, one row a line."""
    monkeypatch.delenv("COLUMNS", raising=False)
    ws_error = "AttributeError: 'Trainer' object has no attribute 'ae'"
    assert cli.main(["log", str(workspace)]) == 0
    out = capsys.readouterr().out
    failed = history.read_history(workspace)[1]
    rows = [ln for ln in out.splitlines() if failed.short_sha in ln]
    assert len(rows) == 1 and ws_error in rows[0] and "failed" in rows[0], out
    assert len(rows[0]) > 80, "wider than rich's default 80 columns, and not cropped"
    assert not any(ln.startswith("1.1: ") for ln in out.splitlines()), "the error is in its row"


def test_log_json_is_the_same_for_scripts(workspace, capsys):
    assert cli.main(["log", str(workspace), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [(a["run"], a["attempt"], a["status"]) for a in data["attempts"]] == [
        (0, 1, "baseline"), (1, 1, "failed"), (1, 2, "success"), (2, 1, "gate-failed")]
    success = data["attempts"][2]
    assert success["metrics"][SAE]["sae_top_1_test_accuracy"] == pytest.approx(0.75)
    assert success["delta_vs_run_0"][SAE]["sae_top_1_test_accuracy"] == pytest.approx(0.05)
    assert success["metrics"][SAE]["l0"] == 30.0
    assert data["attempts"][1]["error"].startswith("AttributeError")
    assert data["attempts"][1]["metrics"] == {}
    assert len(success["commit"]) == 40
    assert data["total_cost_usd"] == pytest.approx(0.03)


def test_log_works_on_a_clone(workspace, tmp_path, capsys):
    clone = tmp_path / "clone"
    git.Repo.clone_from(str(workspace), str(clone))
    assert cli.main(["log", str(clone), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["attempts"][2]["delta_vs_run_0"][SAE]["sae_top_1_test_accuracy"] == pytest.approx(0.05)


def commit_result(ws: Path, run: int, info: dict, seeds: list[dict]) -> None:
    """A run's final_info.json and the intervals.json the loop writes beside it, committed as the loop does."""
    from agent import results
    (ws / f"run_{run}").mkdir(parents=True, exist_ok=True)
    (ws / f"run_{run}" / "final_info.json").write_text(json.dumps(info))
    (ws / f"run_{run}" / "intervals.json").write_text(json.dumps(results.uncertainty_record(seeds, info)))
    status = "baseline" if run == 0 else "success"
    history.commit_attempt(ws, subject=f"run {run}: {status}",
                           trailers={"Run": str(run), "Attempt": "1", "Status": status, "Profile": "synth"})


@pytest.fixture
def synthetic_workspace(tmp_path, synthetic) -> tuple[Path, list[dict]]:
    """A synthetic world's baseline (3 seeds, as run_0 and its seeds) and a run with a better F1 at a higher L0."""
    ws = tmp_path / "results" / "20250101_000000_synth_idea"
    history.init_repo(ws)
    seeds = [synthetic(0.6, seed=s, mcc=0.80 + 0.01 * s, top1=0.70 + 0.01 * s) for s in range(3)]
    commit_result(ws, 0, seeds[0], seeds)
    commit_result(ws, 1, synthetic(0.85, seed=7, l0=40.0), seeds)
    return ws, seeds


def test_log_shows_the_baseline_as_its_seeds_mean_and_never_judges_l0(synthetic_workspace):
    ws, seeds = synthetic_workspace
    (key,) = seeds[0]
    console, out = wide()
    assert review.log(ws, console=console) == 0
    text = out.getvalue()
    header = next(ln for ln in text.splitlines() if ln.split()[:3] == ["run", "att", "status"])
    assert header.split()[4:8] == ["F1", "MCC", "top-1", "acc"], "the synthetic world's metrics first"
    row = {tuple(ln.split()[:3]): ln for ln in text.splitlines() if len(ln.split()) >= 3}
    base, run1 = row[("0", "1", "baseline")], row[("1", "1", "success")]
    f1 = [s[key]["eval_result_metrics"]["ground_truth"]["f1"] for s in seeds]
    assert f"{np.mean(f1):.3f} ± {np.std(f1, ddof=1):.3f}" in base
    assert "0.810 ± 0.010" in base and "0.710 ± 0.010" in base   # MCC, top-1
    assert f"{seeds[0][key]['eval_result_metrics']['ground_truth']['f1']:.3f}" not in base, "not seed 0's own"
    assert "its row: the mean ± sd of its 3 seeds" in said(text)
    assert run1.count("▲") == 1, "F1 is better; L0 rose from 20 to 40 and is no finding"
    assert "40.0 +20.0±0.0 " in run1 + " "


def test_show_of_the_baseline_gives_its_seeds_mean_and_the_ground_truth(synthetic_workspace):
    ws, _ = synthetic_workspace
    console, out = wide()
    assert review.show(ws, "0", console=console) == 0
    text = out.getvalue()
    assert "0.810 ± 0.010" in text and "uniqueness" in text
    assert "the mean ± sd of the baseline's 3 seeds" in said(text)


def test_report_shows_the_baseline_as_its_seeds_mean(synthetic_workspace, tmp_path):
    ws, seeds = synthetic_workspace
    out = tmp_path / "report.md"
    assert review.report(ws, console=wide()[0], out=out, run_plot=False) == 0
    text = out.read_text()
    assert "| run | attempt | status | F1 | MCC | top-1 acc |" in text
    (base,) = [ln for ln in text.splitlines() if ln.startswith("| 0 | 1 | baseline |")]
    assert "0.810 ± 0.010" in base
    assert "its row: the mean ± sd of its 3 seeds" in text


def test_final_split_lines_name_the_profiles_primary_metric(synthetic_workspace):
    from agent import results
    ws, seeds = synthetic_workspace
    current = json.loads((ws / "run_1" / "final_info.json").read_text())
    record = {"baseline_seeds": 3, "headline_metrics": ["f1", "mcc", "explained_variance"], "best_on_test": 1,
              "runs": {"1": results.uncertainty_record(seeds, current)}}
    (line,) = review.final_split_lines(json.dumps(record))[1:]
    assert line.startswith("- run 1 (best on the test split): f1 0.") and line.endswith("better)")


# -- show ---------------------------------------------------------------------------------

def test_show_failed_attempt_has_reply_diff_and_traceback(workspace):
    console, out = wide()
    assert review.show(workspace, "1.1", console=console) == 0
    text = out.getvalue()
    assert "I will raise TOP_1." in text
    assert "-TOP_1 = 0.7" in text and "+TOP_1 = 0.75" in text
    assert "Traceback (most recent call last)" in text
    assert "AttributeError: 'Trainer' object has no attribute 'ae'" in text
    assert "code diff against run 0 attempt 1" in text
    assert "Implement the tiny idea." not in text  # only what the LLM said for this attempt


def test_show_success_has_metrics_and_only_its_own_reply(workspace):
    console, out = wide()
    assert review.show(workspace, "1", console=console) == 0
    text = out.getvalue()
    assert "Set trainer.ae so the run can finish." in text
    assert "I will raise TOP_1." not in text
    assert "+    trainer.ae = 'sae'" in text
    assert "0.750 +0.050" in text
    assert "run_1/final_info.json" not in text  # run outputs are not part of the code diff


LONG_BULLET = ("- Run 1: the idea as specified: 90th-percentile similarity mask over |cos| of decoder "
               "directions, activation EMA with alpha = 0.9, gamma = 0.2 * (batch L0 fraction / target)")
LONG_CODE = "INHIBITION = dict(percentile=90, alpha=0.9, gamma=0.2, target_l0_fraction=0.02, every=10, cap=0.5)"


def test_show_through_a_pipe_crops_nothing(workspace, capsys, monkeypatch):
    """`agent show WS 1.1 | less` with no COLUMNS: the reply's long lines (a bullet, a SEARCH/REPLACE
    block), the diff's and the metrics table come out whole, one line each, as README promises."""
    monkeypatch.delenv("COLUMNS", raising=False)
    b = Builder(workspace)
    b.conv = Conversation.load(workspace)   # go on with the transcript the fixture committed
    b.user("Run 2 did not compile: fix it.")
    code = (workspace / "experiment.py").read_text() + f"\n{LONG_CODE}\n"
    reply = (f"Plan:\n{LONG_BULLET}\n\nexperiment.py\n```python\n<<<<<<< SEARCH\n    main()\n=======\n"
             f"    main()\n\n{LONG_CODE}\n>>>>>>> REPLACE\n```\n")
    b.attempt(3, 1, code, reply, status="gate-failed")
    assert cli.main(["show", str(workspace), "3.1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert LONG_BULLET in lines and LONG_CODE in lines, "the reply as written, not cropped at 80"
    assert f"+{LONG_CODE}" in lines, "the diff line whole"

    assert cli.main(["show", str(workspace), "1.2"]) == 0
    out = capsys.readouterr().out
    row = [ln for ln in out.splitlines() if SAE in ln]
    assert len(row) == 1 and "0.750 +0.050" in row[0] and "…" not in out, out
    assert "sae_top_1_test_accuracy" in out

    report = workspace.parent / "a report with a name long enough to pass eighty columns on its own.md"
    assert cli.main(["report", str(workspace), "--out", str(report)]) == 0
    wrote = capsys.readouterr().out.splitlines()
    assert wrote[0].startswith(f"wrote {report} (") and len(wrote) == 1, wrote   # `report`, whole too


# -- replay -------------------------------------------------------------------------------

def test_replay_of_a_failed_attempt_reproduces_its_error(workspace):
    before = snapshot(workspace)
    console, out = wide()
    assert review.replay(workspace, "1.1", console=console) == 0
    text = out.getvalue()
    assert "reproduced: same exception and frame (AttributeError @ experiment.py:main" in text
    assert snapshot(workspace) == before
    replays = list((workspace.parent / f"{workspace.name}.replays").iterdir())
    assert len(replays) == 1 and replays[0].name.startswith("run_1.1_")
    verdict = json.loads((replays[0] / "replay.json").read_text())
    assert verdict["reproduced"] is True
    assert verdict["recorded_signature"] == verdict["replay_signature"]
    assert (verdict["recorded_status"], verdict["replay_status"]) == ("failed", "failed")  # the enums' words
    assert (replays[0] / "run_1" / "log.txt").exists()          # the replay's own log
    assert (replays[0] / "run_1.recorded" / "log.txt").exists()  # beside the recorded one


def test_replay_of_a_success_matches_metrics_with_the_recorded_profile(workspace):
    console, out = wide()
    assert review.replay(workspace, "1", console=console) == 0
    text = out.getvalue()
    assert "reproduced: all 6 metrics within tolerance" in text
    assert "profile tiny" in text
    verdict = json.loads(next((workspace.parent / f"{workspace.name}.replays").glob("*/replay.json"))
                         .read_text())
    steps = [c for c in verdict["metric_checks"] if c["metric"] == "training_steps"][0]
    assert steps["replay"] == 100  # SAE_PROFILE=tiny reached the run (cpu would give 5000)


@pytest.mark.parametrize("shift, code, words", [
    ("0.01", 0, "reproduced: all 6 metrics within tolerance"),
    ("0.05", 1, "not reproduced: 1 of 6 metrics outside tolerance (sae_top_1_test_accuracy"),
])
def test_replay_states_its_tolerance(workspace, monkeypatch, shift, code, words):
    monkeypatch.setenv("SAE_TEST_SHIFT", shift)
    console, out = wide()
    assert review.replay(workspace, "1.2", console=console) == code
    assert words in out.getvalue()
    assert "±0.02 absolute" in out.getvalue()


def test_replay_tolerance_from_the_command_line_zero_included(workspace, monkeypatch, capsys):
    monkeypatch.setenv("SAE_TEST_SHIFT", "0.01")  # within the default ±0.02, not within ±0
    assert cli.main(["replay", str(workspace), "1.2", "--tolerance", "0"]) == 1
    out = capsys.readouterr().out
    assert "±0 absolute" in out and "not reproduced: 1 of 6 metrics outside tolerance" in out


def test_replay_of_a_failure_that_now_succeeds_says_so(workspace):
    repo = git.Repo(workspace)
    a = history.find_attempt(workspace, "1.1")
    from agent.review import ReplayVerdict, _judge_failure
    result = runner.RunResult(RunStatus.OK, 0, 1.0, "", None, None, None, Path("x"))
    v = ReplayVerdict(a.label, a.sha, False, "", "", "tiny", Status.FAILED, RunStatus.OK)
    _judge_failure(v, a, history.file_at(repo, a.sha, "run_1/log.txt"), result)
    assert not v.reproduced
    assert v.summary == "not reproduced: the recorded run failed, the replay succeeded"


def test_replay_leaves_a_dirty_work_tree_as_it_was(workspace):
    (workspace / "experiment.py").write_text("# being edited by hand\n")
    (workspace / "scratch.txt").write_text("mine")
    before = snapshot(workspace)
    console, _ = wide()
    assert review.replay(workspace, "1.1", console=console) == 0
    assert snapshot(workspace) == before


def test_replay_refuses_an_attempt_that_never_ran(workspace, capsys):
    before = snapshot(workspace)
    assert cli.main(["replay", str(workspace), "2.1"]) == 2
    err = said(capsys.readouterr().err)
    assert "never ran (status gate-failed)" in err and "0.1, 1.1, 1.2" in err
    assert snapshot(workspace) == before
    assert not (workspace.parent / f"{workspace.name}.replays").exists()


# -- report -------------------------------------------------------------------------------

def test_report_html_is_self_contained(workspace):
    console, out = wide()
    assert review.report(workspace, console=console) == 0
    path = workspace.parent / f"{workspace.name}.report.html"
    page = path.read_text()
    assert "<h1>Report: Tiny idea</h1>" in page
    assert "Make top-1 accuracy go up." in page
    assert "0.750 +0.050" in page
    assert 'src="data:image/png;base64,' in page  # plot.py ran in a scratch copy
    assert "Run 1 raised top-1 by 0.05." in page
    assert "$0.0300" in page
    assert "http" not in page.replace("http-equiv", "")  # nothing fetched from elsewhere
    assert not (workspace / "top1.png").exists()
    assert git.Repo(workspace).git.status("--porcelain") == ""


def test_report_markdown(workspace, tmp_path):
    console, _ = wide()
    out = tmp_path / "report.md"
    assert review.report(workspace, console=console, out=out) == 0
    text = out.read_text()
    assert text.startswith("# Report: Tiny idea")
    assert "| 1 | 2 | success | 0.750 +0.050 |" in text
    assert "![top1.png](data:image/png;base64," in text


def test_report_when_plot_py_fails(workspace, tmp_path):
    (workspace / "plot.py").write_text("raise RuntimeError('no data')\n")
    history.commit_attempt(workspace, subject="notes", trailers={"Run": "1", "Attempt": "2",
                                                                 "Status": "notes"})
    console, out = wide()
    assert review.report(workspace, console=console, out=tmp_path / "r.html") == 0
    assert "plot.py failed: RuntimeError: no data" in (tmp_path / "r.html").read_text()


# -- bad input ----------------------------------------------------------------------------

@pytest.mark.parametrize("argv, words", [
    (["log", "{tmp}"], "is not a workspace: no git repository"),
    (["show", "{ws}", "7"], "run 7 does not exist"),
    (["show", "{ws}", "1.9"], "run 1 has no attempt 9; it has: 1.1, 1.2"),
    (["replay", "{ws}", "3"], "run 3 does not exist"),
    (["report", "{ws}/run_1"], "is not a workspace"),
])
def test_bad_input_exits_2_with_a_message_and_changes_nothing(workspace, tmp_path, capsys,
                                                              argv, words):
    before = snapshot(workspace)
    argv = [a.format(ws=workspace, tmp=tmp_path / "elsewhere") for a in argv]
    (tmp_path / "elsewhere").mkdir(exist_ok=True)
    assert cli.main(argv) == 2
    assert words in said(capsys.readouterr().err)
    assert snapshot(workspace) == before


def test_cli_entry_point_runs_as_a_module(workspace):
    """`python -m agent log WORKSPACE` in a fresh process, as a user types it."""
    done = subprocess.run([sys.executable, "-m", "agent", "log", str(workspace), "--json"],
                          capture_output=True, text=True, cwd=Path(__file__).parent.parent,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["attempts"]) == 4


# -- a workspace made by the loop itself (strict loopback provider, real runs) -----------



def edit_block(search: str, replace: str, path: str = "experiment.py") -> str:
    return f"{path}\n```python\n<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n```\n"


@pytest.fixture
def loop_workspace(fake_llm, tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SAE_CACHE_DIR", str(tmp_path / "cache"))
    idea = tmp_path / "ideas" / "mini_idea.md"
    idea.parent.mkdir()
    idea.write_text(f"---\ntemplate: {MINI}\nmax_runs: 1\n---\n# Raise the accuracy\n\n"
                    "## Experiment\n1. Raise it.\n")
    fake_llm.script([
        "Run 1: divide.\n\n" + edit_block("    accuracy = ACCURACY", "    accuracy = ACCURACY / 0"),
        "Fix the division.\n\n" + edit_block("    accuracy = ACCURACY / 0", "    accuracy = ACCURACY + 0.05"),
        "Notes.\n\n" + edit_block("# Notes", "# Notes\nRun 1 raised top-1 by 0.05.", "notes.txt"),
    ])
    results = tmp_path / "results"
    cli.main(["run", str(idea), "--results", str(results), "--model", "openai/deepseek-reasoner",
              "--api-base", fake_llm.url])
    (ws,) = [p for p in results.iterdir() if p.is_dir()]
    return ws


def test_review_commands_on_a_workspace_the_loop_made(loop_workspace, capsys):
    ws = loop_workspace
    capsys.readouterr()
    assert cli.main(["log", str(ws), "--json"]) == 0
    attempts = json.loads(capsys.readouterr().out)["attempts"]
    statuses = [(a["run"], a["attempt"], a["status"]) for a in attempts]
    assert statuses[:3] == [(0, 1, "baseline"), (1, 1, "failed"), (1, 2, "success")]
    assert attempts[1]["error"].startswith("ZeroDivisionError")
    assert attempts[2]["delta_vs_run_0"][
        "mini-model/blocks.0.hook_resid_post"]["sae_top_1_test_accuracy"] == pytest.approx(0.05)

    console, out = wide()
    assert review.show(ws, "1.1", console=console) == 0
    text = out.getvalue()
    assert "Run 1: divide." in text and "+    accuracy = ACCURACY / 0" in text
    assert "ZeroDivisionError" in text and "Traceback (most recent call last)" in text

    before = snapshot(ws)
    console, out = wide()
    assert review.replay(ws, "1.1", console=console) == 0
    assert "reproduced: same exception and frame (ZeroDivisionError @ experiment.py:train" in out.getvalue()
    console, out = wide()
    assert review.replay(ws, "1", console=console) == 0
    assert "reproduced: all" in out.getvalue()
    assert snapshot(ws) == before

    console, out = wide()
    assert review.report(ws, console=console) == 0
    page = (ws.parent / f"{ws.name}.report.html").read_text()
    assert "Raise the accuracy" in page and "Run 1 raised top-1 by 0.05." in page


# -- every status has a look --------------------------------------------------------------

def test_every_status_is_coloured_in_log_and_in_the_report(workspace):
    """A status added to Status without a style here fails: `log` would print it plain."""
    b = Builder(workspace)
    for i, status in enumerate(Status, start=1):
        b.attempt(3, i, None, None, status=status)
    buffer = io.StringIO()
    terminal = Console(file=buffer, width=220, color_system="standard", force_terminal=True)
    assert review.log(workspace, console=terminal) == 0
    out = buffer.getvalue()
    for status in Status:
        assert status in review.STATUS_STYLE and status in review.STATUS_CSS, status
        # the word (padded to the column's width) between a colour's escape sequence and the reset
        assert re.search(rf"\x1b\[[0-9;]+m{re.escape(status)} *\x1b\[0m", out), f"{status} is not coloured"
    assert review.report(workspace, console=wide()[0]) == 0
    page = (workspace.parent / f"{workspace.name}.report.html").read_text()
    for status in Status:
        assert f'<span class="{status}">' in page
        assert re.search(rf"\.{re.escape(status)}\{{color:#[0-9a-f]+\}}", page), f"no CSS for {status}"
