"""Text data that ships with the `sae-probes` package: the probing suite and the SAE training text.

sae-probes (a sae-bench dependency) ships ~160 labelled text data sets as `.csv.zst` files with a
`prompt` and a `target` column. The offline suite below mirrors SAEBench's 8 sparse-probing tasks:
multi-class data sets, each class probed one-vs-rest on balanced data. Texts drawn for probing are
never used for SAE training: the training text is every remaining row of these data sets plus a
few unlabelled-looking long-text sets (essays, news, reviews, Q&A), so the SAE sees prose, reviews,
code and tweets like the ones it is probed on, but not the same ones.
"""

from __future__ import annotations

import random
from functools import lru_cache
from pathlib import Path

import pandas as pd


def data_root() -> Path:
    # find_spec, not `import sae_probes`: importing the package pulls in sae_lens (~10 s).
    import importlib.util
    spec = importlib.util.find_spec("sae_probes")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("sae-probes is not installed: pip install 'sae-probes>=0.4,<0.5'")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "cleaned_data"


@lru_cache(maxsize=None)
def read(stem: str) -> pd.DataFrame:
    df = pd.read_csv(data_root() / f"{stem}.csv.zst")
    df["prompt"] = df["prompt"].astype(str)
    return df


def _exclusive(pools: dict[str, list[str]]) -> dict[str, list[str]]:
    """Each class's texts, minus those that two classes claim: such a text is ambiguous for a
    one-vs-rest probe, and could be drawn into train as one class and into test as another."""
    seen: dict[str, int] = {}
    for texts in pools.values():
        for t in set(texts):
            seen[t] = seen.get(t, 0) + 1
    return {name: [t for t in texts if seen[t] == 1] for name, texts in pools.items()}


def _multiclass(stem: str, classes: list[str]) -> dict[str, list[str]]:
    df = read(stem)
    return _exclusive({c: df[df["target"].astype(str) == c]["prompt"].tolist() for c in classes})


def _positives(stems: dict[str, str]) -> dict[str, list[str]]:
    """Classes from binary data sets: the positives of each."""
    return _exclusive({name: read(stem)[read(stem)["target"] == 1]["prompt"].tolist()
                       for name, stem in stems.items()})


# name -> (what it stands in for in SAEBench, builder returning {class: [texts]})
SUITE = {
    "occupation": ("LabHC/bias_in_bios_class_set1", lambda: _positives({
        "journalist": "59_wikidata_occupation_isjournalist", "athlete": "60_wikidata_occupation_isathlete",
        "actor": "61_wikidata_occupation_isactor", "politician": "62_wikidata_occupation_ispolitician",
        "singer": "63_wikidata_occupation_issinger"})),
    "disease_class": ("LabHC/bias_in_bios_class_set2", lambda: _multiclass("101_disease_class", [
        "digestive system diseases", "cardiovascular diseases", "nervous system diseases", "neoplasms",
        "general pathological conditions"])),
    "it_ticket": ("LabHC/bias_in_bios_class_set3", lambda: _multiclass("103_it_tick", [
        "HR Support", "Hardware", "Access", "Purchase", "Storage"])),
    "science_topic": ("canrager/amazon_reviews_mcauley_1and5", lambda: _multiclass(
        "99_sci_cat", ["Physics", "Chemistry", "Biology"])),
    "review_sentiment": ("canrager/amazon_reviews_mcauley_1and5_sentiment", lambda: {
        "1_star": _multiclass("112_amzn_rev", ["0"])["0"], "5_stars": _multiclass("112_amzn_rev", ["4"])["4"]}),
    "code_language": ("codeparrot/github-code", lambda: _positives({
        "C": "158_code_C", "Python": "159_code_Python", "HTML": "160_code_HTML"})),
    "news_topic": ("fancyzhx/ag_news", lambda: _multiclass("97_news_class", [
        "Politics", "Technology", "Entertainment", "Sport"])),
    "tweet_emotion": ("Helsinki-NLP/europarl", lambda: _multiclass("102_twt_emotion", [
        "worry", "happiness", "sadness", "surprise"])),
    # Short-text sets that Gemma-3-270M's residual stream separates well above chance (the cpu suite
    # uses them in place of it_ticket, science_topic and tweet_emotion, where the model itself is at
    # 0.49-0.54, so an SAE cannot be told apart from noise there).
    "place_country": ("(cpu suite: entity knowledge)", lambda: _multiclass("17_world_country", [
        "United_Kingdom", "United_States", "Italy", "Australia", "India"])),
    "art_type": ("(cpu suite: entity knowledge)", lambda: _multiclass("27_art_type", ["book", "song", "movie"])),
    "question_type": ("(cpu suite: what a question asks)", lambda: _multiclass("46_context_type", [
        "Causality", "Belief_states", "Event_duration", "Temporal_order"])),
}

