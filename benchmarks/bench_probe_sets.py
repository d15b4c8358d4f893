"""Which sae-probes data sets could widen the cpu probing suite: the language model's own accuracy.

The cpu profile's minimum detectable top-1 difference is set by the seed spread of the headline,
a mean over data sets of the mean over their classes (SAEBench's averaging). The tasks vary
independently across seeds (benchmarks/bench_seed_spread.py), so the spread falls as more
independent tasks enter, and a data set with many classes helps more than one with two (the two
classes of a binary set are mirror images: one task, not two). Long texts cost prepare time (the
language model's forward is the bottleneck), short ones almost none.

This prints, for each candidate, its classes, its smallest class (distinct texts), tokens per text
at SAEBench's 128-token contexts, and Gemma-3-270M's own probe accuracy on the profile's layer
(residual stream mean-pooled, standardised, the harness's probe loop): all channels, top-1, top-5.
A set where the model itself is near chance cannot tell SAEs apart; one where its top-1 is near 1
leaves no headroom. Offline profiles only; the model converted by `prepare` loads in seconds (without
it, the conversion runs in memory first, about a minute).

    python benchmarks/bench_probe_sets.py [--per-class 100] [names ...]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "templates" / "sae_variants"))

from harness import data, probing  # noqa: E402
from harness.activations import ActivationStore  # noqa: E402
from harness.profiles import load_profile  # noqa: E402


def _all_classes(stem: str) -> dict[str, list[str]]:
    return data._multiclass(stem, sorted(set(data.read(stem)["target"].astype(str))))


def _labelled(stems: dict[str, str], label: str) -> dict[str, list[str]]:
    """Classes from binary sets whose positive label is a string (the bigram sets: "bigram")."""
    return {name: data.read(stem)[data.read(stem)["target"].astype(str) == label]["prompt"].tolist()
            for name, stem in stems.items()}


BIGRAMS = ["65_high-school", "68_credit-card", "69_blood-pressure", "79_human-rights", "71_social-media",
           "72_gene-expression", "76_trial-court", "85_mental-health"]

CANDIDATES = {
    # in the cpu suite today
    **{name: data.SUITE[name][1] for name in ("news_topic", "place_country", "art_type", "question_type")},
    # the same source with every class
    "context_type_all": lambda: _all_classes("46_context_type"),
    "it_ticket_all": lambda: _all_classes("103_it_tick"),
    # new
    "headline_subject": lambda: data._positives({
        "trump": "21_headline_istrump", "obama": "22_headline_isobama",
        "china": "23_headline_ischina", "iran": "24_headline_isiran"}),
    "phrase": lambda: _labelled({stem.split("_", 1)[1]: stem for stem in BIGRAMS}, "bigram"),
    "athlete_sport": lambda: _all_classes("108_athlete_sport"),
    "nyc_borough": lambda: _all_classes("10_nyc_borough"),
    "us_state": lambda: _all_classes("13_us_state"),
    "us_timezone": lambda: _all_classes("14_us_timezone"),
    "temp_cat": lambda: _all_classes("43_temp_cat"),
    "headline_year": lambda: data._multiclass("25_headline_year", [str(y) for y in range(2012, 2018)]),
    "arith_mc": lambda: _all_classes("37_arith_mc"),
    "glue_mnli": lambda: _all_classes("88_glue_mnli"),
    "sci_cat": lambda: _all_classes("99_sci_cat"),
    "yelp_stars": lambda: _all_classes("111_yelp_data"),
}


def _features(store, texts: list[str], hook: str, layer: int) -> tuple[torch.Tensor, int]:
    """Mean-pooled residuals of `texts`, tokenized and run as prepare does, and the tokens run."""
    out, tokens = [], 0
    for i in range(0, len(texts), store.profile.llm_batch_size):
        ids, keep = store._tokenize(texts[i:i + store.profile.llm_batch_size], store.profile.probing.context_length)
        resid = store._forward(ids, [hook], layer + 1)[hook]
        out.append(probing._segment_mean(resid[keep], keep.sum(1)))
        tokens += int(keep.sum()) + len(ids)   # BOS included
    return torch.cat(out), tokens


def screen(store, name: str, per_class: int) -> dict:
    started = time.time()
    classes = {c: sorted(set(texts)) for c, texts in CANDIDATES[name]().items()}
    smallest = min(len(t) for t in classes.values())
    n = min(per_class, smallest // 2)
    profile = store.profile
    layer = profile.layers[0]
    hook, rng = profile.hook_name(layer), random.Random(name)
    train, test, tokens, texts = {}, {}, 0, 0
    for cls, pool in classes.items():
        chosen = rng.sample(pool, 2 * n)
        for split, part in ((train, chosen[:n]), (test, chosen[n:])):
            split[cls], used = _features(store, sorted(part, key=len), hook, layer)   # sorted: less padding
            tokens, texts = tokens + used, texts + len(part)
    mean = lambda r: sum(v["accuracy"] for v in r.values()) / len(r)  # noqa: E731
    return {"name": name, "classes": len(classes), "smallest": smallest, "per_class": n,
            "tokens_per_text": tokens / texts,
            "all": mean(probing._probe(train, test, None, name)),
            "top1": mean(probing._probe(train, test, 1, name)),
            "top5": mean(probing._probe(train, test, 5, name)), "seconds": time.time() - started}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"candidates (default all): {', '.join(CANDIDATES)}")
    parser.add_argument("--profile", default="cpu", choices=("tiny", "cpu"), help="an offline profile: its layer")
    parser.add_argument("--per-class", type=int, default=100, help="train and test texts per class each")
    args = parser.parse_args(argv)
    unknown = set(args.names) - set(CANDIDATES)
    if unknown:
        parser.error(f"unknown candidates: {', '.join(sorted(unknown))}")
    profile = load_profile(args.profile)
    store = ActivationStore(profile, log=lambda *_: None)
    print(f"{'data set':18s} {'classes':>7s} {'smallest':>8s} {'n/class':>7s} {'tok/text':>8s} "
          f"{'llm all':>7s} {'top-1':>6s} {'top-5':>6s} {'s':>4s}")
    for name in args.names or CANDIDATES:
        r = screen(store, name, args.per_class)
        print(f"{r['name']:18s} {r['classes']:7d} {r['smallest']:8d} {r['per_class']:7d} "
              f"{r['tokens_per_text']:8.1f} {r['all']:7.3f} {r['top1']:6.3f} {r['top5']:6.3f} "
              f"{r['seconds']:4.0f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
