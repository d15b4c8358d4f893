"""The staged fallback box and its bookkeeping under hostile runs (faults a held-out suite found).

Each case plants its fault for real: a run through the loop and the strict loopback server that
leaves a file name that is not UTF-8 or bytecode Python would trust in the workspace, the `run`
command's warning about the box, and a stage folder left by an agent killed with SIGKILL.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import git
import pytest

from agent import execution, history, sandbox
from agent.cli import main
from agent.template import load_template
from mini import NOTES, last_user, run_agent, workspace_of
from test_tamper import GOOD, assert_history_sound, hostile, log_json

BAD = b"bad_\xff_name.txt"


@pytest.fixture(autouse=True)
def _staged_box(monkeypatch):
    monkeypatch.setenv("AGENT_SANDBOX", "staged")


def _bad_names_attack(results: Path) -> str:
    """A run that makes a file whose name is not UTF-8 in the workspace and in its run folder."""
    attack, _ = hostile(results,
                        f"open(os.path.join(os.fsencode(ws), {BAD!r}), 'wb').write(b'planted')",
                        "os.makedirs('run_1', exist_ok=True)",
                        "open(os.path.join(b'run_1', b'out_\\xfe.txt'), 'wb').write(b'made by the run')")
    return attack


def test_a_file_name_that_is_not_utf8_fails_the_attempt_truthfully_and_loses_nothing(fake_llm, idea, tmp_path, capsys):
    results = tmp_path / "results"
    fake_llm.script([_bad_names_attack(results), "ALL_COMPLETED"])
    assert run_agent(idea, results, "--no-smoke", fake=fake_llm) == 0
    ws = workspace_of(results)

    rows = log_json(ws, capsys)
    assert [(r["run"], r["status"]) for r in rows] == [(0, "baseline"), (1, "failed")]
    attempt = history.read_history(ws)[1]
    assert "bad_\\xff_name.txt (created by the run; removed)" in attempt.trailers["Tampered"]
    assert "bad_\\xff_name.txt" in last_user(fake_llm.requests[1]), "the coder is told"
    assert not os.path.lexists(os.fsencode(ws) + b"/" + BAD), "outside its run folder: removed"
    # In its run folder the file is the run's output: committed with the attempt, name as it is.
    tree = git.Repo(ws).git.ls_tree("-r", "-z", "--name-only", attempt.sha, "run_1").split("\0")
    assert os.fsdecode(b"run_1/out_\xfe.txt") in tree
    json.loads((ws / "transcript.json").read_text(encoding="utf-8"))
    assert main(["show", str(ws), "1.1"]) == 0
    assert main(["report", str(ws), "--out", str(tmp_path / "r.md")]) == 0
    assert_history_sound(ws)


def test_a_name_left_between_sessions_is_committed_on_resume_and_bytecode_removed(fake_llm, idea, tmp_path):
    results = tmp_path / "results"
    fake_llm.script([GOOD, "ALL_COMPLETED", NOTES])
    assert run_agent(idea, results, "--no-smoke", fake=fake_llm) == 0
    ws = workspace_of(results)
    done = len(history.read_history(ws))
    with open(os.fsencode(ws) + b"/" + BAD, "wb") as f:   # what a run killed with the agent leaves
        f.write(b"left by a killed run")
    (ws / "harness" / "__pycache__").mkdir()
    (ws / "harness" / "__pycache__" / "__init__.cpython-311.pyc").write_bytes(b"planted")

    fake_llm.script(["ALL_COMPLETED", NOTES])
    assert main(["resume", str(ws), "--api-base", fake_llm.url, "--no-smoke"]) == 0
    found = history.read_history(ws)[done]
    assert found.status == "interrupted" and "found uncommitted" in found.subject
    assert os.fsdecode(BAD) in git.Repo(ws).git.ls_tree("-z", "--name-only", found.sha).split("\0")
    assert not (ws / "harness" / "__pycache__").exists()
    assert_history_sound(ws)


PLANT_BYTECODE = [
    "import importlib.util, importlib._bootstrap_external as bx",
    "src = os.path.join(ws, 'harness', '__init__.py')",
    "info = os.stat(src)",
    "code = compile(open(src).read() + '\\nopen(os.environ[\"PLANTED_MARKER\"], \"w\").write(\"ran\")\\n', src, 'exec')",
    "os.makedirs(os.path.dirname(importlib.util.cache_from_source(src)), exist_ok=True)",
    "open(importlib.util.cache_from_source(src), 'wb').write(bx._code_to_timestamp_pyc(code, info.st_mtime, info.st_size))",
    "stray = compile('open(__import__(\"os\").environ[\"PLANTED_MARKER\"], \"w\").write(\"ran\")', 'stray', 'exec')",
    "open(os.path.join(ws, 'stray_module.pyc'), 'wb').write(bx._code_to_timestamp_pyc(stray, 0, 0))",
]


def _imports_run_planted_code(ws: Path, marker: Path) -> bool:
    env = {**os.environ, "PLANTED_MARKER": str(marker)}
    for module in ("harness", "stray_module"):
        subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ws, env=env, capture_output=True)
    return marker.exists()


def test_bytecode_a_run_plants_is_removed_and_named(fake_llm, idea, tmp_path, capsys):
    results = tmp_path / "results"
    attack, _ = hostile(results, *PLANT_BYTECODE)
    fake_llm.script([attack, "ALL_COMPLETED", NOTES])
    assert run_agent(idea, results, "--no-smoke", fake=fake_llm) == 0
    ws = workspace_of(results)

    tampered = history.read_history(ws)[1].trailers["Tampered"]
    assert "harness/__pycache__/__init__.cpython" in tampered and "stray_module.pyc" in tampered
    assert not list(ws.rglob("*.pyc")) and not list(ws.rglob("__pycache__"))
    assert not _imports_run_planted_code(ws, tmp_path / "planted-ran"), "a person's import ran the run's code"
    assert_history_sound(ws)


def test_the_planted_bytecode_is_what_python_would_run(tmp_path):
    """The attack above is real: left in place, that bytecode runs on `import harness`."""
    ws = tmp_path / "results" / "x_mini_idea"
    (ws / "harness").mkdir(parents=True)
    (ws / "harness" / "__init__.py").write_text("VALUE = 1\n")
    lines = ["import glob, os", f"ws = {str(ws)!r}", *PLANT_BYTECODE]
    subprocess.run([sys.executable, "-c", "\n".join(lines)], check=True)
    assert _imports_run_planted_code(ws, tmp_path / "planted-ran")


# -- the warning ----------------------------------------------------------------------------

def _warning(path: str, requested: str | None = "staged") -> str:
    code = f"from agent import launch; launch.box_for({requested!r})"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PATH": path},
                         capture_output=True, text=True, check=True)
    return " ".join(out.stderr.split())


@pytest.mark.skipif(not sandbox.bwrap_works(), reason="bubblewrap is not installed here")
def test_choosing_staged_where_bwrap_works_says_so_and_nothing_false(tmp_path):
    said = _warning(os.environ["PATH"])
    assert "bubblewrap is not available" not in said
    assert "--sandbox staged" in said and "bubblewrap works here" in said
    # Asked for through the environment (this file's fixture): said so, and the way back is the
    # flag, which wins over it, not "the default" the variable has replaced.
    said = _warning(os.environ["PATH"], None)
    assert "AGENT_SANDBOX=staged" in said and "(--sandbox bwrap)" in said and "default" not in said
    no_bwrap = tmp_path / "bin"   # a PATH without bwrap: then it is true, and said
    no_bwrap.mkdir()
    assert "bubblewrap is not available" in _warning(str(no_bwrap))


# -- stages of a killed agent ---------------------------------------------------------------

def _dead_pid() -> tuple[int, float]:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    started = sandbox._started(proc.pid)
    proc.wait()
    return proc.pid, started


def _stage(stages: Path, name: str, owner: dict | None) -> Path:
    stage = stages / name
    (stage / "run_1").mkdir(parents=True)
    (stage / "experiment.py").write_text("print('staged')\n")
    if owner is not None:
        (stage / sandbox.OWNER_FILE).write_text(json.dumps(owner))
    return stage


def test_stale_stages_go_and_live_ones_stay(tmp_path, monkeypatch):
    monkeypatch.setenv("SAE_CACHE_DIR", str(tmp_path / "cache"))
    stages = tmp_path / "cache" / execution.STAGE_FOLDER
    host = socket.gethostname()
    dead, dead_start = _dead_pid()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        kept = {
            "live": _stage(stages, "ws-run_1-train-live", {"host": host, "pid": live.pid,
                                                          "started": sandbox._started(live.pid)}),
            "other host": _stage(stages, "ws-run_1-train-far", {"host": host + "-elsewhere", "pid": dead,
                                                               "started": dead_start}),
            "slurm job": _stage(stages, "ws-run_1-train-job", {"host": host, "slurm_job": "123"}),
            "no owner yet": _stage(stages, "ws-run_1-train-new", None),
        }
        gone = [_stage(stages, "ws-run_1-train-dead", {"host": host, "pid": dead, "started": dead_start}),
                _stage(stages, "ws-run_1-train-reused", {"host": host, "pid": live.pid,   # pid reused since
                                                         "started": sandbox._started(live.pid) - 1000})]
        mine = sandbox.new_stage(stages, "ws-run_2-train")
        execution.Pipeline(tmp_path, load_template(Path(__file__).parent / "data" / "mini_template"), "tiny",
                           protected={}, box="staged")
        assert [p for p in gone if p.exists()] == []
        assert {k: p for k, p in kept.items() if not p.exists()} == {}
        assert mine.exists(), "this process's own stage"
    finally:
        live.kill()
        live.wait()


AGENT = """
import sys
from pathlib import Path
from agent import execution
from agent.template import load_template
ws = Path(sys.argv[1])
template = load_template(ws)
execution.Pipeline(ws, template, "tiny", protected=execution.protected_from_template(template),
                   box="staged", timeout=120).run("run_1")
