"""Stage 6 — reading a run's result: `run_i/final_info.json`, written by the template's harness.

The file holds one entry per trained SAE, keyed `<model>/<hook_name>`, in SAEBench's shape
(`eval_result_metrics.llm/.sae`, `eval_result_details`, `sae_cfg_dict`) plus `core_metrics` and
`training`. This module flattens each entry into headline metrics, compares a run with run 0, and
says when a result cannot be from a trained SAE. Every comparison carries its interval and verdict
(agent/stats.py) and says when the two SAEs sit at different sparsity. No torch here: the loop and
`agent log` import it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from agent import stats

RESULT_FILE = "final_info.json"

HEADLINE = ("sae_top_1_test_accuracy", "sae_test_accuracy", "llm_top_1_test_accuracy", "l0",
            "explained_variance", "frac_dead", "training_steps")
# Headline metrics a usable result must have as finite numbers.
REQUIRED = ("sae_top_1_test_accuracy", "l0", "explained_variance")

SHORT = {"sae_top_1_test_accuracy": "sae_top_1", "sae_test_accuracy": "sae_all", "llm_top_1_test_accuracy": "llm_top_1",
         "l0": "L0", "explained_variance": "expl_var", "frac_dead": "dead", "training_steps": "steps"}

CHANCE = 0.5
# A trained SAE's top-1 accuracy is well above chance: within this of 0.5 it is noise. The offline
# suites' test sets hold hundreds of balanced examples per data set (binomial sd ~ 0.01 on the mean).
CHANCE_MARGIN = 0.02
# An SAE that reconstructs nothing explains ~0 of the variance; a trained one explains most of it.
MIN_EXPLAINED_VARIANCE = 0.05


class ResultsError(Exception):
    pass


def load_results(run_dir: Path) -> dict:
    """The parsed `final_info.json` of a run, checked for what every later step relies on."""
    path = Path(run_dir) / RESULT_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ResultsError(f"{path} does not exist: the run wrote no results "
                           "(experiment.py must end by writing final_info.json into --out_dir)") from None
    try:
        info = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(info, dict):
        raise ResultsError(f"{path} must hold a JSON object keyed by SAE, not {type(info).__name__}")
    entries = _sae_entries(info)
    if not entries:
        raise ResultsError(f"{path} has no SAE entry (expected keys like 'google/gemma-3-270m/blocks.6.hook_resid_post' "
                           "with eval_result_metrics inside)")
    for key, metrics in headline(info).items():
        for name in REQUIRED:
            value = metrics.get(name)
            if value is None:
                raise ResultsError(f"{path}: SAE {key!r} has no {name}")
            if not math.isfinite(value):
                raise ResultsError(f"{path}: SAE {key!r} has {name} = {value} (training diverged?)")
    return info


def _sae_entries(info: dict) -> dict[str, dict]:
    return {k: v for k, v in info.items()
            if isinstance(v, dict) and isinstance(v.get("eval_result_metrics"), dict)}


def _number(value) -> float | None:
    """A float (NaN kept: load_results reports it as divergence), None when absent or not numeric."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def headline(final_info: dict) -> dict[str, dict[str, float | None]]:
    """Per SAE key: the headline metrics, None where the entry lacks one."""
    out = {}
    for key, entry in _sae_entries(final_info).items():
        metrics = entry.get("eval_result_metrics", {})
        sae, llm = metrics.get("sae") or {}, metrics.get("llm") or {}
        core, training = entry.get("core_metrics") or {}, entry.get("training") or {}
        out[key] = {
            "sae_top_1_test_accuracy": _number(sae.get("sae_top_1_test_accuracy")),
            "sae_test_accuracy": _number(sae.get("sae_test_accuracy")),
            "llm_top_1_test_accuracy": _number(llm.get("llm_top_1_test_accuracy")),
            "l0": _number(core.get("l0")),
            "explained_variance": _number(core.get("explained_variance")),
            "frac_dead": _number(core.get("frac_dead")),
            "training_steps": _number(training.get("training_steps", entry.get("training_steps"))),
        }
    return out


def _fmt(name: str, value: float | None) -> str:
    if value is None:
        return "—"
    if name == "training_steps":
        return f"{value:.0f}"
    if name == "l0":
        return f"{value:.1f}"
    return f"{value:.3f}"


def _delta(name: str, base: float | None, cur: float | None) -> str:
    if base is None or cur is None:
        return ""
    d = cur - base
    if name == "training_steps":
        return f"{d:+.0f}"
    if name == "l0":
        return f"{d:+.1f}"
    return f"{d:+.3f}"


