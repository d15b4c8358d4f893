"""Intervals and verdicts: a difference is a finding only when its interval excludes zero."""

import random

import numpy as np
import pytest
import torch

from agent import results, stats

KEY = "m/blocks.3.hook_resid_post"


def bits(n, p, seed):
    rng = random.Random(seed)
    return "".join("1" if rng.random() < p else "0" for _ in range(n))


def run(p_correct, *, seed=0, ev_err=10.0, n=200, l0=30.0):
    """A final_info.json entry with per-example evidence: accuracy about p_correct on 2 x 2 tasks."""
    correct = {f"ds{d}/c{c}": bits(n, p_correct, seed * 100 + d * 10 + c) for d in range(2) for c in range(2)}
    acc = float(np.mean([np.mean([ch == "1" for ch in s]) for s in correct.values()]))
    rng = np.random.default_rng(seed)
    blocks = {"sq_err": list(ev_err + rng.normal(0, 0.5, 50)), "sq_dev": [100.0] * 50,
              "l0": [l0 * 64] * 50, "tokens": [64] * 50}
    ev = 1 - sum(blocks["sq_err"]) / sum(blocks["sq_dev"])
    return {KEY: {"eval_result_metrics": {"sae": {"sae_top_1_test_accuracy": acc, "sae_test_accuracy": acc},
                                          "llm": {}},
                  "core_metrics": {"l0": l0, "explained_variance": ev, "frac_dead": 0.0},
                  "training": {"training_steps": 100},
                  "per_example": {"probing": {"sae_top_1_test_accuracy": correct, "sae_test_accuracy": correct},
                                  "core_blocks": blocks}}}


def test_the_same_result_twice_is_no_detectable_change():
    base = run(0.7)
    d = results.differences([base], base)[KEY]["sae_top_1_test_accuracy"]
    assert d.value == 0 and d.verdict == "no detectable change"


def test_a_large_gain_on_the_same_texts_is_better_and_a_loss_worse():
    base, better, worse = run(0.6), run(0.9, seed=1), run(0.3, seed=2)
    assert results.differences([base], better)[KEY]["sae_top_1_test_accuracy"].verdict == "better"
    assert results.differences([base], worse)[KEY]["sae_top_1_test_accuracy"].verdict == "worse"


def test_seed_spread_widens_the_interval_until_a_small_gain_is_noise():
    base = run(0.70)
    current = run(0.76, seed=5)
    alone = results.differences([base], current)[KEY]["sae_top_1_test_accuracy"]
    # three baseline seeds that differ by as much as the gain
    seeds = [base, run(0.64, seed=7), run(0.78, seed=8)]
    noisy = results.differences(seeds, current)[KEY]["sae_top_1_test_accuracy"]
    assert noisy.half_width > alone.half_width and noisy.seed_sd > 0.03
    assert noisy.verdict == "no detectable change"


def test_reseeded_copies_of_the_baseline_are_rarely_a_finding():
    """The known null at the level of the statistics: a metric whose only noise is the seed, judged
    against 3 baseline seeds. At most 5% of reseeded copies may come out better or worse."""
    rng = np.random.default_rng(0)
    trials, flagged = 4000, 0
    for _ in range(trials):
        seeds = list(0.80 + 0.006 * rng.standard_normal(3))
        current = 0.80 + 0.006 * rng.standard_normal()
        flagged += stats.difference("explained_variance", current, seeds, None).verdict != "no detectable change"
    assert flagged / trials < 0.065, f"{flagged / trials:.1%} of null runs were called a finding"


def test_explained_variance_is_compared_on_the_same_held_out_blocks():
    base, current = run(0.7, ev_err=20.0), run(0.7, ev_err=10.0, seed=3)
    d = results.differences([base], current)[KEY]["explained_variance"]
    assert d.value == pytest.approx(0.1, abs=0.01) and d.verdict == "better"


def test_subject_carries_the_interval_the_verdict_and_the_sparsity_warning():
    text = results.subject_summary(run(0.6), run(0.9, seed=1, l0=60.0))
    assert text.startswith("sae_top_1 0.8") and "±" in text and "better" in text and "at L0 60 vs 30" in text
    assert "not like for like" in results.compare(run(0.6), run(0.9, seed=1, l0=60.0))


