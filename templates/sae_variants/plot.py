"""Plot every run in this directory against run_0.

    python plot.py            # reads run_*/final_info.json, writes the PNG files below

- sparsity_fidelity.png: L0 vs explained variance, and L0 vs the profile's primary metric (SAE
  top-1 probing accuracy, or a synthetic world's ground-truth F1: eval_config.headline_metrics[0]),
  one point per run and SAE (up and to the left is better in the first, up in the second), with 95%
  error bars where the agent recorded them (run_i/intervals.json); the baseline frontier (the
  unmodified template at other sparsity settings, run_0/frontier_*) as a dashed line, so a run is
  read against the baseline at its own L0, and the harness's TopK reference (run_0/reference_*) as
  a cross;
- topk_accuracy.png: SAE top-k probing accuracy against k for every run, run_0 in black, the
  language model's own top-k residual channels dashed.

run_0 is drawn as every change is measured against it: the mean of the baseline's seeds (run_0 and
run_0/seed_*), with their standard deviation as its error bars.
"""

import json
import re
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load_intervals(root="."):
    """run_i/intervals.json, written by the agent: each metric's 95% interval (for error bars)."""
    out = {}
    for path in Path(root).glob("run_*/intervals.json"):
        try:
            out[path.parent.name] = json.loads(path.read_text())
        except json.JSONDecodeError:
            pass
    return out


def error_bar(intervals, run, key, metric, value):
    """[[below], [above]] for matplotlib, or None when the run has no interval for it."""
    i = intervals.get(run, {}).get(key, {}).get(metric)
    if not i or value is None:
        return None
    return [[max(0.0, value - i["low"])], [max(0.0, i["high"] - value)]]


def load_runs(root="."):
    runs = {}
    for path in sorted(Path(root).glob("run_*/final_info.json"), key=lambda p: int(re.sub(r"\D", "", p.parent.name) or 0)):
        try:
            runs[path.parent.name] = json.loads(path.read_text())
        except json.JSONDecodeError:
            print(f"skipping {path}: not valid JSON")
    return runs


def sae_entries(info):
    return {k: v for k, v in info.items() if isinstance(v, dict) and "eval_result_metrics" in v}


LABELS = {"sae_top_1_test_accuracy": "SAE top-1 probing accuracy",
          "f1": "F1 (each latent as a detector of its true feature)",
          "mcc": "MCC (decoder rows vs true feature directions)"}


def metric_value(entry, name):
    """A metric from wherever the harness files it: sparse probing, the ground truth, the core metrics."""
    metrics = entry.get("eval_result_metrics", {})
    for section in (metrics.get("sae"), metrics.get("ground_truth"), entry.get("core_metrics")):
        if isinstance(section, dict) and section.get(name) is not None:
            return section[name]
    return None


def primary_metric(runs):
    """The profile's primary metric (eval_config.headline_metrics[0]; top-1 probing accuracy without it)."""
    for info in runs.values():
        for entry in sae_entries(info).values():
            names = (entry.get("eval_config") or {}).get("headline_metrics")
            if names:
                return names[0]
    return "sae_top_1_test_accuracy"


def baseline_seeds(root="."):
    """run_0 and its other seeds (run_0/seed_*): the baseline every change is measured against."""
    base = Path(root) / "run_0"
    infos = []
    for path in [base / "final_info.json", *sorted(base.glob("seed_*/final_info.json"))]:
        try:
            infos.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            pass
    return infos


def seed_mean(seeds, key, name):
    """(mean, sd) of one SAE's metric over the baseline's seeds; (None, None) where none has it."""
    values = [metric_value(sae_entries(s)[key], name) for s in seeds if key in sae_entries(s)]
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def topk(entry, prefix):
    metrics = entry["eval_result_metrics"][prefix]
    ks = entry["eval_config"].get("k_values", [1, 2, 5, 10, 20, 50])
    pairs = [(k, metrics.get(f"{prefix}_top_{k}_test_accuracy")) for k in ks]
    return [k for k, v in pairs if v is not None], [v for _, v in pairs if v is not None]


def baseline_points(root="."):
    """The baseline's other trainings: {"frontier": [info, ...], "reference": {name: info}}."""
    def read(paths):
        out = {}
        for p in sorted(paths):
            try:
                out[p.parent.name] = json.loads(p.read_text())
            except json.JSONDecodeError:
                print(f"skipping {p}: not valid JSON")
        return out
    base = Path(root) / "run_0"
    return {"frontier": list(read([*base.glob("final_info.json"), *base.glob("seed_*/final_info.json"),
                                   *base.glob("frontier_*/final_info.json")]).values()),
            "reference": {name.replace("reference_", ""): info
                          for name, info in read(base.glob("reference_*/final_info.json")).items()}}