SUITE_SOURCES = {
    "occupation": [f"{i}_wikidata_occupation_is{n}" for i, n in
                   [(59, "journalist"), (60, "athlete"), (61, "actor"), (62, "politician"), (63, "singer")]],
    "disease_class": ["101_disease_class"], "it_ticket": ["103_it_tick"], "science_topic": ["99_sci_cat"],
    "review_sentiment": ["112_amzn_rev"], "code_language": ["158_code_C", "159_code_Python", "160_code_HTML"],
    "news_topic": ["97_news_class"], "tweet_emotion": ["102_twt_emotion"],
    "place_country": ["17_world_country"], "art_type": ["27_art_type"], "question_type": ["46_context_type"],
}

# Long-text sets used only as SAE training text.
EXTRA_TRAINING = ["94_ai_gen", "100_news_fake", "111_yelp_data", "110_aimade_humangpt3", "36_sciq_tf",
                  "161_agnews_0", "157_amazon_5star", "64_wikidata_occupation_isresearcher"]


def test_split_size(name: str, train_per_class: int, test_per_class: int, final_per_class: int = 0) -> int:
    """Test texts per class: `test_per_class`, or what the data set's smallest class leaves after its
    train and final texts if that is fewer (every class of a data set stays the same size; a larger
    test split only makes the accuracy less noisy)."""
    smallest = min(len(set(texts)) for texts in SUITE[name][1]().values())
    return max(1, min(test_per_class, smallest - train_per_class - final_per_class))


def probing_split(name: str, train_per_class: int, test_per_class: int, seed: int, final_per_class: int = 0
                  ) -> dict[str, dict[str, list[str]]]:
    """Disjoint train/test(/final) texts per class, sampled with a fixed seed.

    `final` is the split the coder never hears about: scored once, at the end of an idea, so that
    rounds of tuning against the test split cannot overfit what is reported last. `test_per_class`
    is an upper bound (`test_split_size`)."""
    if name not in SUITE:
        raise KeyError(f"unknown probing data set {name!r}; known: {', '.join(SUITE)}")
    classes = SUITE[name][1]()
    rng = random.Random(f"{seed}-{name}")
    test = test_split_size(name, train_per_class, test_per_class, final_per_class)
    sizes = {"train": train_per_class, "test": test, "final": final_per_class}
    splits: dict[str, dict[str, list[str]]] = {split: {} for split, n in sizes.items() if n > 0}
    for cls, texts in classes.items():
        texts = sorted(set(texts))
        need = sum(sizes.values())
        if len(texts) < need:
            raise ValueError(f"{name}/{cls}: {len(texts)} texts, need {need}")
        chosen = rng.sample(texts, need)
        start = 0
        for split, n in sizes.items():
            if n > 0:
                splits[split][cls] = chosen[start:start + n]
                start += n
    return splits


def training_texts(exclude: set[str], seed: int = 0) -> list[str]:
    """Every text of the suite's sources and the extra sets, minus `exclude` (the probing texts), shuffled."""
    stems = [s for sources in SUITE_SOURCES.values() for s in sources] + EXTRA_TRAINING
    texts = sorted({t for stem in stems for t in read(stem)["prompt"].tolist()} - exclude)
    random.Random(seed).shuffle(texts)
    return texts
