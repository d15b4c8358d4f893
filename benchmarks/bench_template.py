"""Benchmark the sae_variants template: prints numbers, asserts nothing.

    python benchmarks/bench_template.py [--profile tiny|cpu] [--keep]

Runs the unmodified template twice in a fresh workspace with a fresh activation cache: a cold run
(language-model activations computed) and a cached rerun. Prints activation tokens/s, SAE
training tokens/s, evaluation seconds, cold vs cached wall time (goal: rerun <= 0.3x cold) and peak
memory. Converted model weights are shared (SAE_MODEL_DIR, default ~/.cache/sae-agent/models): a
first-ever conversion (~1 minute) is reported separately when it happens.
No GPU figures: this machine has no GPU; on one, run with --profile gemma-2-2b (needs the hub).
"""

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "templates" / "sae_variants"


def run(workspace: Path, out_dir: str, env: dict) -> tuple[float, str, float]:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "experiment.py", f"--out_dir={out_dir}"], cwd=workspace, env=env,
                          capture_output=True, text=True)
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"experiment.py failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    return elapsed, proc.stdout + proc.stderr, peak_gib


def stats(output: str) -> dict:
    match = re.search(r"activation cache: (\{.*\})", output)
    return json.loads(match.group(1)) if match else {}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--keep", action="store_true", help="keep the temporary workspace and cache")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-sae-"))
    ws = tmp / "ws"
    shutil.copytree(TEMPLATE, ws, ignore=shutil.ignore_patterns("__pycache__"))
    (ws / "profile.json").write_text(json.dumps({"profile": args.profile}))
    env = {k: v for k, v in os.environ.items() if k not in ("SAE_PROFILE", "SAE_SMOKE")}
    env["SAE_CACHE_DIR"] = str(tmp / "cache")
    env.setdefault("SAE_MODEL_DIR", str(Path.home() / ".cache" / "sae-agent" / "models"))

    print(f"profile {args.profile}, {os.cpu_count()} CPUs, torch threads default; workspace {ws}")
    cold_s, cold_out, cold_peak = run(ws, "run_0", env)
    conversion = re.search(r"model converted in (\d+)s", cold_out)
    warm_s, warm_out, warm_peak = run(ws, "run_1", env)

    cold_stats = stats(cold_out)
    (entry,) = json.loads((ws / "run_0" / "final_info.json").read_text()).values()
    (warm_entry,) = json.loads((ws / "run_1" / "final_info.json").read_text()).values()
    training = entry["training"]

    rows = [
        ("cold run (s)", f"{cold_s:.1f}" + (f"  (incl. one-time model conversion {conversion.group(1)}s)"
                                            if conversion else "")),
        ("cached rerun (s)", f"{warm_s:.1f}"),
        ("rerun / cold", f"{warm_s / cold_s:.2f}  (goal <= 0.30)"),
        ("LM activation tokens/s (cold)",
         f"{cold_stats['llm_tokens'] / max(cold_stats['llm_seconds'], 1e-9):.0f}"
         f"  ({cold_stats['llm_tokens']} token positions in {cold_stats['llm_seconds']:.1f}s)"
         if cold_stats.get("llm_tokens") else "n/a"),
        ("SAE training tokens/s", f"{training['tokens_per_second']}  ({training['tokens']} tokens, "
                                  f"{training['training_steps']} steps, {training['seconds']}s)"),
        ("evaluation seconds (cold / cached)", f"{training['eval_seconds']} / {warm_entry['training']['eval_seconds']}"),
        ("peak RSS of a run (GiB)", f"{max(cold_peak, warm_peak):.2f}"),
        ("SAE top-1 / all-latent accuracy", f"{entry['eval_result_metrics']['sae']['sae_top_1_test_accuracy']:.3f} / "
                                            f"{entry['eval_result_metrics']['sae']['sae_test_accuracy']:.3f}"),
        ("L0 / explained variance / CE score", f"{entry['core_metrics']['l0']:.1f} / "
                                               f"{entry['core_metrics']['explained_variance']:.3f} / "
                                               f"{entry['core_metrics']['ce_loss_score']}"),
        ("GPU figures", "skipped: no GPU on this machine"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    if args.keep:
        print(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
