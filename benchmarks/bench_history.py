"""What the history guard costs per commit (prints, asserts nothing).

    .venv/bin/python benchmarks/bench_history.py

Commits N attempts (a 200 kB log each, as a run leaves) with `history.commit_attempt`, which
checks `.git` against what the agent last saw and copies the branch into the backup, and the
same commits with plain `git commit`; then times one restore after `rm -rf .git`.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent import gitguard, history  # noqa: E402

N = 20


def attempt_files(ws: Path, i: int) -> None:
    (ws / "experiment.py").write_text(f"STEPS = {i}\n" * 50)
    run = ws / f"run_{i}"
    run.mkdir(exist_ok=True)
    (run / "log.txt").write_text(f"step {i} loss 0.1\n" * 10000)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SAE_HISTORY_DIR"] = str(Path(tmp) / "backups")
        guarded, plain = Path(tmp) / "guarded", Path(tmp) / "plain"
        history.init_repo(guarded)
        subprocess.run(["git", "init", "-q", str(plain)], check=True)
        times = {"guarded": [], "plain": []}
        for i in range(N):
            attempt_files(guarded, i)
            started = time.perf_counter()
            history.commit_attempt(guarded, subject=f"run {i}", trailers={"Run": str(i), "Status": "failed"})
            times["guarded"].append(time.perf_counter() - started)
            attempt_files(plain, i)
            started = time.perf_counter()
            subprocess.run(["git", "-C", str(plain), "add", "--all"], check=True)
            subprocess.run(["git", "-C", str(plain), "-c", "user.name=x", "-c", "user.email=y", "commit",
                            "-qm", f"run {i}"], check=True)
            times["plain"].append(time.perf_counter() - started)
        for name, values in times.items():
            print(f"{name:8s} commit: median {statistics.median(values) * 1000:.0f} ms, "
                  f"max {max(values) * 1000:.0f} ms over {N}")
        shutil.rmtree(guarded / ".git")
        started = time.perf_counter()
        found = gitguard.guard(guarded).check(keep=[])
        print(f"restore after rm -rf .git ({N} commits): {(time.perf_counter() - started) * 1000:.0f} ms "
              f"({found[0]})")


if __name__ == "__main__":
    main()