def draw_baseline(ax_ev, ax_acc, root=".", metric="sae_top_1_test_accuracy"):
    points = baseline_points(root)
    curves = {}
    for info in points["frontier"]:
        for key, entry in sae_entries(info).items():
            core = entry.get("core_metrics", {})
            acc = metric_value(entry, metric)
            if core.get("l0") is not None:
                curves.setdefault(key, []).append((core["l0"], core.get("explained_variance"), acc))
    for key, pts in curves.items():
        if len(pts) > 1:
            pts.sort()
            ax_ev.plot([p[0] for p in pts], [p[1] for p in pts], color="black", ls="--", lw=1, label="baseline frontier")
            ax_acc.plot([p[0] for p in pts], [p[2] for p in pts], color="black", ls="--", lw=1, label="baseline frontier")
    for name, info in points["reference"].items():
        for key, entry in sae_entries(info).items():
            core = entry.get("core_metrics", {})
            acc = metric_value(entry, metric)
            if core.get("l0") is not None:
                ax_ev.scatter(core["l0"], core.get("explained_variance"), color="black", marker="x", s=80,
                              label=f"{name} reference")
                ax_acc.scatter(core["l0"], acc, color="black", marker="x", s=80, label=f"{name} reference")


def plot_sparsity_fidelity(runs, out="sparsity_fidelity.png", intervals=None, root="."):
    intervals = intervals if intervals is not None else load_intervals(root)
    metric, seeds = primary_metric(runs), baseline_seeds(root)
    fig, (ax_ev, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.5))
    draw_baseline(ax_ev, ax_acc, root, metric)
    for run, info in runs.items():
        for key, entry in sae_entries(info).items():
            label = run if len(sae_entries(info)) == 1 else f"{run} {key.split('/')[-1]}"
            style = dict(color="black", marker="*", s=160, zorder=3) if run == "run_0" else dict(s=60)
            if run == "run_0" and len(seeds) > 1:   # the seeds' mean ± sd: what every change is against
                label += f" (mean ± sd of {len(seeds)} seeds)"
                (l0, xerr), (ev, ev_bar), (y, y_bar) = (seed_mean(seeds, key, m)
                                                        for m in ("l0", "explained_variance", metric))
            else:
                l0, ev, y = (metric_value(entry, m) for m in ("l0", "explained_variance", metric))
                xerr, ev_bar, y_bar = None, error_bar(intervals, run, key, "explained_variance", ev), \
                    error_bar(intervals, run, key, metric, y)
            for ax, value, bar in ((ax_ev, ev, ev_bar), (ax_acc, y, y_bar)):
                if l0 is None or value is None:
                    continue
                ax.scatter(l0, value, label=label, **style)
                if bar is not None or xerr:
                    ax.errorbar(l0, value, xerr=xerr, yerr=bar, fmt="none", ecolor="grey", capsize=3)
                ax.annotate(run.replace("run_", ""), (l0, value), textcoords="offset points", xytext=(5, 5))
    ax_ev.set(xlabel="L0 (active latents per token)", ylabel="explained variance", title="sparsity vs fidelity")
    ax_acc.set(xlabel="L0 (active latents per token)", ylabel=LABELS.get(metric, metric),
               title="sparsity vs interpretability")
    if metric == "sae_top_1_test_accuracy":
        ax_acc.axhline(0.5, color="grey", lw=0.8, ls=":")   # chance for the balanced probing tasks
    for ax in (ax_ev, ax_acc):
        ax.grid(alpha=0.3)
    ax_acc.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def seed_topk(seeds, key):
    """k, mean and sd over the baseline's seeds of one SAE's top-k probing accuracy."""
    curves = [dict(zip(*topk(sae_entries(s)[key], "sae"))) for s in seeds if key in sae_entries(s)]
    ks = [k for k in curves[0] if all(k in c for c in curves)]
    values = np.array([[c[k] for k in ks] for c in curves])
    return ks, values.mean(axis=0), values.std(axis=0, ddof=1)


def plot_topk(runs, out="topk_accuracy.png", root="."):
    seeds = baseline_seeds(root)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    llm_drawn = False
    for run, info in runs.items():
        for key, entry in sae_entries(info).items():
            ks, accs = topk(entry, "sae")
            label = run if len(sae_entries(info)) == 1 else f"{run} {key.split('/')[-1]}"
            if run == "run_0" and len(seeds) > 1:   # the seeds' mean ± sd: what every change is against
                ks, accs, sd = seed_topk(seeds, key)
                ax.plot(ks, accs, color="black", lw=2.5, marker="o", zorder=3,
                        label=f"{label} (baseline, mean ± sd of {len(seeds)} seeds)")
                ax.fill_between(ks, accs - sd, accs + sd, color="black", alpha=0.15, lw=0)
            elif run == "run_0":
                ax.plot(ks, accs, color="black", lw=2.5, marker="o", label=f"{label} (baseline)", zorder=3)
            else:
                ax.plot(ks, accs, marker="o", label=label)
            if not llm_drawn:
                lks, laccs = topk(entry, "llm")
                ax.plot(lks, laccs, color="grey", ls="--", marker=".", label="LLM residual channels")
                llm_drawn = True
    ax.set_xscale("log")
    ax.set_xticks([1, 2, 5, 10, 20, 50], labels=["1", "2", "5", "10", "20", "50"])
    ax.set(xlabel="k (latents or channels given to the probe)", ylabel="test accuracy",
           title="sparse probing: top-k accuracy")
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


if __name__ == "__main__":
    runs = load_runs()
    if not runs:
        raise SystemExit("no run_*/final_info.json here: run experiment.py first")
    for path in (plot_sparsity_fidelity(runs), plot_topk(runs)):
        print(f"wrote {path}")
