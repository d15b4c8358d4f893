"""How much can a profile tell apart? Prints, for one profile (numbers, not asserts):

- the baseline's seed spread (sd over trainings of the unmodified template) of each headline metric
  of the profile (top-1 on a language model; F1, MCC, explained variance on a synthetic world) and EV;
- the paired bootstrap SE of a difference, and the minimum detectable difference (80% power,
  alpha 0.05, paired, with the seed spread);
- the false-discovery rate of a null: extra seeds of the unmodified template, each judged against
  the first `--baseline-seeds` seeds exactly as the loop judges a run (goal: at most 5%);
- time per run (train + evaluate) and the preparation time.

    python benchmarks/bench_trust.py --profile cpu --keep DIR   # the cpu profile's 8 baseline seeds + 3
    python benchmarks/bench_trust.py --analyse DIR --baseline-seeds 5   # runs kept by --keep DIR
    python benchmarks/bench_trust.py --profile synth --seeds 8          # ground truth: 5 baseline seeds + 3
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent import execution, results, stats  # noqa: E402
from agent.template import load_template  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--seeds", type=int, default=None,
                        help="trainings of the unmodified template in all (default: the baseline's seeds + 3)")
    parser.add_argument("--baseline-seeds", type=int, default=None,
                        help="how many the loop judges by (default: the template's for the profile)")
    parser.add_argument("--sandbox", default=None)
    parser.add_argument("--keep", type=Path, default=None, help="copy the runs' folders here, for later analysis")
    parser.add_argument("--analyse", type=Path, default=None,
                        help="print the numbers for runs kept earlier (its run_0, run_1, ...) instead of training")
    args = parser.parse_args()
    template = load_template(ROOT / "templates" / "sae_variants")
    args.baseline_seeds = args.baseline_seeds or len(template.seeds_for(args.profile))
    args.seeds = args.seeds or args.baseline_seeds + 3
    if args.analyse:
        kept = sorted(args.analyse.glob("run_*"), key=lambda p: int(p.name.split("_")[1]))
        report([results.load_results(p) for p in kept], args.baseline_seeds)
        return

    work = Path(tempfile.mkdtemp(prefix="bench-trust-"))
    for rel in template.files():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(template.root / rel, work / rel)
    pipeline = execution.Pipeline(work, template, args.profile, box=args.sandbox, timeout=7200,
                                  protected=execution.protected_from_template(template))
    started = time.monotonic()
    pipeline.prepare()
    print(f"prepare ({args.profile}): {time.monotonic() - started:.1f}s")

    runs, seconds = [], []
    for seed in range(args.seeds):
        t = time.monotonic()
        step = pipeline.run(f"run_{seed}", overrides={"seed": seed})
        if not step.ok:
            raise SystemExit(f"seed {seed} failed: {step.problem or step.result.error}")
        seconds.append(time.monotonic() - t)
        runs.append(results.load_results(work / f"run_{seed}"))
        h = next(iter(results.headline(runs[-1]).values()))
        shown = ", ".join(f"{m} {h[m]:.4f}" for m in results.headline_metrics(runs[-1]))
        print(f"seed {seed}: {shown}, EV {h['explained_variance']:.4f}, L0 {h['l0']:.1f} ({seconds[-1]:.0f}s)",
              flush=True)
    print(f"per run (train + evaluate): mean {np.mean(seconds):.1f}s, max {np.max(seconds):.1f}s")
    report(runs, args.baseline_seeds)
    if args.keep:
        shutil.copytree(work, args.keep, dirs_exist_ok=True)
    shutil.rmtree(work, ignore_errors=True)


def report(runs: list[dict], n_base: int) -> None:
    key = next(iter(results.headline(runs[0])))
    headline = results.headline_metrics(runs[0])
    for metric in dict.fromkeys((*headline, "explained_variance", "l0")):
        values = [results.headline(r)[key][metric] for r in runs]
        print(f"{metric}: seeds {np.min(values):.4f}..{np.max(values):.4f}, sd {np.std(values, ddof=1):.4f}")

    base, rest = runs[:n_base], runs[n_base:]
    for metric in headline:
        # the paired test-set noise of one comparison: two SAEs on the same evidence, no seed term
        one = results.differences([runs[0]], runs[1])[key].get(metric)
        paired_sd = one.half_width / stats.Z95 if one is not None else 0.0
        seed_sd = float(np.std([results.headline(r)[key][metric] for r in base], ddof=1))
        mdd = stats.minimum_detectable_difference(paired_sd, seed_sd, len(base))
        print(f"{metric}: paired bootstrap SE {paired_sd:.4f}; seed sd {seed_sd:.4f}; minimum detectable "
              f"difference {mdd:.4f} (80% power, alpha 0.05, {len(base)} baseline seeds)")
        # Test-set noise alone (two fixed SAEs on the same evidence): what more test data can shrink.
        print(f"{metric} between two fixed SAEs (test-set noise only, no seed spread): minimum detectable "
              f"difference {stats.minimum_detectable_difference(paired_sd, None, 1):.4f}")
        if len(runs) > len(base):   # the same, had every run here been a baseline seed
            every_sd = float(np.std([results.headline(r)[key][metric] for r in runs], ddof=1))
            print(f"{metric} with all {len(runs)} as baseline seeds: seed sd {every_sd:.4f}, minimum detectable "
                  f"difference {stats.minimum_detectable_difference(paired_sd, every_sd, len(runs)):.4f}")
    for metric in dict.fromkeys((*headline, "explained_variance")):
        print(f"{metric} per seed: " + " ".join(f"{results.headline(r)[key][metric]:.4f}" for r in runs))
    if "sae_top_1_test_accuracy" in headline:
        per_dataset_spread(runs, key)
    judged = tuple(dict.fromkeys((*headline, "explained_variance")))
    for r in rest:
        d = results.differences(base, r)[key]
        print(f"  null seed vs seeds 0..{len(base) - 1}: " + ", ".join(f"{m} {d[m].short()}" for m in judged if m in d))
    if not rest:
        print(f"false discoveries: not measured ({len(runs)} runs, all of them baseline seeds; "
              f"more runs than --baseline-seeds {n_base} are needed)")
    for m, line in false_discoveries(runs, n_base, judged).items():
        print(f"false discoveries of the null, {m}: {line}")


def false_discoveries(runs: list[dict], n_base: int,
                      metrics=("sae_top_1_test_accuracy", "explained_variance")) -> dict[str, str]:
    """The rate at which the loop calls a reseeded baseline better or worse, over every choice of
    `n_base` baseline seeds (each run judged against each set it is not in: one set can be unlucky,
    and then it misjudges every run of an idea). The judgements share runs, so they are not
    independent: the interval is a jackknife over seeds (each seed and every judgement it is in left
    out in turn), not a binomial one."""
    import itertools
    key = next(iter(results.headline(runs[0])))
    judged: dict[str, list[tuple[set[int], bool]]] = {m: [] for m in metrics}   # (seeds it used, flagged)
    for chosen in itertools.combinations(range(len(runs)), n_base):
        for j in (j for j in range(len(runs)) if j not in chosen):
            d = results.differences([runs[i] for i in chosen], runs[j])[key]
            for m in (m for m in metrics if m in d):
                judged[m].append(({*chosen, j}, d[m].verdict in ("better", "worse")))
    out = {}
    for m, cells in ((m, c) for m, c in judged.items() if c):
        found, rate = sum(f for _, f in cells), float(np.mean([f for _, f in cells]))
        out[m] = f"{found}/{len(cells)} ({rate:.1%}; goal <= 5%)"
        n = len(runs)
        if n > n_base + 1:
            left = np.array([np.mean([f for used, f in cells if i not in used]) for i in range(n)])
            se = float(np.sqrt((n - 1) / n * np.sum((left - left.mean()) ** 2)))
            out[m] += f"; jackknife over seeds: {rate:.1%} +- {1.96 * se:.1%}"
    return out


def per_dataset_spread(runs: list[dict], key: str) -> None:
    """Where the seed spread of top-1 comes from: each data set's own spread, and whether the data
    sets vary together (then more data sets would not shrink it) or independently (then the spread
    of their mean falls as 1/sqrt(number of data sets))."""
    per_run = []
    for r in runs:
        bits = results.evidence(r)[key]["probing"]["sae_top_1_test_accuracy"]
        by_dataset: dict[str, list[float]] = {}
        for task, text in bits.items():
            by_dataset.setdefault(task.split("/", 1)[0], []).append(text.count("1") / len(text))
        per_run.append({d: float(np.mean(v)) for d, v in by_dataset.items()})
    names = sorted(per_run[0])
    table = np.array([[acc[d] for d in names] for acc in per_run])   # [seeds, data sets]
    sds = table.std(axis=0, ddof=1)
    for name, column, sd in zip(names, table.T, sds):
        print(f"  top-1 {name}: mean {column.mean():.4f}, seed sd {sd:.4f}")
    independent = float(np.sqrt(np.sum(sds ** 2)) / len(names))
    observed = float(table.mean(axis=1).std(ddof=1))
    corr = np.corrcoef(table.T)
    off = corr[~np.eye(len(names), dtype=bool)]
    print(f"top-1 seed sd of the mean over {len(names)} data sets: {observed:.4f} observed, {independent:.4f} "
          f"if the data sets varied independently (mean correlation between data sets {np.nanmean(off):+.2f})")


if __name__ == "__main__":
    main()
