"""Stage 6 — reading a run's result: `run_i/final_info.json`, written by the template's harness.

The file holds one entry per trained SAE, keyed `<model>/<hook_name>`, in SAEBench's shape
(`eval_result_metrics.llm/.sae`, `eval_result_details`, `sae_cfg_dict`) plus `core_metrics` and
`training`; a synthetic world's profile adds `eval_result_metrics.ground_truth` (F1, MCC against
the known true features). `eval_config.headline_metrics` names the profile's headline metrics, the
first being the one a run is judged by (sparse-probing top-1 accuracy when absent). This module
flattens each entry into headline metrics, compares a run with run 0, and says when a result cannot
be from a trained SAE. Every comparison carries its interval and verdict (agent/stats.py) and says
when the two SAEs sit at different sparsity. No torch here: the loop and `agent log` import it.

Every file `load_results` reads is validated against the harness's own description of it
(templates/sae_variants/harness/schema.py, loaded by path: pydantic only): a missing or mistyped
field is a ResultsError naming it, which the loop records as the run's failure. The readers below
still take plain dicts and tolerate gaps, because `agent log` and reports also show committed files
that never went through load_results (imported AI-Scientist runs, hand-written ones).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import reprlib
import sys
from pathlib import Path

from pydantic import ValidationError

from agent import resources, stats

RESULT_FILE = "final_info.json"

HEADLINE = ("sae_top_1_test_accuracy", "sae_test_accuracy", "llm_top_1_test_accuracy", "f1", "mcc", "uniqueness",
            "l0", "explained_variance", "frac_dead", "training_steps")
# Headline metrics a usable result must have as finite numbers (and its profile's primary one).
REQUIRED = ("sae_top_1_test_accuracy", "l0", "explained_variance")
# What a result without `eval_config.headline_metrics` (a language-model profile) is judged by.
DEFAULT_HEADLINE_METRICS = ("sae_top_1_test_accuracy",)

SHORT = {"sae_top_1_test_accuracy": "sae_top_1", "sae_test_accuracy": "sae_all", "llm_top_1_test_accuracy": "llm_top_1",
         "f1": "f1", "mcc": "mcc", "uniqueness": "uniqueness",
         "l0": "L0", "explained_variance": "expl_var", "frac_dead": "dead", "training_steps": "steps"}

CHANCE = 0.5
# A trained SAE's top-1 accuracy is well above chance: within this of 0.5 it is noise. The offline
# suites' test sets hold hundreds of balanced examples per data set (binomial sd ~ 0.01 on the mean).
CHANCE_MARGIN = 0.02
# An SAE that reconstructs nothing explains ~0 of the variance; a trained one explains most of it.
MIN_EXPLAINED_VARIANCE = 0.05


class ResultsError(Exception):
    pass


SCHEMA_MODULE = Path("sae_variants") / "harness" / "schema.py"


@functools.cache
def schema():
    """The harness's result models (FinalInfo and its parts). Loaded from the shipped template by
    its path, not as `harness.schema`: importing the harness package would import torch. The
    shipped copy, not a workspace's, so a workspace committed before the schema existed is read too."""
    path = resources.templates_dir() / SCHEMA_MODULE
    spec = importlib.util.spec_from_file_location("sae_agent_result_schema", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # pydantic resolves the models' annotations through their module
    spec.loader.exec_module(module)
    return module


def _field(loc) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


def schema_problem(info: dict, source: str) -> str | None:
    """None when `info` is a valid final_info.json; else one sentence naming the first bad field,
    e.g. `run_1/final_info.json: eval_result_metrics.sae.sae_top_1_test_accuracy: field required
    (SAE 'x/blocks.3.hook_resid_post' has no sae_top_1_test_accuracy)`."""
    try:
        schema().FinalInfo.model_validate(info)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        key, loc = first["loc"][0], first["loc"][1:]
        if not loc:
            text = (f"{source}: {key!r} is not an SAE entry (got {reprlib.repr(first['input'])}): every key "
                    "holds one SAE's results, an object with eval_result_metrics and core_metrics")
        elif first["type"] == "missing":
            text = f"{source}: {_field(loc)}: field required (SAE {key!r} has no {loc[-1]})"
        else:
            msg = first["msg"][0].lower() + first["msg"][1:]
            text = (f"{source}: {_field(loc)}: {msg} "
                    f"(SAE {key!r}, got {reprlib.repr(first['input'])})")
        more = len(errors) - 1
        return text + (f"; and {more} more problem{'s' if more > 1 else ''}" if more else "")
    return None


def load_results(run_dir: Path) -> dict:
    """The parsed `final_info.json` of a run, checked for what every later step relies on."""
    path = Path(run_dir) / RESULT_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ResultsError(f"{path} does not exist: the run has no results (the harness's evaluator "
                           "writes final_info.json from the SAE that experiment.py saves with "
                           "harness.save_sae)") from None
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
    problem = schema_problem(info, str(path))
    if problem:
        raise ResultsError(problem)
    primary = headline_metrics(info)[0]   # what the run is judged by (MCC may be undefined: not required)
    required = REQUIRED + ((primary,) if primary in HEADLINE and primary not in REQUIRED else ())
    for key, metrics in headline(info).items():
        for name in required:
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
        sae, llm, truth = metrics.get("sae") or {}, metrics.get("llm") or {}, metrics.get("ground_truth") or {}
        core, training = entry.get("core_metrics") or {}, entry.get("training") or {}
        out[key] = {
            "sae_top_1_test_accuracy": _number(sae.get("sae_top_1_test_accuracy")),
            "sae_test_accuracy": _number(sae.get("sae_test_accuracy")),
            "llm_top_1_test_accuracy": _number(llm.get("llm_top_1_test_accuracy")),
            "f1": _number(truth.get("f1")),
            "mcc": _number(truth.get("mcc")),
            "uniqueness": _number(truth.get("uniqueness")),
            "l0": _number(core.get("l0")),
            "explained_variance": _number(core.get("explained_variance")),
            "frac_dead": _number(core.get("frac_dead")),
            "training_steps": _number(training.get("training_steps", entry.get("training_steps"))),
        }
    return out


def _eval_config(final_info: dict) -> dict:
    """The first SAE entry's eval_config: the profile's settings, the same for every SAE of a run."""
    for entry in _sae_entries(final_info).values():
        if isinstance(entry.get("eval_config"), dict):
            return entry["eval_config"]
    return {}


def headline_metrics(final_info: dict | None) -> tuple[str, ...]:
    """The profile's headline metrics, most important first: the first is what a run is judged by."""
    names = _eval_config(final_info or {}).get("headline_metrics")
    if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
        return tuple(names)
    return DEFAULT_HEADLINE_METRICS


def world(final_info: dict | None) -> str | None:
    """The synthetic world's short description (`eval_config.world`), None for a language model's data."""
    text = _eval_config(final_info or {}).get("world")
    return text if isinstance(text, str) and text.strip() else None


def primary_value(final_info: dict) -> float | None:
    """The first SAE's value of the profile's primary metric: what the best run is chosen by."""
    metric = headline_metrics(final_info)[0]
    return next(iter(headline(final_info).values()), {}).get(metric)


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


# Metrics compared with an interval: probing ones on test texts, reconstruction ones on held-out blocks,
# the ground-truth F1 on held-out synthetic blocks; the decoder's alignment with the true features
# (MCC, uniqueness) has no test-set noise, only the baseline's seed spread.
PROBE_METRICS = ("sae_top_1_test_accuracy", "sae_test_accuracy")
BLOCK_METRICS = ("explained_variance", "l0")
GROUND_TRUTH_METRICS = ("f1",)
DECODER_METRICS = ("mcc", "uniqueness")
COMPARED = PROBE_METRICS + GROUND_TRUTH_METRICS + DECODER_METRICS + BLOCK_METRICS
# Two SAEs whose L0 differs by more than this fraction are not compared like for like.
SPARSITY_TOLERANCE = 0.10


def evidence(final_info: dict) -> dict[str, dict]:
    """Per SAE key: the evaluator's per-example evidence ({"probing", "core_blocks", "ground_truth_blocks"})."""
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
        paired = _paired_draws(cur_e.get(key, {}), base_e.get(key, {}))
        for metric in COMPARED:
            values = [h[key][metric] for h in base_h if key in h and h[key].get(metric) is not None]
            if cur.get(metric) is None or not values:
                continue
            out[key][metric] = stats.difference(metric, cur[metric], values, paired.get(metric))
    return out


def _paired_draws(ev: dict, base_ev: dict) -> dict:
    """Per metric: bootstrap draws of this run minus baseline seed 0, both resampled on the same test
    texts or held-out blocks (so the test set's own noise cancels). Absent without evidence on both sides."""
    out = {}
    for metric in PROBE_METRICS:
        a, b = (ev.get("probing") or {}).get(metric), (base_ev.get("probing") or {}).get(metric)
        draws = stats.probe_resamples([a, b]) if a and b else []
        if draws:
            out[metric] = draws[0] - draws[1]
    if ev.get("core_blocks") and base_ev.get("core_blocks"):
        blocks = stats.block_resamples([ev["core_blocks"], base_ev["core_blocks"]])
        for metric in BLOCK_METRICS if blocks else ():
            out[metric] = blocks[0][metric] - blocks[1][metric]
    if ev.get("ground_truth_blocks") and base_ev.get("ground_truth_blocks"):
        f1 = stats.f1_resamples([ev["ground_truth_blocks"], base_ev["ground_truth_blocks"]])
        if f1:
            out["f1"] = f1[0] - f1[1]
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
        if ev.get("ground_truth_blocks") and heads[key].get("f1") is not None:
            draws = stats.f1_resamples([ev["ground_truth_blocks"]])
            if draws:
                out[key]["f1"] = stats.interval(draws[0], heads[key]["f1"])
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
                                       "baseline_mean": d.baseline, "baseline_seed_sd": d.seed_sd,
                                       "baseline_seeds": len(seeds)}
                                   for m, d in diffs.get(key, {}).items()}
        matched = matched_sparsity(seeds, frontier or [], current).get(key, {})
        out[key]["at_matched_sparsity"] = {
            m: {"baseline": matched[f"{m}_baseline"], "change": matched[m].value,
                "half_width": matched[m].half_width, "verdict": matched[m].verdict}
            for m in matched_metrics(current) if m in matched}
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


