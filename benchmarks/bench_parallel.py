"""N ideas at once vs one after another, and what a Slurm job costs a run.

    python benchmarks/bench_parallel.py [--ideas 2] [--template tiny|mini] [--slurm-runs 5] [--skip-ideas]

1. `run IDEA... --jobs N` against `--jobs 1` with the same N ideas, warm caches (a first pass warms
   them): wall time of each, their ratio, and CPU utilisation (CPU seconds of all child processes
   over wall seconds × cores). `--template tiny` uses the shipped ideas on the real model (offline
   replays); `mini` the test template (seconds; it measures the agent's own overhead).
2. With a Slurm cluster up (`scripts/local_slurm.sh start`): `--slurm-runs` trivial runs through
   SlurmExecutor and through LocalExecutor, each committed like an attempt: submit → start (sbatch
   until the job is seen running), end → commit (job seen ended until the attempt is committed), and
   the whole run against a local one.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from agent import history, runner  # noqa: E402
from agent.executors import JobRecord, LocalExecutor, SlurmExecutor, SlurmSettings  # noqa: E402

SHIPPED = ["ideas/lateral_inhibition.md", "ideas/exponential_orthogonal.md", "ideas/topk_orthogonality.md"]
MINI_IDEA = """---
template: {template}
max_runs: 2
---
# Mini idea {i}

## Experiment
1. Run the template.
"""


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def agent_run(ideas: list[str], jobs: int, results: Path, env: dict, extra: list[str]) -> tuple[float, float, int]:
    cpu0, t0 = children_cpu(), time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "agent", "run", *ideas, "--jobs", str(jobs),
                           "--results", str(results), *extra], cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        print(proc.stdout[-2000:], proc.stderr[-2000:], sep="\n")
    return wall, children_cpu() - cpu0, proc.returncode


def bench_ideas(args, tmp: Path) -> None:
    env = dict(os.environ, SAE_CACHE_DIR=str(tmp / "cache"), LITELLM_LOCAL_MODEL_COST_MAP="True",
               HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    models = Path.home() / ".cache" / "sae-agent" / "models"
    if "SAE_MODEL_DIR" not in env and models.is_dir():  # the converted model, not what is measured
        env["SAE_MODEL_DIR"] = str(models)
    if args.template == "tiny":
        ideas = [str(REPO / p) for p in SHIPPED[:args.ideas]]
        extra = ["--profile", "tiny", "--max-runs", str(args.max_runs)]
    else:
        folder = tmp / "ideas"
        folder.mkdir()
        ideas = []
        for i in range(args.ideas):
            path = folder / f"mini_{i}.md"
            path.write_text(MINI_IDEA.format(template=REPO / "tests/data/mini_template", i=i))
            ideas.append(str(path))
        # The mini ideas have no recorded replies: each replays one edit, then ends.
        edit = ("Raise it.\n\nexperiment.py\n```python\n<<<<<<< SEARCH\n    accuracy = ACCURACY\n=======\n"
                "    accuracy = ACCURACY + 0.01\n>>>>>>> REPLACE\n```\n")
        replay = tmp / "replay.json"
        replay.write_text(json.dumps({"model": "bench", "replies": [edit, "ALL_COMPLETED", "ALL_COMPLETED"]}))
        extra = ["--model", f"replay:{replay}"]
    cores = os.cpu_count() or 1
    print(f"warming the caches: {len(ideas)} {args.template} idea(s), one after another ...", flush=True)
    agent_run(ideas, 1, tmp / "warm", env, extra)
    rows = []
    for label, jobs in (("serial (--jobs 1)", 1), (f"parallel (--jobs {len(ideas)})", len(ideas))):
        wall, cpu, code = agent_run(ideas, jobs, tmp / f"r{jobs}", env, extra)
        rows.append((label, wall, cpu, code))
    print(f"\n{len(ideas)} ideas, {args.template} template, {cores} cores")
    print(f"{'mode':<22}{'wall s':>10}{'cpu s':>10}{'cpu util':>10}{'exit':>6}")
    for label, wall, cpu, code in rows:
        print(f"{label:<22}{wall:>10.1f}{cpu:>10.1f}{cpu / (wall * cores):>9.0%}{code:>6}")
    print(f"wall ratio serial / parallel: {rows[0][1] / rows[1][1]:.2f}x")


def bench_slurm(args, tmp: Path) -> None:
    if shutil.which("sbatch") is None:
        print("\nSlurm: no sbatch on PATH; start one with `bash scripts/local_slurm.sh start`")
        return
    ws = tmp / "slurm_ws"
    ws.mkdir()
    (ws / "experiment.py").write_text("import sys\nprint('hello from', sys.argv[-1])\n")
    history.init_repo(ws)
    stats = {"slurm": [], "local": []}
    for i in range(args.slurm_runs):
        for name, executor in (("slurm", SlurmExecutor(SlurmSettings(poll=0.25))), ("local", LocalExecutor())):
            out_dir = f"run_{name}_{i}"
            t0 = time.time()
            result = runner.run_experiment(ws, out_dir, timeout=120, executor=executor)
            history.commit_attempt(ws, subject=f"{out_dir}", trailers={"Run": str(i), "Status": result.status})
            t1 = time.time()
            record = JobRecord.load(ws / out_dir) if name == "slurm" else None
            stats[name].append((t0, t1, record, result.status))
    print(f"\nSlurm overhead, {args.slurm_runs} trivial runs (each committed):")
    submit_start = [r.started - r.submitted for _, _, r, _ in stats["slurm"] if r and r.started]
    end_commit = [t1 - r.ended for _, t1, r, _ in stats["slurm"] if r and r.ended]
    whole_slurm = [t1 - t0 for t0, t1, _, _ in stats["slurm"]]
    whole_local = [t1 - t0 for t0, t1, _, _ in stats["local"]]
    for label, values in (("submit -> start", submit_start), ("end -> commit", end_commit),
                          ("whole run, slurm", whole_slurm), ("whole run, local", whole_local)):
        if values:
            print(f"  {label:<18} median {statistics.median(values):6.2f} s   max {max(values):6.2f} s")
    bad = [s for *_, s in stats["slurm"] + stats["local"] if s != "ok"]
    if bad:
        print(f"  (runs not ok: {bad})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ideas", type=int, default=2)
    parser.add_argument("--template", choices=("tiny", "mini"), default="tiny")
    parser.add_argument("--max-runs", type=int, default=1, help="runs per idea in the tiny template")
    parser.add_argument("--slurm-runs", type=int, default=5)
    parser.add_argument("--skip-ideas", action="store_true", help="only the Slurm overhead")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_ideas:
            bench_ideas(args, Path(tmp))
        if args.slurm_runs:
            bench_slurm(args, Path(tmp))


if __name__ == "__main__":
    main()
