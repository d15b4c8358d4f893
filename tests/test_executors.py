"""The executor layer without a cluster: settings, time limits, how a job's end reads, bad flags.

The Slurm path itself runs on a real cluster in tests/test_slurm.py.
"""

import shutil
from pathlib import Path

import pytest

from agent import runner
from agent.cli import main
from agent.executors import (ExecutorError, JobRecord, LocalExecutor, Outcome, RunSpec, SlurmExecutor,
                             SlurmSettings, make_executor, parse_time, time_limit_min)
from agent.process import RunStatus
from agent.template import load_template
from mini import MINI

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("text, minutes", [("90", 90), ("1:30", 2), ("2:00:00", 120), ("1-00", 1440),
                                           ("0-1:30", 90), ("0:10", 1)])
def test_slurm_time_formats(text, minutes):
    assert parse_time(text) == minutes


def test_a_bad_slurm_time_says_which_formats_work():
    with pytest.raises(ExecutorError, match=r"minutes or Slurm's \[D-\]HH:MM:SS"):
        parse_time("an hour")


def test_time_limit_leaves_room_after_the_runs_own_timeout():
    assert time_limit_min(600, SlurmSettings()) == 12   # 10 min + 2 min for start-up and the kill
    assert time_limit_min(600, SlurmSettings(time_min=45)) == 45


def test_profile_resources_fill_what_the_command_line_left_unset(tmp_path):
    template = load_template(MINI)
    template.slurm = {"tiny": {"partition": "gpu", "gpus": 1, "mem_gb": 32}}
    executor = SlurmExecutor.__new__(SlurmExecutor)
    executor.settings = SlurmSettings(mem_gb=8, account="lab")
    bound = SlurmExecutor.for_profile(executor, template, "tiny")
    assert (bound.settings.partition, bound.settings.gpus, bound.settings.mem_gb, bound.settings.account) == \
        ("gpu", 1, 8, "lab")
    assert LocalExecutor().for_profile(template, "tiny").name == "local"


def test_unknown_executor_is_refused(monkeypatch):
    monkeypatch.setenv("AGENT_EXECUTOR", "kubernetes")
    with pytest.raises(ExecutorError, match="unknown executor 'kubernetes'"):
        make_executor(None)


def test_slurm_without_its_tools_is_refused_before_any_workspace(tmp_path, monkeypatch, capsys):
    idea = tmp_path / "idea.md"
    idea.write_text(f"---\ntemplate: {MINI}\n---\n# Mini\n\n## Experiment\n1. Run.\n")
    bin_dir = tmp_path / "bin"  # git, but no Slurm
    bin_dir.mkdir()
    (bin_dir / "git").symlink_to(shutil.which("git"))
    monkeypatch.setenv("PATH", str(bin_dir))
    code = main(["run", str(idea), "--results", str(tmp_path / "results"), "--executor", "slurm",
                 "--model", "replay:none.json"])
    assert code == 2
    assert "needs Slurm's tools on PATH" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def _ended(state: str, requeues: int = 0, max_requeues: int = 2, **settings):
    executor = SlurmExecutor.__new__(SlurmExecutor)
    executor.settings = SlurmSettings(max_requeues=max_requeues, **settings)
    record = JobRecord(job_id="42", folder="/nonexistent", argv=["x"], cwd="/w", smoke=False, submitted=0.0,
                       state=state, requeues=requeues)
    spec = RunSpec(argv=["x"], cwd=Path("/w"), env={}, run_dir=Path("/w/run_1"), timeout=600)
    return executor._outcome(spec, record)


def test_how_a_job_ends_becomes_the_attempts_status():
    timeout = _ended("TIMEOUT")
    assert (timeout.status, timeout.signature) == (RunStatus.TIMEOUT, "Timeout")
    assert "Slurm's time limit (12 min) ended job 42" in timeout.error
    oom = _ended("OUT_OF_MEMORY", mem_gb=16)
    assert oom.status == RunStatus.FAILED and oom.error.startswith("Out of memory: Slurm killed job 42 (limit 16G)")
    assert _ended("CANCELLED").status == RunStatus.INTERRUPTED
    assert _ended("NODE_FAIL").status == RunStatus.REQUEUE, "a node failure is submitted again"
    lost = _ended("PREEMPTED", requeues=2)
    assert lost.status == RunStatus.LOST and "not charged to the code" in lost.error
    failed = _ended("FAILED")
    assert failed.status == RunStatus.LOST and "filesystem the nodes share" in failed.error


def _ended_with_log(tmp_path: Path, state: str, err: str):
    """A job that ended in `state` with `err` as its stderr (submitit's %j_0_log.err)."""
    executor = SlurmExecutor.__new__(SlurmExecutor)
    executor.settings = SlurmSettings()
    (tmp_path / "42_0_log.err").write_text(err)
    record = JobRecord(job_id="42", folder=str(tmp_path), argv=["x"], cwd="/w", smoke=False, submitted=0.0,
                       state=state)
    spec = RunSpec(argv=["x"], cwd=Path("/w"), env={}, run_dir=tmp_path / "run_1", timeout=600)
    return executor._outcome(spec, record)


