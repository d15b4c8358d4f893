"""Stage 6 — reading a run's result: `run_i/final_info.json`, written by the template's harness.

The file holds one entry per trained SAE, keyed `<model>/<hook_name>`, in SAEBench's shape
(`eval_result_metrics.llm/.sae`, `eval_result_details`, `sae_cfg_dict`) plus `core_metrics` and
`training`. This module flattens each entry into headline metrics, compares a run with run 0, and
says when a result cannot be from a trained SAE. No torch here: the loop and `agent log` import it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

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


def compare(baseline: dict, current: dict) -> str:
    """A compact table of headline metrics, current vs run 0 with deltas, one block per SAE."""
    base_h, cur_h = headline(baseline), headline(current)
    lines = []
    for key in list(cur_h) + [k for k in base_h if k not in cur_h]:
        cur, base = cur_h.get(key, {}), base_h.get(key, {})
        lines.append(f"{key}" + ("" if key in base_h else "  (no such SAE in run 0)")
                     + ("" if key in cur_h else "  (missing from this run)"))
        lines.append(f"  {'metric':<24}{'run 0':>10}{'this run':>10}{'delta':>10}")
        for name in HEADLINE:
            b, c = base.get(name), cur.get(name)
            lines.append(f"  {name:<24}{_fmt(name, b):>10}{_fmt(name, c):>10}{_delta(name, b, c):>10}")
    return "\n".join(lines)


def subject_summary(baseline: dict | None, current: dict) -> str:
    """One line for a commit subject, e.g. `sae_top_1 0.742 (+0.031 vs run 0)`; the first SAE speaks.

    Without a baseline (the baseline's own commit) there is no change to show.
    """
    cur_h, base_h = headline(current), headline(baseline) if baseline else {}
    if not cur_h:
        return "no results"
    key = next(iter(cur_h))
    cur = cur_h[key].get("sae_top_1_test_accuracy")
    if cur is None:
        return "sae_top_1 —"
    base = base_h.get(key, {}).get("sae_top_1_test_accuracy")
    if base is None:
        return f"sae_top_1 {cur:.3f}"
    return f"sae_top_1 {cur:.3f} ({cur - base:+.3f} vs run 0)"


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
