"""Intervals and verdicts: a difference is a finding only when its interval excludes zero."""

import json
import random
import re

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


# -- a synthetic world: F1 and MCC against known true features -----------------------------

def test_f1_is_compared_on_the_same_held_out_blocks(synthetic):
    base, better = synthetic(0.6), synthetic(0.85, seed=1)
    (key,) = base
    d = results.differences([base], better)[key]["f1"]
    assert d.value == pytest.approx(better[key]["eval_result_metrics"]["ground_truth"]["f1"]
                                    - base[key]["eval_result_metrics"]["ground_truth"]["f1"])
    assert d.verdict == "better" and 0 < d.half_width < d.value / 2, "a paired interval from the blocks"
    assert results.differences([better], base)[key]["f1"].verdict == "worse"
    same = results.differences([base], base)[key]["f1"]
    assert same.value == 0 and same.verdict == "no detectable change"


def test_a_reseeded_copy_of_the_baseline_is_no_detectable_change_in_f1(synthetic):
    seeds = [synthetic(0.7, seed=s, mcc=0.80 + 0.01 * s) for s in range(3)]
    (key,) = seeds[0]
    diffs = results.differences(seeds, synthetic(0.7, seed=5, mcc=0.81))[key]
    assert diffs["f1"].verdict == "no detectable change"
    assert diffs["mcc"].verdict == "no detectable change"


def test_mcc_and_uniqueness_have_only_the_seed_spread(synthetic):
    base, other = synthetic(0.7, mcc=0.8, uniqueness=0.9), synthetic(0.7, seed=1, mcc=0.95, uniqueness=1.0)
    (key,) = base
    one_seed = results.differences([base], other)[key]
    assert one_seed["mcc"].verdict == "no interval" and one_seed["uniqueness"].verdict == "no interval"
    seeds = [base, synthetic(0.7, seed=2, mcc=0.81), synthetic(0.7, seed=3, mcc=0.79)]
    d = results.differences(seeds, other)[key]["mcc"]
    assert d.seed_sd == pytest.approx(0.01) and d.baseline == pytest.approx(0.8) and d.verdict == "better"


def test_f1_has_its_own_interval_and_is_recorded_against_the_seeds_mean(synthetic):
    seeds = [synthetic(0.6, seed=s) for s in range(3)]
    (key,) = seeds[0]
    record = results.uncertainty_record(seeds, synthetic(0.85, seed=7))[key]
    f1 = record["f1"]
    assert f1["low"] < f1["value"] < f1["high"] and f1["high"] - f1["low"] < 0.1
    vs = record["vs_baseline"]["f1"]
    means = [s[key]["eval_result_metrics"]["ground_truth"]["f1"] for s in seeds]
    assert vs["verdict"] == "better" and vs["baseline_mean"] == pytest.approx(np.mean(means))
    assert vs["baseline_seeds"] == 3 and vs["baseline_seed_sd"] == pytest.approx(np.std(means, ddof=1))


def test_l0_is_the_sparsity_setting_never_better_or_worse(synthetic):
    seeds = [run(0.7, l0=30.0), run(0.7, seed=3, l0=29.0), run(0.7, seed=4, l0=31.0)]
    for current in (run(0.7, seed=1, l0=15.0), run(0.7, seed=2, l0=60.0)):
        d = results.differences(seeds, current)[KEY]["l0"]
        assert d.half_width > 0 and abs(d.value) > 2 * d.half_width and d.verdict == stats.SETTING, \
            "an interval, never a verdict"
        assert results.uncertainty_record(seeds, current)[KEY]["vs_baseline"]["l0"]["verdict"] == stats.SETTING
        (row,) = [ln for ln in results.compare(seeds[0], current, seeds).splitlines() if ln.strip().startswith("l0 ")]
        assert "better" not in row and "worse" not in row and stats.SETTING in row
    synthetic_seeds = [synthetic(0.7, seed=s) for s in range(3)]
    (key,) = synthetic_seeds[0]
    assert results.differences(synthetic_seeds, synthetic(0.7, seed=4, l0=80.0))[key]["l0"].verdict == stats.SETTING


def test_the_subject_names_the_profiles_primary_metric(synthetic):
    base, better = synthetic(0.6), synthetic(0.85, seed=1)
    text = results.subject_summary(base, better)
    assert re.fullmatch(r"f1 0\.\d{3} \(\+0\.\d{3} ± 0\.\d{3}, better\)", text), text
    assert results.subject_summary(None, base).startswith("f1 0.")
    assert results.subject_summary(run(0.6), run(0.9, seed=1)).startswith("sae_top_1 0.")