# What slurmstepd 22.05 wrote when jobacct_gather/linux with OverMemoryKill killed a job (measured on
# the local cluster); the job then ends FAILED, not OUT_OF_MEMORY.
OVER_MEMORY_KILL = """\
slurmstepd-vm: error: StepId=42.0 exceeded memory limit (423624704 > 268435456), being killed
srun: Job step aborted: Waiting up to 7 seconds for job step to finish.
slurmstepd-vm: error: *** STEP 42.0 ON vm CANCELLED AT 2026-12-01T17:28:28 ***
slurmstepd-vm: error: Exceeded job memory limit
srun: error: vm: task 0: Killed
"""


def test_a_job_slurm_killed_for_its_memory_is_out_of_memory_whatever_its_state(tmp_path):
    oom = _ended_with_log(tmp_path, "FAILED", OVER_MEMORY_KILL)
    assert (oom.status, oom.returncode, oom.signature) == (RunStatus.FAILED, -9, "Slurm:OUT_OF_MEMORY")
    assert oom.error.startswith("Out of memory: Slurm killed job 42 (limit 256 MiB, the job had 404 MiB in use)")
    cgroup = _ended_with_log(tmp_path, "FAILED", "slurmstepd: error: Detected 1 oom-kill event(s) in "
                             "StepId=42.0. Some of your processes may have been killed by the cgroup "
                             "out-of-memory handler.\n")
    assert cgroup.error.startswith("Out of memory: Slurm killed job 42")


def test_a_memory_warning_alone_does_not_make_a_job_out_of_memory(tmp_path):
    # cgroup's "at some point" is a warning about a job that may have been fine: the state decides.
    warned = "slurmstepd: error: Exceeded job memory limit at some point.\n"
    assert _ended_with_log(tmp_path, "CANCELLED", warned).status == RunStatus.INTERRUPTED
    assert _ended_with_log(tmp_path, "FAILED", warned).status == RunStatus.LOST
    assert _ended_with_log(tmp_path, "FAILED", "Traceback: MemoryError: out of memory\n").status == RunStatus.LOST


def test_local_executor_is_the_runner_default(tmp_path):
    (tmp_path / "experiment.py").write_text("print('hi')\n")
    result = runner.run_experiment(tmp_path, "run_1", timeout=60)
    assert (result.status, result.executor, result.job_id) == (RunStatus.OK, "local", None)
    assert LocalExecutor().live_job(tmp_path / "run_1") is None


def test_resume_reattaches_only_to_a_job_whose_end_nobody_saw(tmp_path):
    executor = SlurmExecutor.__new__(SlurmExecutor)
    executor.settings = SlurmSettings()
    folder = tmp_path / "jobs"
    folder.mkdir()
    (folder / "999999_0_result.pkl").write_bytes(b"")  # the job finished and left its result
    record = JobRecord(job_id="999999", folder=str(folder), argv=["x"], cwd=str(tmp_path), smoke=False,
                       submitted=0.0)
    record.save(tmp_path)
    assert executor.live_job(tmp_path) == record, "the agent died before it saw the end: pick it up"
    record.ended = 1.0
    record.save(tmp_path)
    assert executor.live_job(tmp_path) is None, "seen ending, so already committed: never again"


def _pickled_result(folder: Path, status: str) -> JobRecord:
    """A finished job's result as an older agent's job pickled it: the status a bare string."""
    import pickle
    outcome = Outcome(RunStatus.OK, 0)
    outcome.status = status   # what a job run before RunStatus left in its result file
    folder.mkdir(exist_ok=True)
    (folder / "42_0_result.pkl").write_bytes(pickle.dumps(("success", outcome)))
    return JobRecord(job_id="42", folder=str(folder), argv=["x"], cwd="/w", smoke=False, submitted=0.0,
                     state="COMPLETED")


def test_a_job_result_an_older_agent_pickled_reads_into_the_enum(tmp_path):
    executor = SlurmExecutor.__new__(SlurmExecutor)
    executor.settings = SlurmSettings()
    spec = RunSpec(argv=["x"], cwd=Path("/w"), env={}, run_dir=tmp_path / "run_1", timeout=600)
    for word, status in [("ok", RunStatus.OK), ("timeout", RunStatus.TIMEOUT), ("failed", RunStatus.FAILED)]:
        outcome = executor._outcome(spec, _pickled_result(tmp_path / word, word))
        assert outcome.status is status and outcome.job_id == "42"
    # A word this agent does not know is a failure (as any other string was before): the runner
    # then reads the error from the run's output, and the loop charges it to the code.
    unknown = executor._outcome(spec, _pickled_result(tmp_path / "unknown", "finished"))
    assert unknown.status is RunStatus.FAILED and unknown.error is None
    with pytest.raises(ValueError):
        Outcome("finished")   # built here, an unknown word is a bug
