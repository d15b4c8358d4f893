"""How fast the runner streams output, and what it costs the agent's memory.

    python benchmarks/bench_runner.py --mb 1024 [--line-bytes 1024] [--no-live-view]

A child writes `--mb` MiB in lines of `--line-bytes`; the runner streams it to log.txt and (unless
`--no-live-view`) to an on_line callback. Prints throughput, peak Python allocation (tracemalloc)
and the growth of the process's peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from agent.runner import run_experiment  # noqa: E402

CHILD = """
import sys
line = b"x" * ({line_bytes} - 1) + b"\\n"
chunk = line * max(1, (1 << 20) // len(line))
for _ in range({mb}):
    sys.stdout.buffer.write(chunk)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=1024)
    parser.add_argument("--line-bytes", type=int, default=1024)
    parser.add_argument("--no-live-view", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp)
        (ws / "experiment.py").write_text(CHILD.format(mb=args.mb, line_bytes=args.line_bytes))
        lines = [0]

        def on_line(_: str) -> None:
            lines[0] += 1

        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        tracemalloc.start()
        start = time.perf_counter()
        result = run_experiment(ws, "run_1", on_line=None if args.no_live_view else on_line)
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before

    mib = result.total_bytes / 2**20
    print(f"{result.status}: {mib:.0f} MiB in {seconds:.2f} s ({mib / seconds:.0f} MiB/s), "
          f"{lines[0]} lines to the live view, kept {len(result.output)} chars, "
          f"peak Python allocation {peak / 1024:.0f} KiB, peak RSS growth {rss_growth} KiB")


if __name__ == "__main__":
    main()