def matched_metrics(final_info: dict) -> tuple[str, ...]:
    """What is compared at matched sparsity: explained variance and the profile's headline metrics."""
    return tuple(dict.fromkeys(("explained_variance",) + headline_metrics(final_info)))


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
        for metric in matched_metrics(current):
            at = frontier_at(seeds, frontier, key, metric, l0)
            plain = diffs.get(key, {}).get(metric)
            if at is None or plain is None or cur.get(metric) is None:
                continue
            judged = plain.verdict if plain.verdict == "no interval" else \
                stats.verdict(metric, cur[metric] - at, plain.half_width)
            entry[metric] = stats.Difference(metric, cur[metric] - at, plain.half_width, plain.seed_sd, judged,
                                             baseline=at)
            entry[f"{metric}_baseline"] = at
        out[key] = entry
    return out


def matched_lines(seeds: list[dict], frontier: list[dict], current: dict, key: str) -> list[str]:
    m = matched_sparsity(seeds, frontier, current).get(key)
    if not m:
        return []
    lo_hi = m["range"]
    metrics = matched_metrics(current)
    if not any(metric in m for metric in metrics):
        span = f" (L0 {lo_hi[0]:.1f}–{lo_hi[1]:.1f})" if lo_hi else ""
        return [f"  at matched sparsity: L0 {m['l0']:.1f} lies outside the baseline frontier{span}; "
                "no like-for-like comparison, so no gain can be claimed"]
    lines = [f"  at matched sparsity (the baseline frontier interpolated at this run's L0 {m['l0']:.1f}):"]
    for metric in metrics:
        if metric in m:
            d = m[metric]
            lines.append(f"    {metric:<24}baseline {m[metric + '_baseline']:.3f}  change "
                         f"{d.value:+.3f} ± {d.half_width:.3f}  {d.verdict}")
    return lines


