"""agent/runner.py (and agent/failures.py on what it captured) against real subprocesses: small
experiment.py files written to tmp_path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import pytest

from agent.failures import content_hash, feedback_text, files_in_traceback, parse_failure
from agent.process import RunResult, RunStatus
from agent.runner import run_experiment, scrubbed_env
from procs import alive

REPO = Path(__file__).resolve().parent.parent

# The bug an older tool ran nine times in a row (seed 001): same file, same traceback.
SEED_TRACEBACK = """\
Traceback (most recent call last):
  File "/gpfs/project/results/20250124_070037_final_orthogonal_sae/experiment.py", line 707, in <module>
    saes.append(run_sae_training(
                ^^^^^^^^^^^^^^^^^
  File "/gpfs/project/results/20250124_070037_final_orthogonal_sae/experiment.py", line 454, in run_sae_training
    "model_state_dict": trainer.ae.state_dict(),
                        ^^^^^^^^^^
AttributeError: 'CustomTrainer' object has no attribute 'ae'
"""

# A grandchild that ignores SIGTERM and reports its pid: only a SIGKILL to the group removes it.
SPAWN_STUBBORN_GRANDCHILD = """
import os, signal, subprocess, sys, time
grandchild = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"])
open("grandchild.pid", "w").write(str(grandchild.pid))
"""


@pytest.fixture
def workspace(tmp_path: Path):
    """A workspace whose experiment.py is whatever the test writes."""
    def write(code: str) -> Path:
        (tmp_path / "experiment.py").write_text(textwrap.dedent(code))
        return tmp_path
    yield write
    # A failing test must not leave a grandchild sleeping on this shared box.
    pid_file = tmp_path / "grandchild.pid"
    if pid_file.exists() and alive(int(pid_file.read_text())):
        os.kill(int(pid_file.read_text()), signal.SIGKILL)


def grandchild_pid(ws: Path) -> int:
    return int((ws / "grandchild.pid").read_text())


def wait_gone(pid: int, seconds: float = 3.0) -> bool:
    deadline = time.monotonic() + seconds
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


# --------------------------------------------------------------------------- failures

def test_failing_run_gives_error_signature_and_traceback(workspace):
    ws = workspace("""
        print("training layer 3")
        class CustomTrainer:
            pass
        def run_sae_training():
            trainer = CustomTrainer()
            return trainer.ae.state_dict()
        run_sae_training()
    """)
    result = run_experiment(ws, "run_1")

    assert result.status == RunStatus.FAILED and result.returncode == 1
    assert result.error == "AttributeError: 'CustomTrainer' object has no attribute 'ae'"
    assert result.signature.startswith("AttributeError @ experiment.py:run_sae_training")
    assert result.traceback.startswith("Traceback (most recent call last):")
    assert 'experiment.py", line 7, in run_sae_training' in result.traceback
    log = (ws / "run_1" / "log.txt").read_text()
    assert "training layer 3" in log and result.error in log

    feedback = feedback_text(result)
    assert feedback.startswith("Run failed with the following error: AttributeError")
    assert "training layer 3" in feedback
    assert str(ws) not in feedback  # paths are shown relative to the workspace


def test_signature_survives_unrelated_edits_but_not_a_different_bug():
    _, error, signature = parse_failure(SEED_TRACEBACK)
    assert error == "AttributeError: 'CustomTrainer' object has no attribute 'ae'"
    assert signature == ("AttributeError @ experiment.py:run_sae_training"
                         " | 'CustomTrainer' object has no attribute 'ae'")

    # Lines added above the bug move it; it is still the same failure.
    moved = SEED_TRACEBACK.replace("line 707", "line 731").replace("line 454", "line 470")
    assert parse_failure(moved)[2] == signature
    # Same exception in another function, or for another attribute: a different failure.
    elsewhere = SEED_TRACEBACK.replace("in run_sae_training", "in evaluate")
    assert parse_failure(elsewhere)[2] != signature
    other_attr = SEED_TRACEBACK.replace("attribute 'ae'", "attribute 'sae'")
    assert parse_failure(other_attr)[2] != signature


def test_signature_points_at_experiment_frame_not_library_and_ignores_shapes():
    def shape_error(rows: int) -> str:
        return textwrap.dedent(f"""\
            Traceback (most recent call last):
              File "/ws/experiment.py", line 80, in <module>
                main()
              File "/ws/experiment.py", line 40, in encode
                return self.W_enc @ x
              File "/venv/lib/python3.11/site-packages/torch/_tensor.py", line 12, in __matmul__
                return f(a, b)
            RuntimeError: mat1 and mat2 shapes cannot be multiplied ({rows}x2304 and 512x2304)
            """)
    signature = parse_failure(shape_error(128))[2]
    assert signature.startswith("RuntimeError @ experiment.py:encode |")
    # A changed batch size gives the same failure, not a new one.
    assert parse_failure(shape_error(256))[2] == signature


def test_last_of_chained_tracebacks_is_reported():
    output = SEED_TRACEBACK + textwrap.dedent("""
        During handling of the above exception, another exception occurred:

        Traceback (most recent call last):
          File "/ws/experiment.py", line 9, in save_results
            json.dump(info, f)
        TypeError: Object of type Tensor is not JSON serializable
        """)
    _, error, signature = parse_failure(output)
    assert error == "TypeError: Object of type Tensor is not JSON serializable"
    assert signature.startswith("TypeError @ experiment.py:save_results")


def test_files_in_traceback_names_the_editable_files_its_frames_pass_through():
    traceback = textwrap.dedent("""\
        Traceback (most recent call last):
          File "/tmp/stages/ws-run_1-train/experiment.py", line 40, in <module>
            main()
          File "/tmp/stages/ws-run_1-train/sub/plot.py", line 3, in draw
            plt.plot(x)
          File "/venv/lib/python3.11/site-packages/matplotlib/pyplot.py", line 9, in plot
            raise ValueError("x")
        ValueError: x
        """)
    names = ["experiment.py", "plot.py", "sub/plot.py", "notes.txt"]
    assert files_in_traceback(traceback, names) == ["experiment.py", "sub/plot.py"]  # not the library's pyplot.py
    assert files_in_traceback('  File "experiment.py", line 2\n    def f(:\nSyntaxError: x', names) == ["experiment.py"]
    assert files_in_traceback(None, names) == [] and files_in_traceback("no frames here", names) == []


def test_syntax_error_in_the_script_itself_is_parsed(workspace):
    # Python prints no "Traceback" header when the main script does not even compile.
    result = run_experiment(workspace("x = 1\ndef encode(:\n    pass\n"), "run_1")

    assert result.error == "SyntaxError: invalid syntax"
    assert result.signature.startswith("SyntaxError @ experiment.py:<module>")
    assert 'experiment.py", line 2' in result.traceback
    assert feedback_text(result).count("def encode(:") == 1  # the traceback is not shown twice


def test_failures_without_traceback_still_say_what_happened(workspace):
    exited = run_experiment(workspace('import sys; sys.exit("no activations cached")'), "run_1")
    assert exited.status == RunStatus.FAILED
    assert exited.error == "Exit code 1: no activations cached"

    killed = run_experiment(workspace("import os, signal; os.kill(os.getpid(), signal.SIGKILL)"),
                            "run_2")
    assert killed.status == RunStatus.FAILED and killed.returncode == -signal.SIGKILL
    assert killed.error.startswith("Killed by SIGKILL")


def test_feedback_stays_within_limit_and_keeps_the_error(workspace):
    ws = workspace("""
        for step in range(20000):
            print(f"step {step} loss 0.123456")
        raise ValueError("learning rate must be positive")
    """)
    result = run_experiment(ws, "run_1")
    feedback = feedback_text(result, limit=2000)

    assert len(feedback) <= 2000
    assert feedback.rstrip().endswith("ValueError: learning rate must be positive")
    assert "step 19999" in feedback  # the output just before the error, not the start


# --------------------------------------------------------------------------- success, output

def test_successful_run_streams_lines_in_order_with_agents_interpreter(workspace):
    ws = workspace("""
        import sys
        print("out 1")
        print("err 2", file=sys.stderr)
        print("out 3")
        print(sys.executable)
    """)
    lines: list[str] = []
    result = run_experiment(ws, "run_1", on_line=lines.append)

    assert result.status == RunStatus.OK and result.returncode == 0
    assert result.error is None and result.signature is None
    assert lines == ["out 1", "err 2", "out 3", sys.executable]
    assert (ws / "run_1" / "log.txt").read_text().splitlines() == lines


def test_command_template_is_expanded(workspace):
    ws = workspace("import sys; print(sys.argv[1:])")
    result = run_experiment(ws, "run_4", command=["{python}", "experiment.py", "--out_dir={out_dir}",
                                                  '{"lr": 1}'])
    assert "['--out_dir=run_4', '{\"lr\": 1}']" in result.output


SIZE = 64 << 20   # the gigabyte case is benchmarks/bench_runner.py --mb 1024 --line-bytes 1048576


def test_a_flood_of_output_keeps_memory_bounded_and_log_complete(workspace):
    # 64 MiB in 1 MiB writes without newlines: memory must not follow the output's size.
    ws = workspace("""
        import sys
        chunk = b"x" * (1 << 20)
        for _ in range(64):
            sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.write(b"\\ndone\\n")
    """)
    seen = [0]

    def count(line: str) -> None:
        seen[0] += len(line)

    tracemalloc.start()
    try:
        result = run_experiment(ws, "run_1", on_line=count, keep_bytes=20_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    log = ws / "run_1" / "log.txt"
    try:
        assert result.status == RunStatus.OK
        assert result.total_bytes == log.stat().st_size == SIZE + len("\ndone\n")
        assert seen[0] == SIZE + len("done")  # the live view saw every character
        assert len(result.output) < 20_100 and "bytes dropped ...]" in result.output
        assert result.output.endswith("done\n")
        assert peak < 5_000_000, f"parent allocated {peak} bytes while streaming"
    finally:
        log.unlink()  # pytest keeps old tmp dirs; do not leave a gigabyte behind


# --------------------------------------------------------------------------- the box

def test_timeout_kills_the_whole_group_even_a_stubborn_grandchild(workspace):
    ws = workspace(SPAWN_STUBBORN_GRANDCHILD + """
import signal
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
while True:
    pass
""")
    start = time.monotonic()
    result = run_experiment(ws, "run_1", timeout=2, kill_grace=0.5)

    assert result.status == RunStatus.TIMEOUT and result.signature == "Timeout"
    assert "ready" in result.output
    assert time.monotonic() - start < 6
    assert wait_gone(grandchild_pid(ws)), "grandchild survived the timeout"


def test_background_grandchild_does_not_outlive_or_stall_a_finished_run(workspace):
    ws = workspace(SPAWN_STUBBORN_GRANDCHILD + 'print("finished")\n')
    start = time.monotonic()
    result = run_experiment(ws, "run_1", timeout=60, kill_grace=0.5)

    assert result.status == RunStatus.OK
    assert time.monotonic() - start < 8  # not held until the grandchild's sleep or the timeout
    assert wait_gone(grandchild_pid(ws))


def test_interrupt_from_the_live_view_kills_the_run_and_says_interrupted(workspace):
    ws = workspace(SPAWN_STUBBORN_GRANDCHILD + """
print("ready", flush=True)
import time
time.sleep(120)
""")

    def ctrl_c_on_ready(line: str) -> None:
        if line == "ready":
            raise KeyboardInterrupt

    result = run_experiment(ws, "run_1", on_line=ctrl_c_on_ready, kill_grace=0.5)

    assert result.status == RunStatus.INTERRUPTED
    assert "ready" in (ws / "run_1" / "log.txt").read_text()
    assert wait_gone(grandchild_pid(ws))
    assert feedback_text(result).startswith("Run interrupted by the user")


def test_ctrl_c_in_the_agent_process_is_reported_not_raised(workspace):
    ws = workspace(SPAWN_STUBBORN_GRANDCHILD + """
print("ready", flush=True)
import time
time.sleep(120)
""")
    # The agent itself in a subprocess, so a real SIGINT hits it the way Ctrl-C would.
    driver = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            from pathlib import Path
            from agent.runner import run_experiment
            result = run_experiment(Path({str(ws)!r}), "run_1", kill_grace=0.5)
            print("STATUS", result.status)
        """)],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    log = ws / "run_1" / "log.txt"
    deadline = time.monotonic() + 15
    while not (log.exists() and "ready" in log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert log.exists() and "ready" in log.read_text(), "log.txt is not written while running"
    driver.send_signal(signal.SIGINT)
    out, _ = driver.communicate(timeout=15)

    assert "STATUS interrupted" in out
    assert wait_gone(grandchild_pid(ws))


def test_environment_is_an_allowlist(workspace, monkeypatch):
    # Names a denylist missed (a password in a URL, a PAT, bare KEY/TOKEN) must not reach the run either.
    secrets = {"OPENAI_API_KEY": "sk-1", "DEEPSEEK_API_KEY": "sk-2", "AWS_SECRET_ACCESS_KEY": "a",
               "AWS_PROFILE": "prod", "GOOGLE_APPLICATION_CREDENTIALS": "/k.json",
               "GITHUB_TOKEN": "ghp", "DB_PASSWORD": "pw", "MY_SECRET": "s",
               "DATABASE_URL": "postgres://u:hunter2@db/x", "GITLAB_PAT": "glpat-1", "KEY": "k", "TOKEN": "t"}
    # The harness's SAE_* come from the agent only: the user's would switch a full run to a smoke
    # run, or point it at the history backups.
    users_sae = {"SAE_SMOKE": "1", "SAE_HISTORY_DIR": "/backups", "SAE_API_KEY": "sk-3", "SAE_CACHE_DIR": "/mine"}
    for name, value in {**secrets, **users_sae, "HF_TOKEN": "hf_ok"}.items():
        monkeypatch.setenv(name, value)
    ws = workspace("""
        import json, os, sys
        json.dump(dict(os.environ), open(os.path.join(sys.argv[1].split("=")[1], "env.json"), "w"))
    """)
    result = run_experiment(ws, "run_1", env_allow=["HF_TOKEN"], extra_env={"SAE_CACHE_DIR": "/cache"})
    env = json.loads((ws / "run_1" / "env.json").read_text())

    assert result.status == RunStatus.OK
    assert not set(secrets) & set(env)
    assert not any(v in json.dumps(env) for v in ("hunter2", "glpat-1", "sk-1", "sk-3", "/backups"))
    assert env["HF_TOKEN"] == "hf_ok" and "SAE_SMOKE" not in env
    assert env["SAE_CACHE_DIR"] == "/cache" and "PATH" in env
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"


def test_scrubbed_env_keeps_only_allowlisted_names():
    base = {"PATH": "/bin", "HOME": "/root", "CUDA_VISIBLE_DEVICES": "0", "SAE_PROFILE": "tiny",
            "LC_ALL": "C.UTF-8", "ANTHROPIC_BASE_URL": "x", "wandb_api_key": "k", "HF_TOKEN": "t",
            "EDITOR": "vim"}
    assert scrubbed_env(base) == {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "0", "LC_ALL": "C.UTF-8"}
    assert scrubbed_env(base, ["HF_TOKEN"])["HF_TOKEN"] == "t"


def test_address_space_limit_makes_a_big_allocation_fail(workspace):
    ws = workspace("""
        blob = bytearray(2 * 1024**3)
        print("allocated")
    """)
    result = run_experiment(ws, "run_1", max_memory_bytes=512 * 1024**2)

    assert result.status == RunStatus.FAILED
    assert result.error.startswith("MemoryError")
    assert "allocated" not in result.output


def test_cpu_limit_stops_a_busy_loop(workspace):
    ws = workspace("while True:\n    pass\n")
    result = run_experiment(ws, "run_1", max_cpu_seconds=1, timeout=30)

    assert result.status == RunStatus.FAILED
    assert result.error.startswith("Killed by SIGXCPU")
    assert result.duration < 10


def test_content_hash_tells_files_apart():
    code = "print('run')\n"
    assert content_hash(code) == content_hash(str(code))
    assert content_hash(code) != content_hash(code + "# edit\n")
    assert len(content_hash(code)) == 64


# -- the status vocabulary ------------------------------------------------------------------

def test_a_runs_status_is_one_enum_whose_values_are_the_words_written_before(tmp_path):
    assert [s.value for s in RunStatus] == ["ok", "failed", "timeout", "interrupted", "lost", "requeue"]
    # A record built from a bare string of the vocabulary holds the member.
    result = RunResult("timeout", None, 1.0, "", None, None, None, tmp_path / "log.txt")
    assert result.status is RunStatus.TIMEOUT
    # ... and is written as it always was: JSON, f-strings and trailers see the same word.
    assert json.dumps({"status": result.status}) == '{"status": "timeout"}'
    assert f"ended {result.status}" == "ended timeout" and str(result.status) == "timeout"
    assert result.status == "timeout"
    # A word outside the vocabulary is a bug where a record is built (ValueError) ...
    with pytest.raises(ValueError):
        RunResult("finished", 0, 1.0, "", None, None, None, tmp_path / "log.txt")
    # ... and, read from what a job left, a failure: what any other string meant before.
    assert RunStatus.read("lost") is RunStatus.LOST and RunStatus.read(RunStatus.OK) is RunStatus.OK
    assert RunStatus.read("finished") is RunStatus.FAILED and RunStatus.read(None) is RunStatus.FAILED
