"""Uncertainty for every number the loop reports: bootstrap intervals and paired differences.

A run's `final_info.json` keeps its per-example evidence (written by the harness's evaluator):
each probe's correctness on every test text, in the test split's fixed order, per-block sums of
the reconstruction error over the held-out tokens, and (a synthetic world) per-block counts of each
latent's true and false detections of its matched true feature. So

- a metric's interval is a bootstrap over test texts (probing) or held-out blocks (reconstruction);
- a difference between two SAEs is *paired*: both are resampled on the same texts and blocks, which
  removes the test set's own noise from the comparison;
- the baseline's seed spread (several trainings of the unmodified template) is added, because a
  change of the random seed alone moves every metric.

The verdict is "better", "worse" or "no detectable change": the 95% interval of the difference
excludes zero, or it does not. L0 is the sparsity setting, not a quality: its change keeps its
interval but is never judged (verdict SETTING). numpy and scipy; no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

RESAMPLES = 2000
Z95 = 1.959964
# None: a setting the experimenter chooses, neither better nor worse when it moves.
HIGHER_IS_BETTER = {"sae_top_1_test_accuracy": True, "sae_test_accuracy": True, "explained_variance": True,
                    "llm_top_1_test_accuracy": True, "f1": True, "mcc": True, "uniqueness": True, "l0": None}
SETTING = "sparsity setting"   # the verdict of a metric that is a setting: never a finding


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


@dataclass(frozen=True)
class Difference:
    metric: str
    value: float            # this run minus the baseline (mean over its seeds)
    half_width: float       # of the 95% interval
    seed_sd: float | None   # the baseline's seed spread (None with one seed)
    verdict: str            # "better" | "worse" | "no detectable change" | "no interval" | SETTING
    baseline: float | None = None   # what the change is against: the mean over the baseline's seeds

    @property
    def low(self) -> float:
        return self.value - self.half_width

    @property
    def high(self) -> float:
        return self.value + self.half_width

    def short(self, digits: int = 3) -> str:
        if self.verdict == "no interval":
            return f"{self.value:+.{digits}f} vs run 0, no interval"
        return f"{self.value:+.{digits}f} ± {self.half_width:.{digits}f}, {self.verdict}"


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _bits(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("ascii"), dtype=np.uint8) == ord("1")


def _grouped_mean(per_task: dict[str, np.ndarray]) -> np.ndarray:
    """SAEBench's averaging of per-task values [B]: over classes within a data set, then over data sets."""
    by_dataset: dict[str, list[np.ndarray]] = {}
    for task, values in per_task.items():
        by_dataset.setdefault(task.split("/", 1)[0], []).append(values)
    return np.mean([np.mean(v, axis=0) for v in by_dataset.values()], axis=0)


def probe_resamples(runs: list[dict[str, str]], resamples: int = RESAMPLES, seed: int = 0) -> list[np.ndarray]:
    """Bootstrap draws of the headline accuracy for each run, all resampled on the same test texts.

    `runs`: per run, {"dataset/class": "0110..."}. Tasks missing from any run, or of another length
    (another test set), are left out of all of them, so the runs stay comparable."""
    common = [t for t in runs[0] if all(t in r and len(r[t]) == len(runs[0][t]) for r in runs)]
    rng = _rng(seed)
    draws: list[dict[str, np.ndarray]] = [{} for _ in runs]
    for task in sorted(common):
        n = len(runs[0][task])
        idx = rng.integers(0, n, size=(resamples, n))
        for out, run in zip(draws, runs):
            out[task] = _bits(run[task])[idx].mean(axis=1)
    return [_grouped_mean(d) for d in draws] if common else []


def block_resamples(runs: list[dict], resamples: int = RESAMPLES, seed: int = 1) -> list[dict[str, np.ndarray]]:
    """Bootstrap draws of explained variance and L0 for each run, resampled on the same held-out blocks."""
    n = min(len(r["sq_err"]) for r in runs)
    if n == 0:
        return []
    idx = _rng(seed).integers(0, n, size=(resamples, n))
    out = []
    for r in runs:
        err, dev = np.asarray(r["sq_err"][:n])[idx].sum(1), np.asarray(r["sq_dev"][:n])[idx].sum(1)
        l0, tokens = np.asarray(r["l0"][:n])[idx].sum(1), np.asarray(r["tokens"][:n])[idx].sum(1)
        out.append({"explained_variance": 1.0 - err / np.maximum(dev, 1e-12), "l0": l0 / tokens})
    return out


