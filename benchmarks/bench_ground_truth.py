"""Does the synthetic profile reproduce SynthSAEBench's ranking? Prints (numbers, not asserts), per
architecture at the profile's target L0, over seeds: L0, F1, MCC, uniqueness, explained variance,
mean ± sd, beside the published SynthSAEBench-16k table at L0 = 25.

    python benchmarks/bench_ground_truth.py --profile synth --seeds 2
    python benchmarks/bench_ground_truth.py --profile synth-tiny --seeds 3 --arch l1 batchtopk

Architectures, each trained by the same harness on the same pool and evaluated by the same evaluator:
    l1          the template's own ReLU/L1 SAE (its profile penalty sets L0 ~ target)
    topk        the harness's TopK reference at k = target L0
    batchtopk   the harness's BatchTopK reference at k = target L0
    matryoshka  the template with ideas/matryoshka.replay.json applied (Matryoshka BatchTopK)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent import edits, execution, results  # noqa: E402
from agent.template import load_template  # noqa: E402

PUBLISHED_L0_25 = {   # SAELens docs/synth_sae_bench.md, SynthSAEBench-16k, mean ± sd over seeds
    "l1": (0.5562, 0.6039, 0.8976, 0.7654),
    "batchtopk": (0.7316, 0.7574, 0.9837, 0.7923),
    "matryoshka": (0.8793, 0.7927, 0.9987, 0.7792),
}
METRICS = ("l0", "f1", "mcc", "uniqueness", "explained_variance")


def matryoshka_files(work: Path) -> None:
    """The template's editable files with the shipped Matryoshka idea's edits applied."""
    files = {name: (work / name).read_text() for name in ("experiment.py", "plot.py", "notes.txt")}
    reply = json.loads((ROOT / "ideas" / "matryoshka.replay.json").read_text())["replies"][0]
    changed, outcomes = edits.apply_reply(reply, files)
    failed = [o.message for o in outcomes if not o.message.startswith("exact match")]
    if failed:
        raise SystemExit(f"the Matryoshka replay does not apply: {failed}")
    for name, text in changed.items():
        (work / name).write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", default="synth")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--arch", nargs="+", default=["l1", "topk", "batchtopk", "matryoshka"])
    parser.add_argument("--sandbox", default=None)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "templates" / "sae_variants"))
    from harness.profiles import PROFILES
    profile = PROFILES[args.profile]
    k = round(profile.target_l0)
    template = load_template(ROOT / "templates" / "sae_variants")
    table = {}
    for arch in args.arch:
        work = Path(tempfile.mkdtemp(prefix=f"bench-gt-{arch}-"))
        for rel in template.files():
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(template.root / rel, work / rel)
        if arch == "matryoshka":
            matryoshka_files(work)
        pipeline = execution.Pipeline(work, template, args.profile, box=args.sandbox, timeout=7200,
                                      protected=execution.protected_from_template(template))
        rows = []
        for seed in range(args.seeds):
            started = time.monotonic()
            if arch in ("topk", "batchtopk"):
                command = ["{python}", "-m", "harness.reference", f"--arch={arch}", f"--k={k}", f"--seed={seed}",
                           "--out_dir={out_dir}"]
                command = [part.format(python=sys.executable, out_dir=f"run_{seed}") for part in command]
                step = pipeline.run(f"run_{seed}", command=command)
            else:
                step = pipeline.run(f"run_{seed}", overrides={"seed": seed})
            if not step.ok:
                raise SystemExit(f"{arch} seed {seed} failed: {step.problem or step.result.error}")
            h = next(iter(results.headline(results.load_results(work / f"run_{seed}")).values()))
            rows.append([h[m] for m in METRICS])
            print(f"{arch} seed {seed}: " + ", ".join(f"{m} {v:.4f}" for m, v in zip(METRICS, rows[-1]))
                  + f" ({time.monotonic() - started:.0f}s)", flush=True)
        table[arch] = np.array(rows)
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{args.profile} (target L0 {profile.target_l0}, k {k}), {args.seeds} seeds each: mean ± sd")
    print(f"{'SAE':<12}" + "".join(f"{m:>20}" for m in METRICS) + "   published 16k at L0 25 (F1, MCC, uniq., EV)")
    for arch, values in table.items():
        mean, sd = values.mean(0), values.std(0, ddof=1) if len(values) > 1 else np.zeros(len(METRICS))
        cells = "".join(f"{f'{m:.4f} ± {s:.4f}':>20}" for m, s in zip(mean, sd))
        published = PUBLISHED_L0_25.get(arch)
        print(f"{arch:<12}{cells}   " + (" ".join(f"{v:.4f}" for v in published) if published else "—"))
    order = sorted(table, key=lambda a: -table[a][:, 1].mean())
    print("ranking by F1: " + " > ".join(order)
          + "   (published: matryoshka > batchtopk ≈ jumprelu > l1)")


if __name__ == "__main__":
    main()