# Metrics compared with an interval: probing ones on test texts, reconstruction ones on held-out blocks.
PROBE_METRICS = ("sae_top_1_test_accuracy", "sae_test_accuracy")
BLOCK_METRICS = ("explained_variance", "l0")
# Two SAEs whose L0 differs by more than this fraction are not compared like for like.
SPARSITY_TOLERANCE = 0.10


def evidence(final_info: dict) -> dict[str, dict]:
    """Per SAE key: the evaluator's per-example evidence ({"probing": ..., "core_blocks": ...})."""
    return {k: (v.get("per_example") or {}) for k, v in _sae_entries(final_info).items()}


def differences(seeds: list[dict], current: dict) -> dict[str, dict[str, stats.Difference]]:
    """Per SAE key and metric: this run against the baseline's seeds (seeds[0] is run_0 itself)."""
    out: dict[str, dict[str, stats.Difference]] = {}
    cur_h, cur_e = headline(current), evidence(current)
    base_h = [headline(b) for b in seeds]
    base_e = evidence(seeds[0])
    for key, cur in cur_h.items():
        if key not in base_h[0]:
            continue
        out[key] = {}
        ev, base_ev = cur_e.get(key, {}), base_e.get(key, {})
        blocks = None
        if ev.get("core_blocks") and base_ev.get("core_blocks"):
            blocks = stats.block_resamples([ev["core_blocks"], base_ev["core_blocks"]])
        for metric in PROBE_METRICS + BLOCK_METRICS:
            values = [h[key][metric] for h in base_h if key in h and h[key].get(metric) is not None]
            if cur.get(metric) is None or not values:
                continue
            paired = None
            if metric in PROBE_METRICS:
                a, b = (ev.get("probing") or {}).get(metric), (base_ev.get("probing") or {}).get(metric)
                draws = stats.probe_resamples([a, b]) if a and b else []
                paired = draws[0] - draws[1] if draws else None
            elif blocks:
                paired = blocks[0][metric] - blocks[1][metric]
            out[key][metric] = stats.difference(metric, cur[metric], values, paired)
    return out


def intervals(final_info: dict) -> dict[str, dict[str, stats.Interval]]:
    """Per SAE key: each headline metric with its own 95% bootstrap interval (where evidence exists)."""
    out: dict[str, dict[str, stats.Interval]] = {}
    heads = headline(final_info)
    for key, ev in evidence(final_info).items():
        out[key] = {}
        for metric in PROBE_METRICS:
            correct = (ev.get("probing") or {}).get(metric)
            draws = stats.probe_resamples([correct]) if correct else []
            if len(draws) and heads[key].get(metric) is not None:
                out[key][metric] = stats.interval(draws[0], heads[key][metric])
        if ev.get("core_blocks"):
            (draws,) = stats.block_resamples([ev["core_blocks"]])
            for metric in BLOCK_METRICS:
                if heads[key].get(metric) is not None:
                    out[key][metric] = stats.interval(draws[metric], heads[key][metric])
    return out


def uncertainty_record(seeds: list[dict], current: dict, frontier: list[dict] | None = None,
                       references: dict[str, dict] | None = None) -> dict:
    """`run_i/intervals.json`: each metric's interval and its change against the baseline, for plots,
    reports and trackers (the agent writes it; final_info.json stays the evaluator's own)."""
    diffs = differences(seeds, current)
    out = {}
    for key, metrics in intervals(current).items():
        out[key] = {m: {"value": i.value, "low": i.low, "high": i.high} for m, i in metrics.items()}
        out[key]["vs_baseline"] = {m: {"change": d.value, "half_width": d.half_width, "verdict": d.verdict,
                                       "baseline_seed_sd": d.seed_sd, "baseline_seeds": len(seeds)}
                                   for m, d in diffs.get(key, {}).items()}
        matched = matched_sparsity(seeds, frontier or [], current).get(key, {})
        out[key]["at_matched_sparsity"] = {
            m: {"baseline": matched[f"{m}_baseline"], "change": matched[m].value,
                "half_width": matched[m].half_width, "verdict": matched[m].verdict}
            for m in MATCHED_METRICS if m in matched}
        refs = {name: headline(ref).get(key) for name, ref in (references or {}).items()}
        if any(refs.values()):
            out[key]["references"] = {name: h for name, h in refs.items() if h}
    return out


def sparsity_note(base_l0: float | None, cur_l0: float | None) -> str | None:
    """A sentence when two SAEs sit at different sparsity, which moves every other metric."""
    if base_l0 is None or cur_l0 is None or base_l0 <= 0:
        return None
    if abs(cur_l0 - base_l0) / base_l0 <= SPARSITY_TOLERANCE:
        return None
    return (f"L0 {cur_l0:.1f} vs the baseline's {base_l0:.1f}: at a different sparsity, so the changes in "
            "explained variance and accuracy are not like for like (a sparser SAE reconstructs worse)")