def test_headline_metrics_come_from_the_result_and_default_to_top_1(synthetic):
    info = synthetic()
    assert results.headline_metrics(info) == ("f1", "mcc", "explained_variance")
    assert results.headline_metrics(run(0.7)) == ("sae_top_1_test_accuracy",)
    assert results.world(info).startswith("64 true features") and results.world(run(0.7)) is None
    (key,) = info
    h = results.headline(info)[key]
    assert (h["f1"], h["mcc"], h["uniqueness"]) == (info[key]["eval_result_metrics"]["ground_truth"]["f1"], 0.8, 0.9)
    assert results.primary_value(info) == h["f1"] and results.primary_value(run(0.7)) == results.headline(
        run(0.7))[KEY]["sae_top_1_test_accuracy"]


def test_the_comparison_shows_the_ground_truth_for_a_synthetic_world_only(synthetic):
    seeds = [synthetic(0.6, seed=s, mcc=0.8 + 0.01 * s) for s in range(3)]
    table = results.compare(seeds[0], synthetic(0.85, seed=7), seeds)
    names = [ln.split()[0] for ln in table.splitlines()[2:]]
    assert names[:3] == ["f1", "mcc", "explained_variance"] and "uniqueness" in names
    (f1,) = [ln for ln in table.splitlines() if ln.strip().startswith("f1 ")]
    assert "(3 seeds)" in table and "±" in f1 and f1.rstrip().endswith("better")
    lm = results.compare(run(0.7), run(0.8, seed=1))
    assert not any(ln.strip().split()[0] in ("f1", "mcc", "uniqueness", "llm_top_1_test_accuracy")
                   for ln in lm.splitlines()[2:]), "no row where neither side has a value"
    text = results.describe_baseline(seeds)
    for name in ("f1", "mcc", "expl_var"):
        assert f"a change in {name} smaller than about ±" in text
    assert "sae_top_1 smaller" not in text


def test_the_baseline_column_is_the_seeds_mean(synthetic):
    seeds = [run(0.6, seed=1), run(0.7, seed=2), run(0.8, seed=3)]
    mean = np.mean([results.headline(s)[KEY]["sae_top_1_test_accuracy"] for s in seeds])
    (row,) = [ln for ln in results.compare(seeds[0], run(0.7, seed=5), seeds).splitlines()
              if ln.strip().startswith("sae_top_1_test_accuracy")]
    assert row.split()[1] == f"{mean:.3f}", "the mean every change is against, not seed 0's value"


def test_a_synthetic_run_is_compared_at_matched_sparsity_on_its_headline_metrics(synthetic):
    seeds = [synthetic(0.7, seed=s, l0=20.0, mcc=0.80 + 0.01 * s) for s in range(3)]
    frontier = [synthetic(0.6, seed=8, l0=10.0, mcc=0.7), synthetic(0.8, seed=9, l0=40.0, mcc=0.9)]
    current = synthetic(0.75, seed=4, l0=30.0, mcc=0.86)
    (key,) = current
    matched = results.matched_sparsity(seeds, frontier, current)[key]
    assert {"explained_variance", "f1", "mcc"} <= set(matched) and "sae_top_1_test_accuracy" not in matched
    lines = "\n".join(results.matched_lines(seeds, frontier, current, key))
    assert "    f1 " in lines and "    mcc " in lines
    assert set(results.uncertainty_record(seeds, current, frontier)[key]["at_matched_sparsity"]) == {
        "explained_variance", "f1", "mcc"}


def test_f1_resamples_match_the_full_sample_and_stay_paired(synthetic):
    a, b = synthetic(0.6), synthetic(0.8, seed=1)
    (key,) = a
    blocks = [x[key]["per_example"]["ground_truth_blocks"] for x in (a, b)]
    da, db = stats.f1_resamples(blocks, resamples=400)
    assert len(da) == 400
    assert np.mean(da) == pytest.approx(a[key]["eval_result_metrics"]["ground_truth"]["f1"], abs=0.01)
    assert np.std(db - da) < np.std(da) + np.std(db), "the same blocks for both: the difference varies less"


def test_a_synthetic_result_must_carry_its_headline_metric(synthetic, tmp_path):
    info = synthetic()
    (key,) = info
    del info[key]["eval_result_metrics"]["ground_truth"]["f1"]
    (tmp_path / "final_info.json").write_text(json.dumps(info))
    with pytest.raises(results.ResultsError, match="no f1"):
        results.load_results(tmp_path)
