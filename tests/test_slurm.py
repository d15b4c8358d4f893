"""`--executor slurm` on a real single-node Slurm cluster (scripts/local_slurm.sh), through submitit.

The fixture starts the cluster (installing slurm-wlm and munge where it may); these tests skip only
where Slurm cannot be installed (not root, or no apt-get). Jobs are checked with Slurm's own tools:
`scontrol show job` and the job completion log (jobcomp/filetxt), which is what this cluster keeps
instead of sacct's database.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent import history, runner
from agent.cli import main
from agent.executors import JOB_RECORD, JobRecord, SlurmExecutor, SlurmSettings, job_info
from agent.process import RunStatus
from mini import block, MINI, MODEL, notes

REPO = Path(__file__).resolve().parent.parent
JOBCOMP = Path("/var/log/slurm/jobcomp.log")


@pytest.fixture(scope="session")
def slurm_cluster():
    installed = all(shutil.which(t) for t in ("slurmctld", "slurmd", "munged"))
    if not installed and (os.geteuid() != 0 or shutil.which("apt-get") is None):
        pytest.skip("Slurm is not installed and cannot be: installing slurm-wlm and munge needs root and apt-get")
    proc = subprocess.run(["bash", str(REPO / "scripts" / "local_slurm.sh"), "start"], capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, f"local Slurm did not start:\n{proc.stdout}\n{proc.stderr}"
    return REPO / "scripts" / "local_slurm.sh"


RAISE = "Raise it.\n\n" + block("    accuracy = ACCURACY\n", "    accuracy = ACCURACY + 0.05\n")
NOTES = notes("Run 1 raised the accuracy.")


def sleeping(seconds: int) -> str:
    return "Run 1.\n\n" + block("def train():\n", f"def train():\n    import time\n    print('training', flush=True)\n"
                                 f"    time.sleep({seconds})\n")


def jobcomp_state(job_id: str, seconds: float = 15.0) -> str | None:
    """JobState of `job_id` in Slurm's job completion log (written when the job ends)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for line in JOBCOMP.read_text().splitlines():
            if re.search(rf"\bJobId={job_id}\b", line):
                return re.search(r"JobState=(\S+)", line).group(1)
        time.sleep(0.5)
    return None


def wait_for(predicate, seconds=90.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def running_record(run_dir: Path) -> JobRecord | None:
    """The run's job once it runs and its output has reached the log."""
    record = JobRecord.load(run_dir)
    log = run_dir / "log.txt"
    if record is None or not record.started or not log.exists() or "training" not in log.read_text():
        return None
    return record


def requeue_now(job_id: str) -> None:
    """`scontrol requeue` (what Slurm does after a node failure), then start it again at once: a
    requeued job otherwise waits for a begin time two minutes away."""
    restarts = job_info(job_id).restarts
    subprocess.run(["scontrol", "requeue", job_id], check=True)
    assert wait_for(lambda: (i := job_info(job_id)) and i.restarts > restarts and i.state in ("PENDING", "CANCELLED"), 60)
    if job_info(job_id).state == "PENDING":  # (the agent may have cancelled it already: past the bound)
        # Slurm's two minutes let the node finish the old instance: started again before slurmd has,
        # the job is killed as "non-startable: Job credential revoked" (seen on a loaded machine).
        assert wait_for(node_is_idle, 60), "the node did not finish the requeued instance"
        time.sleep(1.0)
        update = subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], capture_output=True,
                                text=True)
        assert update.returncode == 0 or job_info(job_id).state != "PENDING", update.stderr


def node_is_idle() -> bool:
    out = subprocess.run(["scontrol", "show", "node", "-o"], capture_output=True, text=True).stdout
    fields = dict(re.findall(r"(\w+)=(\S*)", out))
    return fields.get("CPUAlloc") == "0" and fields.get("State", "").split("+") == ["IDLE"]