MATCHED_METRICS = ("explained_variance", "sae_top_1_test_accuracy")


def frontier_at(seeds: list[dict], frontier: list[dict], key: str, metric: str, l0: float) -> float | None:
    """The baseline's `metric` interpolated at sparsity `l0` (linear in log L0) along its frontier:
    the seeds' mean point and the frontier's points. None outside the frontier's range of L0."""
    points = []
    seed_points = [headline(b).get(key, {}) for b in seeds]
    seed_points = [h for h in seed_points if h.get("l0") and h.get(metric) is not None]
    if seed_points:
        points.append((sum(h["l0"] for h in seed_points) / len(seed_points),
                       sum(h[metric] for h in seed_points) / len(seed_points)))
    for f in frontier:
        h = headline(f).get(key, {})
        if h.get("l0") and h.get(metric) is not None:
            points.append((h["l0"], h[metric]))
    points.sort()
    if len(points) < 2 or not points[0][0] <= l0 <= points[-1][0]:
        return None
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 <= l0 <= x1:
            if x1 == x0:
                return y0
            t = (math.log(l0) - math.log(x0)) / (math.log(x1) - math.log(x0))
            return y0 + t * (y1 - y0)
    return None


def matched_sparsity(seeds: list[dict], frontier: list[dict], current: dict) -> dict[str, dict]:
    """Per SAE key: {"l0", "range", metric: Difference against the frontier at the run's own L0}.

    The interval is the one of the plain comparison (test-set and seed noise at the baseline's own
    setting), carried over to the interpolated point."""
    out: dict[str, dict] = {}
    if not frontier:
        return out
    diffs = differences(seeds, current)
    for key, cur in headline(current).items():
        l0 = cur.get("l0")
        if not l0:
            continue
        l0s = [h[key]["l0"] for h in map(headline, seeds + frontier) if key in h and h[key].get("l0")]
        entry: dict = {"l0": l0, "range": (min(l0s), max(l0s)) if l0s else None}
        for metric in MATCHED_METRICS:
            at = frontier_at(seeds, frontier, key, metric, l0)
            plain = diffs.get(key, {}).get(metric)
            if at is None or plain is None or cur.get(metric) is None:
                continue
            entry[metric] = stats.Difference(metric, cur[metric] - at, plain.half_width, plain.seed_sd,
                                             _verdict(metric, cur[metric] - at, plain.half_width, plain.verdict))
            entry[f"{metric}_baseline"] = at
        out[key] = entry
    return out


def _verdict(metric: str, value: float, half: float, plain_verdict: str) -> str:
    if plain_verdict == "no interval":
        return plain_verdict
    higher = stats.HIGHER_IS_BETTER.get(metric, True)
    if value - half > 0:
        return "better" if higher else "worse"
    if value + half < 0:
        return "worse" if higher else "better"
    return "no detectable change"


def matched_lines(seeds: list[dict], frontier: list[dict], current: dict, key: str) -> list[str]:
    m = matched_sparsity(seeds, frontier, current).get(key)
    if not m:
        return []
    lo_hi = m["range"]
    if not any(metric in m for metric in MATCHED_METRICS):
        span = f" (L0 {lo_hi[0]:.1f}–{lo_hi[1]:.1f})" if lo_hi else ""
        return [f"  at matched sparsity: L0 {m['l0']:.1f} lies outside the baseline frontier{span}; "
                "no like-for-like comparison, so no gain can be claimed"]
    lines = [f"  at matched sparsity (the baseline frontier interpolated at this run's L0 {m['l0']:.1f}):"]
    for metric in MATCHED_METRICS:
        if metric in m:
            d = m[metric]
            lines.append(f"    {metric:<24}baseline {m[metric + '_baseline']:.3f}  change "
                         f"{d.value:+.3f} ± {d.half_width:.3f}  {d.verdict}")
    return lines


def reference_lines(references: dict[str, dict] | None, key: str) -> list[str]:
    """Where the template's reference SAEs (a TopK SAE at the baseline's L0) sit: context, no verdict."""
    lines = []
    for name, ref in (references or {}).items():
        h = headline(ref).get(key)
        if h:
            k = (_sae_entries(ref).get(key, {}).get("training") or {}).get("k")
            what = f"{name} SAE" + (f", k {k}" if k else "")
            lines.append(f"  reference ({what}, the harness's own, same data and budget): "
                         + ", ".join(f"{m} {_fmt(m, h.get(m))}" for m in ("l0", *MATCHED_METRICS)))
    return lines