def reference_lines(references: dict[str, dict] | None, key: str,
                    metrics: tuple[str, ...] = ("explained_variance",) + DEFAULT_HEADLINE_METRICS) -> list[str]:
    """Where the template's reference SAEs (a TopK SAE at the baseline's L0) sit: context, no verdict."""
    lines = []
    for name, ref in (references or {}).items():
        h = headline(ref).get(key)
        if h:
            k = (_sae_entries(ref).get(key, {}).get("training") or {}).get("k")
            what = f"{name} SAE" + (f", k {k}" if k else "")
            lines.append(f"  reference ({what}, the harness's own, same data and budget): "
                         + ", ".join(f"{m} {_fmt(m, h.get(m))}" for m in ("l0", *metrics)))
    return lines


def seed_means(seeds: list[dict], key: str) -> dict[str, float]:
    """One SAE's headline metrics averaged over the baseline's seeds: the baseline every change is against."""
    per_seed = [headline(s).get(key) or {} for s in seeds]
    out = {}
    for name in HEADLINE:
        values = [h[name] for h in per_seed if h.get(name) is not None]
        if values:
            out[name] = sum(values) / len(values)
    return out


def _table_metrics(final_info: dict) -> tuple[str, ...]:
    """The comparison's rows: the profile's headline metrics first, then the others."""
    return tuple(dict.fromkeys([m for m in headline_metrics(final_info) if m in HEADLINE] + list(HEADLINE)))