def f1_resamples(runs: list[dict], resamples: int = RESAMPLES, seed: int = 1, chunk: int = 250
                 ) -> list[np.ndarray]:
    """Bootstrap draws of the ground-truth F1 (the mean over latents of each latent's F1 as a detector
    of its matched true feature) for each run, resampled on the same held-out blocks.

    `runs`: per run, {"tp", "fp", "fn"}: [block][latent] counts. A latent's F1 over the drawn blocks
    is 2TP/(2TP+FP+FN) of its counts summed over them, 0 when that is 0/0."""
    n = min(len(r["tp"]) for r in runs)
    if n == 0:
        return []
    # How often each block is drawn: the same weights for every run, so the draws are paired.
    # float32: sums of integer counts stay exact below 2^24 samples, and the products run 4x faster.
    weights = _rng(seed).multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float32)
    out = []
    for r in runs:
        tp, fp, fn = (np.asarray(r[k][:n], dtype=np.float32) for k in ("tp", "fp", "fn"))
        means = []
        for w in np.array_split(weights, max(1, resamples // chunk)):   # [chunk, latents] stays small
            t = (w @ tp).astype(float)
            denominator = 2 * t + (w @ fp).astype(float) + (w @ fn).astype(float)
            f1 = np.divide(2 * t, denominator, out=np.zeros_like(t), where=denominator > 0)
            means.append(f1.mean(axis=1))
        out.append(np.concatenate(means))
    return out


def interval(draws: np.ndarray, value: float) -> Interval:
    low, high = np.percentile(draws, [2.5, 97.5])
    return Interval(value, float(low), float(high))


def quantile95(test_var: float, seed_var: float, n_seeds: int) -> float:
    """The two-sided 95% quantile for test-set noise (many examples: normal) plus seed noise
    estimated from `n_seeds` trainings (n - 1 degrees of freedom): Student's t at the
    Welch-Satterthwaite degrees of freedom. With 3 seeds and seed noise dominating that is about
    4.3, with 5 about 2.8, not 1.96: a spread estimated from a few trainings is itself uncertain,
    and with 3 seeds the normal quantile declared 1 in 5 reseeded copies of the baseline a finding
    (benchmarks/bench_trust.py)."""
    if seed_var <= 0 or n_seeds < 2:
        return Z95
    from scipy.stats import t as student_t
    df = (test_var + seed_var) ** 2 / (seed_var ** 2 / (n_seeds - 1))
    return float(student_t.ppf(0.975, df))


def difference(metric: str, current: float, baseline_values: list[float], paired_diff_draws: np.ndarray | None
               ) -> Difference:
    """This run against the baseline's seeds: the test-set noise of the paired difference plus the
    seed noise of one training run and of the baseline's mean (a prediction interval for one new
    training of the baseline)."""
    mean = float(np.mean(baseline_values))
    value = current - mean
    test_var = float(np.var(paired_diff_draws, ddof=1)) if paired_diff_draws is not None else 0.0
    seed_sd = float(np.std(baseline_values, ddof=1)) if len(baseline_values) > 1 else None
    seed_var = seed_sd ** 2 * (1 + 1 / len(baseline_values)) if seed_sd is not None else 0.0
    half = quantile95(test_var, seed_var, len(baseline_values)) * math.sqrt(test_var + seed_var)
    if paired_diff_draws is None and seed_sd is None:
        judged = "no interval"   # no per-example evidence and one seed: nothing to judge by
    else:
        judged = verdict(metric, value, half)
    return Difference(metric, value, half, seed_sd, judged, baseline=mean)


def verdict(metric: str, change: float, half_width: float) -> str:
    """Whether a change with this 95% half-width is a finding, in the metric's direction."""
    higher = HIGHER_IS_BETTER.get(metric, True)
    if higher is None:
        return SETTING
    if change - half_width > 0:
        return "better" if higher else "worse"
    if change + half_width < 0:
        return "worse" if higher else "better"
    return "no detectable change"


def minimum_detectable_difference(paired_sd: float, seed_sd: float | None, n_seeds: int,
                                  power_z: float = 0.841621) -> float:
    """The smallest true difference found with 80% power at alpha = 0.05 (two-sided), paired."""
    seed_var = ((seed_sd or 0.0) ** 2) * (1 + 1 / max(n_seeds, 1))
    sd = math.sqrt(paired_sd ** 2 + seed_var)
    return (quantile95(paired_sd ** 2, seed_var, n_seeds) + power_z) * sd