def test_intervals_cover_the_value_and_are_recorded_for_plots():
    record = results.uncertainty_record([run(0.7)], run(0.8, seed=1))
    top = record[KEY]["sae_top_1_test_accuracy"]
    assert top["low"] < top["value"] < top["high"] and top["high"] - top["low"] < 0.15
    assert record[KEY]["vs_baseline"]["sae_top_1_test_accuracy"]["verdict"] == "better"


def test_minimum_detectable_difference_grows_with_noise():
    assert stats.minimum_detectable_difference(0.01, None, 1) == pytest.approx(0.028, abs=0.001)
    assert stats.minimum_detectable_difference(0.01, 0.02, 3) > 0.06


@pytest.fixture
def probing(harness_path):
    from harness import probing
    return probing


def test_rescaling_latents_moves_no_probe_accuracy(probing):
    # The same SAE with latents x16 (decoder /16): standardised features give the same probes.
    g = torch.Generator().manual_seed(0)
    classes = {c: torch.randn(40, 64, generator=g).abs() + (torch.arange(64) == i).float() * 0.3
               for i, c in enumerate(("a", "b", "c"))}
    test = {c: torch.randn(20, 64, generator=g).abs() + (torch.arange(64) == i).float() * 0.3
            for i, c in enumerate(("a", "b", "c"))}
    scaled = {c: v * 16 for c, v in classes.items()}, {c: v * 16 for c, v in test.items()}
    for k in (1, 5, None):
        plain = probing._probe(classes, test, k, "t")
        big = probing._probe(*scaled, k, "t")
        assert {c: r["correct"] for c, r in plain.items()} == {c: r["correct"] for c, r in big.items()}


def test_a_gain_that_is_only_lower_sparsity_vanishes_at_matched_sparsity():
    # baseline at L0 30 (EV 0.80, three seeds); its frontier: L0 15 -> 0.70, L0 60 -> 0.88. A run at
    # L0 45 with EV 0.847 looks better than run 0, but sits on the baseline's own curve.
    seeds = [run(0.7, ev_err=20.0, l0=30.0), run(0.7, ev_err=19.5, l0=30.0, seed=9),
             run(0.7, ev_err=20.5, l0=30.0, seed=10)]
    frontier = [run(0.7, ev_err=30.0, l0=15.0), run(0.7, ev_err=12.0, l0=60.0)]
    current = run(0.7, ev_err=15.3, l0=45.0, seed=4)
    plain = results.differences(seeds, current)[KEY]["explained_variance"]
    assert plain.verdict == "better"
    matched = results.matched_sparsity(seeds, frontier, current)[KEY]
    assert matched["explained_variance_baseline"] == pytest.approx(0.8468, abs=0.003)
    assert matched["explained_variance"].verdict == "no detectable change"
    text = results.compare(seeds[0], current, seeds, frontier)
    assert "at matched sparsity" in text and "no detectable change" in text


def test_a_run_outside_the_frontier_says_so_instead_of_claiming_a_gain():
    seeds = [run(0.7, l0=30.0)]
    frontier = [run(0.7, l0=15.0), run(0.7, l0=60.0)]
    text = results.compare(seeds[0], run(0.9, seed=1, l0=120.0), seeds, frontier)
    assert "outside the baseline frontier" in text and "no gain can be claimed" in text


def test_the_topk_reference_is_shown_beside_a_comparison_without_a_verdict():
    seeds = [run(0.7, seed=s) for s in range(3)]
    reference = run(0.75, seed=9, ev_err=5.0, l0=30.0)
    reference[KEY]["training"]["k"] = 30
    text = results.compare(seeds[0], run(0.7, seed=5), seeds, references={"topk": reference})
    (line,) = [ln for ln in text.splitlines() if "reference" in ln]
    assert "topk SAE, k 30" in line and "explained_variance 0.950" in line
    assert not any(v in line for v in ("better", "worse", "no detectable change"))
    record = results.uncertainty_record(seeds, run(0.7, seed=5), references={"topk": reference})
    assert record[KEY]["references"]["topk"]["l0"] == 30.0
    assert "reference" not in results.compare(seeds[0], run(0.7, seed=5), seeds), "none without one"