def compare(baseline: dict, current: dict, seeds: list[dict] | None = None,
            frontier: list[dict] | None = None, references: dict[str, dict] | None = None) -> str:
    """A table of headline metrics, this run vs run 0, with each change's 95% interval and verdict."""
    seeds = seeds or [baseline]
    base_h, cur_h = headline(baseline), headline(current)
    diffs = differences(seeds, current)
    lines = []
    for key in list(cur_h) + [k for k in base_h if k not in cur_h]:
        cur, base = cur_h.get(key, {}), base_h.get(key, {})
        lines.append(f"{key}" + ("" if key in base_h else "  (no such SAE in run 0)")
                     + ("" if key in cur_h else "  (missing from this run)"))
        label = f"run 0 ({len(seeds)} seeds)" if len(seeds) > 1 else "run 0"
        lines.append(f"  {'metric':<26}{label:>16}{'this run':>10}  {'change (95% interval)':<24}verdict")
        for name in HEADLINE:
            b, c = base.get(name), cur.get(name)
            d = diffs.get(key, {}).get(name)
            base_text = _fmt(name, b)
            if d is not None and d.seed_sd is not None:
                base_text += f" ± {_fmt(name, d.seed_sd)}"
            if d is not None:
                change, verdict = f"{_delta(name, 0.0, d.value)} ± {_fmt(name, d.half_width)}", d.verdict
            else:
                change, verdict = _delta(name, b, c), ""
            lines.append(f"  {name:<26}{base_text:>16}{_fmt(name, c):>10}  {change:<24}{verdict}".rstrip())
        note = sparsity_note(base.get("l0"), cur.get("l0"))
        if note and key in cur_h:
            lines.append(f"  note: {note}")
            lines += matched_lines(seeds, frontier or [], current, key)
        if key in cur_h:
            lines += reference_lines(references, key)
    return "\n".join(lines)


def subject_summary(baseline: dict | None, current: dict, seeds: list[dict] | None = None) -> str:
    """One line for a commit subject, e.g. `sae_top_1 0.557 (-0.015 ± 0.021, no detectable change)`.

    Without a baseline (the baseline's own commit) there is no change to show.
    """
    cur_h, base_h = headline(current), headline(baseline) if baseline else {}
    if not cur_h:
        return "no results"
    key = next(iter(cur_h))
    cur = cur_h[key].get("sae_top_1_test_accuracy")
    if cur is None:
        return "sae_top_1 —"
    if key not in base_h or base_h[key].get("sae_top_1_test_accuracy") is None:
        return f"sae_top_1 {cur:.3f}"
    diff = differences(seeds or [baseline], current).get(key, {}).get("sae_top_1_test_accuracy")
    text = f"sae_top_1 {cur:.3f} ({diff.short()})" if diff else f"sae_top_1 {cur:.3f}"
    if sparsity_note(base_h[key].get("l0"), cur_h[key].get("l0")):
        text += f" at L0 {cur_h[key]['l0']:.0f} vs {base_h[key]['l0']:.0f}"
    return text


def describe_baseline(seeds: list[dict], references: dict[str, dict] | None = None) -> str:
    """The baseline's headline metrics with their seed spread and the smallest change it can detect."""
    lines = [compare(seeds[0], seeds[0], seeds, references=references)]
    # A second seed against the first is what a change that does nothing looks like.
    for key, diffs in differences(seeds, seeds[1] if len(seeds) > 1 else seeds[0]).items():
        d = diffs.get("sae_top_1_test_accuracy")
        if d is not None:
            lines.append(f"  {key}: a change in sae_top_1 smaller than about ±{d.half_width:.3f} is not "
                         "distinguishable from noise here (test-set and seed noise, 95%).")
    return "\n".join(lines)


def untrained_problems(final_info: dict) -> list[str]:
    """Sentences saying why a result cannot come from a trained SAE; empty when it looks trained."""
    problems = []
    for key, m in headline(final_info).items():
        steps, top1, ev = m.get("training_steps"), m.get("sae_top_1_test_accuracy"), m.get("explained_variance")
        if steps is not None and steps <= 0:
            problems.append(f"{key}: the SAE was trained for {steps:.0f} steps.")
        if top1 is not None and abs(top1 - CHANCE) <= CHANCE_MARGIN:
            problems.append(f"{key}: SAE top-1 probing accuracy is {top1:.3f}, within {CHANCE_MARGIN} of chance "
                            f"({CHANCE}): its latents carry no information about the probed classes.")
        if ev is not None and ev < MIN_EXPLAINED_VARIANCE:
            problems.append(f"{key}: explained variance is {ev:.3f} (below {MIN_EXPLAINED_VARIANCE}): "
                            "the SAE reconstructs almost nothing of its input.")
    return problems