"""


def test_the_stage_of_an_agent_killed_with_sigkill_is_removed_at_the_next_start(tmp_path, monkeypatch):
    monkeypatch.setenv("SAE_CACHE_DIR", str(tmp_path / "cache"))
    stages = tmp_path / "cache" / execution.STAGE_FOLDER
    ws = tmp_path / "ws"
    (ws / "harness").mkdir(parents=True)
    (ws / "harness" / "__init__.py").write_text("")
    (ws / "template.json").write_text(json.dumps({"protected": ["harness/"], "profiles": ["tiny"]}))
    (ws / "experiment.py").write_text("import time; print('training', flush=True); time.sleep(120)\n")
    agent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(AGENT), str(ws)],
                             cwd=Path(__file__).parents[1], env=dict(os.environ))
    deadline = time.monotonic() + 60
    while not (ws / "run_1" / "log.txt").is_file() or "training" not in (ws / "run_1" / "log.txt").read_text():
        assert time.monotonic() < deadline and agent.poll() is None, "the run never started"
        time.sleep(0.1)
    (left,) = list(stages.iterdir())
    os.kill(agent.pid, signal.SIGKILL)
    agent.wait()
    assert left.is_dir(), "nothing cleans up after SIGKILL itself"

    template = load_template(ws)
    execution.Pipeline(ws, template, "tiny", protected={}, box="staged")
    assert not left.exists()


def test_undecodable_names_in_git_itself_are_named_safely_in_the_commit(tmp_path, caplog):
    """A hook, a branch and a lock whose names are not UTF-8: put back, named, the attempt committed."""
    ws = tmp_path / "ws"
    history.init_repo(ws)
    (ws / "a.txt").write_text("a\n")
    history.commit_attempt(ws, subject="run 0: baseline", trailers={"Run": "0", "Status": "baseline"})
    git_dir = os.fsencode(ws / ".git")
    with open(git_dir + b"/hooks/post-commit-\xff", "wb") as f:
        f.write(b"#!/bin/sh\nexit 0\n")
    with open(git_dir + b"/refs/heads/lock-\xfe.lock", "wb") as f:
        f.write(b"")
    with open(git_dir + b"/HEAD", "wb") as f:
        f.write(b"ref: refs/heads/evil-\xfd\n")
    history.commit_attempt(ws, subject="run 1 attempt 1: failed", trailers={"Run": "1", "Status": "failed"})
    tampered = history.read_history(ws)[-1].trailers["Tampered"]
    assert "hooks/post-commit-\\xff" in tampered and "HEAD switched to evil-\\xfd" in tampered
    assert "lock-\\xfe.lock" in caplog.text, "a lock before a commit is the agent's own: logged"
    assert_history_sound(ws)


def test_untracked_files_are_read_one_path_per_entry(tmp_path):
    """gitpython's untracked list, read NUL-separated: a name that is not UTF-8 reads as os.fsdecode
    gives it, and the old name of a staged rename is never taken for an untracked file."""
    ws = tmp_path / "ws"
    history.init_repo(ws)
    (ws / "?? looks untracked").write_text("a\n")
    history.commit_attempt(ws, subject="run 0: baseline", trailers={"Run": "0", "Status": "baseline"})
    repo = history.repo_at(ws)
    repo.git.mv("?? looks untracked", "renamed.txt")
    assert repo.untracked_files == []
    with open(os.fsencode(ws) + b"/" + BAD, "wb") as f:
        f.write(b"x")
    assert repo.untracked_files == [os.fsdecode(BAD)]