def compare(baseline: dict, current: dict, seeds: list[dict] | None = None,
            frontier: list[dict] | None = None, references: dict[str, dict] | None = None) -> str:
    """A table of headline metrics, this run vs run 0 (the mean ± sd of its seeds), with each change's
    95% interval and verdict. Rows neither side has a value for are left out."""
    seeds = seeds or [baseline]
    base_h, cur_h = headline(baseline), headline(current)
    diffs = differences(seeds, current)
    lines = []
    for key in list(cur_h) + [k for k in base_h if k not in cur_h]:
        cur, base = cur_h.get(key, {}), seed_means(seeds, key) if key in base_h else {}
        lines.append(f"{key}" + ("" if key in base_h else "  (no such SAE in run 0)")
                     + ("" if key in cur_h else "  (missing from this run)"))
        label = f"run 0 ({len(seeds)} seeds)" if len(seeds) > 1 else "run 0"
        lines.append(f"  {'metric':<26}{label:>16}{'this run':>10}  {'change (95% interval)':<24}verdict")
        for name in _table_metrics(current):
            b, c = base.get(name), cur.get(name)
            if b is None and c is None:
                continue
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
            lines += reference_lines(references, key, matched_metrics(current))
    return "\n".join(lines)


def subject_summary(baseline: dict | None, current: dict, seeds: list[dict] | None = None) -> str:
    """One line for a commit subject: the profile's primary metric, e.g.
    `sae_top_1 0.557 (-0.015 ± 0.021, no detectable change)` or `f1 0.612 (+0.031 ± 0.008, better)`.

    Without a baseline (the baseline's own commit) there is no change to show.
    """
    cur_h, base_h = headline(current), headline(baseline) if baseline else {}
    if not cur_h:
        return "no results"
    # The first headline metric the result holds: a synthetic world's final split is sparse probing
    # alone (its ground truth is scored on the held-out samples), so it is summed up by top-1 probing.
    key = next(iter(cur_h))
    metric = next((m for m in (*headline_metrics(current), *DEFAULT_HEADLINE_METRICS) if cur_h[key].get(m) is not None),
                  headline_metrics(current)[0])
    name, cur = SHORT.get(metric, metric), cur_h[key].get(metric)
    if cur is None:
        return f"{name} —"
    if key not in base_h or base_h[key].get(metric) is None:
        return f"{name} {cur:.3f}"
    seeds = seeds or [baseline]
    diff = differences(seeds, current).get(key, {}).get(metric)
    text = f"{name} {cur:.3f} ({diff.short()})" if diff else f"{name} {cur:.3f}"
    base_l0 = seed_means(seeds, key).get("l0")
    if sparsity_note(base_l0, cur_h[key].get("l0")):
        text += f" at L0 {cur_h[key]['l0']:.0f} vs {base_l0:.0f}"
    return text


def describe_baseline(seeds: list[dict], references: dict[str, dict] | None = None) -> str:
    """The baseline's headline metrics with their seed spread and the smallest change it can detect."""
    lines = [compare(seeds[0], seeds[0], seeds, references=references)]
    # A second seed against the first is what a change that does nothing looks like.
    for key, diffs in differences(seeds, seeds[1] if len(seeds) > 1 else seeds[0]).items():
        for metric in headline_metrics(seeds[0]):
            d = diffs.get(metric)
            if d is not None:
                noise = "seed noise only" if metric in DECODER_METRICS else "test-set and seed noise"
                lines.append(f"  {key}: a change in {SHORT.get(metric, metric)} smaller than about "
                             f"±{d.half_width:.3f} is not distinguishable from noise here ({noise}, 95%).")
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