def spawn(args, env):
    return subprocess.Popen([sys.executable, "-m", "agent", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


# --------------------------------------------------------------------------- the loop on Slurm

def test_an_idea_runs_as_slurm_jobs_visible_to_slurm(slurm_cluster, fake_llm, idea, tmp_path):
    fake_llm.script([RAISE, "ALL_COMPLETED", NOTES])
    results = tmp_path / "results"
    code = main(["run", str(idea), "--results", str(results), "--model", MODEL, "--api-base", fake_llm.url,
                 "--executor", "slurm"])
    assert code == 0
    (ws,) = [p for p in results.iterdir() if p.is_dir()]
    assert [(a.run, a.status) for a in history.read_history(ws)] == [(0, "baseline"), (1, "success"), (1, "notes")]
    jobs = {name: JobRecord.load(ws / name) for name in ("run_0", "run_1")}
    assert all(jobs.values()), "every run records its Slurm job"
    for record in jobs.values():
        assert jobcomp_state(record.job_id) == "COMPLETED", "Slurm's own record of the job"
        assert record.started and record.ended and record.submitted <= record.started <= record.ended
    assert "ACCURACY + 0.05" in (ws / "experiment.py").read_text()
    assert json.loads((ws / "run_1" / "final_info.json").read_text()), "the job wrote its results in the workspace"
    committed = history.open_workspace(ws).git.show(f"HEAD~1:run_1/{JOB_RECORD}")
    assert json.loads(committed)["job_id"] == jobs["run_1"].job_id, "the job id is in the history"
    assert fake_llm.violations == []


def test_a_job_cancelled_mid_run_is_committed_as_interrupted(slurm_cluster, fake_llm, idea, tmp_path):
    fake_llm.script([sleeping(120)])
    results = tmp_path / "results"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = spawn(["run", str(idea), "--results", str(results), "--model", MODEL, "--api-base", fake_llm.url,
                  "--executor", "slurm", "--no-smoke"], env)
    try:
        assert wait_for(lambda: any(running_record(p) for p in results.glob("*/run_1"))), "run 1 is running"
        (run_dir,) = results.glob("*/run_1")
        job_id = running_record(run_dir).job_id
        subprocess.run(["scancel", job_id], check=True)
        output, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, output
    ws = run_dir.parent
    last = history.read_history(ws)[-1]
    assert (last.run, last.status) == (1, "interrupted")
    assert jobcomp_state(job_id) == "CANCELLED"
    assert "training" in (run_dir / "log.txt").read_text(), "the output so far was streamed into the log"


def test_ctrl_c_cancels_the_job(slurm_cluster, fake_llm, idea, tmp_path):
    fake_llm.script([sleeping(120)])
    results = tmp_path / "results"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = spawn(["run", str(idea), "--results", str(results), "--model", MODEL, "--api-base", fake_llm.url,
                  "--executor", "slurm", "--no-smoke"], env)
    try:
        assert wait_for(lambda: any(running_record(p) for p in results.glob("*/run_1"))), "run 1 is running"
        (run_dir,) = results.glob("*/run_1")
        job_id = running_record(run_dir).job_id
        os.killpg(proc.pid, signal.SIGINT)
        output, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, output
    assert jobcomp_state(job_id) == "CANCELLED", "Ctrl-C does not leave the job running"
    assert history.read_history(run_dir.parent)[-1].status == "interrupted"


def agent_dies_mid_run(fake_llm, idea, tmp_path, seconds: int) -> tuple[Path, str]:
    """An agent running run 1 as a Slurm job is killed; the job lives on. (workspace, job id)"""
    fake_llm.script([sleeping(seconds)])
    results = tmp_path / "results"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = spawn(["run", str(idea), "--results", str(results), "--model", MODEL, "--api-base", fake_llm.url,
                  "--executor", "slurm", "--no-smoke"], env)
    try:
        assert wait_for(lambda: any(running_record(p) for p in results.glob("*/run_1"))), "run 1 is running"
        os.killpg(proc.pid, signal.SIGKILL)  # the agent dies; its job lives on in Slurm
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    (run_dir,) = results.glob("*/run_1")
    job_id = JobRecord.load(run_dir).job_id
    assert job_info(job_id).state in ("RUNNING", "PENDING")
    return run_dir.parent, job_id


def resume(ws: Path, fake_llm, capsys) -> tuple[int, str, str]:
    """`resume` in this process (the agent that died was a real one): (exit status, stdout, stderr)."""
    fake_llm.script(["ALL_COMPLETED"])
    capsys.readouterr()
    code = main(["resume", str(ws), "--api-base", fake_llm.url, "--no-smoke"])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow  # its job trains for 20 s
def test_resume_follows_a_job_still_running_instead_of_running_it_again(slurm_cluster, fake_llm, idea, tmp_path,
                                                                        capsys):
    ws, job_id = agent_dies_mid_run(fake_llm, idea, tmp_path, seconds=20)
    code, out, err = resume(ws, fake_llm, capsys)
    assert code == 0, out[-3000:] + err[-3000:]
    assert "resuming with --executor slurm" in out, "the workspace says its runs were Slurm jobs"
    assert f"following Slurm job {job_id}" in out
    run1 = [a for a in history.read_history(ws) if a.run == 1]
    assert [(a.attempt, a.status) for a in run1] == [(1, "success")], "one attempt, not an interrupted one and a rerun"
    assert run1[0].trailers["Slurm-Job"] == job_id, "the job that was running is the one recorded"
    assert (ws / "run_1" / "log.txt").read_text().count("training") == 1
    # the conversation goes on from the reply whose code ran, with that run's results: strictly
    # alternating, the reply not asked for again
    assert fake_llm.violations == []
    after = fake_llm.requests[1].body["messages"]
    assert [m["role"] for m in after[-2:]] == ["assistant", "user"] and "time.sleep(20)" in after[-2]["content"]
    assert "run 1" in after[-1]["content"].lower()


def test_resume_cancels_a_job_running_code_that_has_changed_since(slurm_cluster, fake_llm, idea, tmp_path, capsys):
    # The researcher edited experiment.py before resuming: the job trains code that is no longer the
    # workspace's, so it is cancelled (never two runs of one attempt) and the attempt is interrupted.
    ws, job_id = agent_dies_mid_run(fake_llm, idea, tmp_path, seconds=60)
    with open(ws / "experiment.py", "a") as f:
        f.write("# changed by hand\n")
    resume(ws, fake_llm, capsys)
    assert wait_for(lambda: (job_info(job_id) is None or job_info(job_id).state not in ("RUNNING", "PENDING")))
    attempts = history.read_history(ws)
    assert [(a.run, a.status) for a in attempts][:2] == [(0, "baseline"), (1, "interrupted")]
    assert fake_llm.violations == []


# --------------------------------------------------------------------------- the executor on its own

def script_workspace(tmp_path: Path, body: str) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "experiment.py").write_text(body)
    return ws


@pytest.mark.slow  # waits for Slurm's 1-minute time limit
def test_a_job_killed_by_its_time_limit_is_a_timeout(slurm_cluster, tmp_path):
    ws = script_workspace(tmp_path, "import time\nprint('started', flush=True)\ntime.sleep(600)\n")
    result = runner.run_experiment(ws, "run_1", timeout=900,
                                   executor=SlurmExecutor(SlurmSettings(time_min=1)))
    assert result.status == RunStatus.TIMEOUT
    assert "Slurm's time limit (1 min)" in result.error and result.signature == "Timeout"
    assert "started" in result.output
    assert jobcomp_state(result.job_id) == "TIMEOUT"


# 2 GB, 20 MB every 50 ms, then held: far over a 256 MB job, slowly enough for Slurm's one-second
# sampling (JobAcctGatherFrequency in local_slurm.sh) to see it well before the machine would notice.
HOG = ("    import time\n    print('allocating', flush=True)\n    hog = []\n    for _ in range(100):\n"
       "        hog.append(bytearray(20 * 2**20))\n        time.sleep(0.05)\n    time.sleep(60)\n")


def test_a_job_over_its_memory_is_killed_by_slurm_and_reported_out_of_memory(slurm_cluster, tmp_path):
    ws = script_workspace(tmp_path, f"def train():\n{HOG}\ntrain()\n")
    result = runner.run_experiment(ws, "run_1", timeout=120, executor=SlurmExecutor(SlurmSettings(mem_gb=0.25)))
    assert result.status == RunStatus.FAILED, f"{result.status}: {result.error}"
    assert result.error.startswith(f"Out of memory: Slurm killed job {result.job_id} (limit 256 MiB, the job had ")
    assert result.signature == "Slurm:OUT_OF_MEMORY" and result.returncode == -signal.SIGKILL
    assert "allocating" in result.output and result.output.rstrip().endswith(result.error), "the log says why it ends"
    assert result.duration < 60, "killed by Slurm, not by the run's timeout"
    # What Slurm itself records without cgroups: FAILED (not OUT_OF_MEMORY), the step killed by SIGKILL.
    assert jobcomp_state(result.job_id) == "FAILED"
    assert job_info(result.job_id).exit_code in ("137:0", "0:9")


@pytest.mark.slow
def test_an_out_of_memory_run_is_the_codes_failure_and_the_coder_hears_why(slurm_cluster, fake_llm, idea, tmp_path):
    hog = "Run 1.\n\n" + block("def train():\n", f"def train():\n{HOG}")
    fix = "Use less memory.\n\n" + block(f"def train():\n{HOG}", "def train():\n")
    fake_llm.script([hog, fix, "ALL_COMPLETED", NOTES])
    results = tmp_path / "results"
    assert main(["run", str(idea), "--results", str(results), "--model", MODEL, "--api-base", fake_llm.url,
                 "--executor", "slurm", "--slurm-mem", "0.25", "--no-smoke"]) == 0
    (ws,) = [p for p in results.iterdir() if p.is_dir()]
    attempts = history.read_history(ws)
    assert [(a.run, a.attempt, a.status) for a in attempts] == [
        (0, 1, "baseline"), (1, 1, "failed"), (1, 2, "success"), (1, 3, "notes")], "failed, not lost or requeued"
    assert attempts[1].error.startswith("Out of memory: Slurm killed job ") and "(limit 256 MiB" in attempts[1].error
    assert attempts[1].subject.startswith("run 1 attempt 1: failed — Out of memory: Slurm killed job")
    assert "Out of memory: Slurm killed job" in [m for m in fake_llm.requests[1].body["messages"]
                                                 if m["role"] == "user"][-1]["content"]
    assert fake_llm.violations == []


def test_a_requeued_job_runs_again_and_is_not_charged(slurm_cluster, tmp_path):
    ws = script_workspace(tmp_path, "import os, time\nprint('attempt', flush=True)\ntime.sleep(6)\n"
                          "os.makedirs('run_1', exist_ok=True)\nopen('run_1/done', 'w').write('yes')\n")
    requeued = []

    def on_line(line):
        # Once the run has started, Slurm requeues it (as for a node failure); a requeued job waits
        # for a begin time two minutes away, which the test brings forward.
        if line == "attempt" and not requeued:
            record = JobRecord.load(ws / "run_1")
            requeue_now(record.job_id)
            requeued.append(record.job_id)

    result = runner.run_experiment(ws, "run_1", timeout=120, on_line=on_line,
                                   executor=SlurmExecutor(SlurmSettings(max_requeues=2)))
    assert result.status == RunStatus.OK, f"{result.error}\n{result.output}"
    assert result.output.count("attempt") == 2 and "was requeued by Slurm (1/2)" in result.output
    assert JobRecord.load(ws / "run_1").requeues == 1 and result.job_id == requeued[0]
    assert (ws / "run_1" / "done").exists()


def test_requeues_past_the_bound_lose_the_run_without_blaming_the_code(slurm_cluster, tmp_path):
    ws = script_workspace(tmp_path, "import time\nprint('attempt', flush=True)\ntime.sleep(60)\n")

    def on_line(line):
        if line == "attempt":
            subprocess.run(["scontrol", "requeue", JobRecord.load(ws / "run_1").job_id], check=True)

    result = runner.run_experiment(ws, "run_1", timeout=120, on_line=on_line,
                                   executor=SlurmExecutor(SlurmSettings(max_requeues=0)))
    assert result.status == RunStatus.LOST
    assert "the cluster lost Slurm job" in result.error and "not charged to the code" in result.error
    assert wait_for(lambda: job_info(result.job_id).state == "CANCELLED", 30)


def test_a_workspace_the_node_cannot_see_is_reported_clearly(slurm_cluster, tmp_path):
    from agent.executors import RunSpec

    missing = tmp_path / "not-on-the-node"   # as a node-local /tmp would look from a compute node
    run_dir = tmp_path / "run_1"
    run_dir.mkdir()
    spec = RunSpec(argv=[sys.executable, "experiment.py"], cwd=missing, env=dict(os.environ), run_dir=run_dir,
                   timeout=60)
    executor = SlurmExecutor(SlurmSettings(job_folder=str(tmp_path / "jobs")))
    outcome = executor.execute(spec, runner.OutputSink(open(run_dir / "log.txt", "wb"), 1000, None))
    assert outcome.status == RunStatus.LOST
    assert f"the workspace {missing} does not exist on node" in outcome.error
    assert "filesystem the compute nodes share" in outcome.error


def test_ideas_in_parallel_on_slurm(slurm_cluster, fake_llm, tmp_path, monkeypatch):
    monkeypatch.setenv("SAE_CACHE_DIR", str(tmp_path / "cache"))
    ideas = []
    for i in range(2):
        path = tmp_path / f"idea_{i}.md"
        path.write_text(f"---\ntemplate: {MINI}\nmax_runs: 1\n---\n# Slurm variant {i}\n\n## Experiment\n1. Run.\n")
        fake_llm.script([RAISE, NOTES], key=f"Slurm variant {i}")
        ideas.append(str(path))
    results = tmp_path / "results"
    assert main(["run", *ideas, "--jobs", "2", "--executor", "slurm", "--no-smoke", "--results", str(results),
                 "--model", MODEL, "--api-base", fake_llm.url]) == 0
    workspaces = [p for p in results.iterdir() if p.is_dir()]
    assert len(workspaces) == 2
    for ws in workspaces:
        assert [a.status for a in history.read_history(ws)] == ["baseline", "success", "notes"]
        assert jobcomp_state(JobRecord.load(ws / "run_1").job_id) == "COMPLETED"
    assert fake_llm.violations == []


def test_a_job_the_cluster_keeps_losing_stops_the_idea_without_charging_the_code(
        slurm_cluster, fake_llm, idea, tmp_path):
    fake_llm.script([sleeping(60)])
    results = tmp_path / "results"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = spawn(["run", str(idea), "--results", str(results), "--model", MODEL, "--api-base", fake_llm.url,
                  "--executor", "slurm", "--no-smoke"], env)
    try:
        assert wait_for(lambda: any(running_record(p) for p in results.glob("*/run_1"))), "run 1 is running"
        (run_dir,) = results.glob("*/run_1")
        job_id = running_record(run_dir).job_id
        for k in range(1, 4):  # three "node failures"; two requeues are allowed
            assert wait_for(lambda: (run_dir / "log.txt").read_text().count("training") >= k), (
                k, job_info(job_id), (run_dir / "log.txt").read_text()[-2000:])
            requeue_now(job_id)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1, output
    last = history.read_history(run_dir.parent)[-1]
    assert (last.run, last.status) == (1, "interrupted"), "not a failure of the code"
    assert "the cluster lost Slurm job" in last.error and "requeued 3 times" in last.error
    assert "python -m agent resume" in output
    assert fake_llm.violations == [] and len(fake_llm.requests) == 1, "the coder was not asked to fix anything"
