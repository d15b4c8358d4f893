"""Where does the seed spread of top-1 come from, and what would shrink it? Prints numbers for the
runs `bench_trust.py --keep DIR` kept, offline, on the profile's cached probe activations:

For each way of splitting each class's probe texts (train + test pooled, then re-split):
the headline top-1 per seed, its seed sd, the paired bootstrap SE of a difference between two
seeds, and the minimum detectable difference the loop would have with 5 baseline seeds.
Also: per-task seed sd and the mean correlation between tasks' seed deviations (independent
tasks -> more tasks shrink the spread as 1/sqrt(n)).

    python benchmarks/bench_trust.py --profile cpu --seeds 6 --keep /tmp/trust-runs
    python benchmarks/bench_seed_spread.py /tmp/trust-runs --profile cpu
"""
import argparse
import glob
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "templates" / "sae_variants"))
sys.path.insert(0, str(ROOT))
from harness.profiles import load_profile  # noqa: E402
from harness.activations import ActivationStore  # noqa: E402
from harness import artifacts, probing  # noqa: E402
from agent import stats  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("runs", help="the folder bench_trust.py --keep wrote (run_0, run_1, ...)")
parser.add_argument("--profile", default="cpu")
args = parser.parse_args()
runs = sorted(glob.glob(args.runs + "/run_*"), key=lambda p: int(p.rsplit("_", 1)[1]))
profile = load_profile(args.profile)
store = ActivationStore(profile, log=lambda *a: None)
layer = profile.layers[0]
_, scale = store.heldout(layer)
acts = store.probing(layer, scale)


def split(pool: dict, n_train: int, seed: int = 0):
    """pool {cls: [n, d]} -> train {cls: first n_train}, test {cls: the rest, capped at the smallest class}."""
    rng = np.random.default_rng(seed)
    order = {c: torch.as_tensor(rng.permutation(len(x))) for c, x in pool.items()}
    n_test = min(len(x) for x in pool.values()) - n_train
    return ({c: pool[c][order[c][:n_train]] for c in pool},
            {c: pool[c][order[c][n_train:n_train + n_test]] for c in pool})


def top1(train, test, seed_text):
    """The harness's own top-1 probes: per class, the test correctness bits."""
    return {cls: r["correct"] for cls, r in probing._probe(train, test, 1, seed_text).items()}


per_class = profile.probing.train_per_class + profile.probing.test_per_class
SPLITS = {"as the profile splits": None, **{f"{t} train / {per_class - t} test (same share of smaller pools)": t
                                          for t in (per_class // 6, per_class // 2, 2 * per_class // 3)}}
means = []
for r in runs:
    sae, _ = artifacts.load_sae(r, layer)
    means.append({ds: {c: torch.cat([probing.encode_means(sae, a, n) for a, n in
                                     [splits["train"][c], splits["test"][c]]]) for c in splits["train"]}
                  for ds, splits in acts.items()})
    print(r, "encoded", flush=True)
n_train_now = profile.probing.train_per_class

for label, n_train in SPLITS.items():
    per_run = []
    for m in means:
        bits = {}
        for ds, pool in m.items():
            if n_train is None:
                train = {c: x[:n_train_now] for c, x in pool.items()}
                test = {c: x[n_train_now:] for c, x in pool.items()}
            else:
                smallest = min(len(x) for x in pool.values())
                train, test = split(pool, round(smallest * n_train / per_class))   # the same share of each class's texts
            for c, b in top1(train, test, f"{ds}/sae/1").items():
                bits[f"{ds}/{c}"] = b
        per_run.append(bits)
    heads = [float(np.mean([np.mean([b.count("1") / len(b) for t, b in bits.items() if t.startswith(ds + "/")])
                            for ds in acts])) for bits in per_run]
    draws = stats.probe_resamples(per_run[:2])
    paired = float(np.std(draws[0] - draws[1], ddof=1))
    seed_sd = float(np.std(heads[:5], ddof=1))
    mdd = stats.minimum_detectable_difference(paired, seed_sd, 5)
    print(f"{label}: top-1 per seed {' '.join(f'{h:.4f}' for h in heads)}; seed sd {np.std(heads, ddof=1):.4f} "
          f"(first 5: {seed_sd:.4f}); paired SE {paired:.4f}; MDD {mdd:.4f}", flush=True)
    if n_train is None:
        tasks = sorted(per_run[0])
        F = np.array([[bits[t].count("1") / len(bits[t]) for t in tasks] for bits in per_run])
        sd = F.std(0, ddof=1)
        c = np.corrcoef(F.T)
        print(f"  {len(tasks)} tasks; per-task seed sd median {np.median(sd):.4f}, max {sd.max():.4f}; mean "
              f"correlation between tasks' seed deviations {np.nanmean(c[~np.eye(len(tasks), dtype=bool)]):+.3f}")
        for t, s in sorted(zip(tasks, sd), key=lambda x: -x[1])[:6]:
            print(f"    {t}: sd {s:.4f}")
