"""`python -m harness.prepare [--json]`: compute every cached entry the profile's runs need.

Run by the agent (trusted code, before any generated code runs) so that experiment.py and the
evaluator find everything prepared and can be given read-only views of exactly what they need.
With --json it prints the folders each side reads: {"train": [...], "eval": [...], "models": ...}, and
for a model from the hub "hub_cache", which the boxes are pointed at (their $HOME is private).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from harness import probing, saebench
from harness.stores import open_store
from harness.models import TL_STATE, convert_for_transformer_lens, gemma3_270m_dir
from harness.profiles import load_profile, model_dir


def prepare(profile, log=print) -> dict:
    store = open_store(profile, log=log)
    started = time.time()
    if profile.model_source == "gemma3-270m-gguf" and not (gemma3_270m_dir(log) / TL_STATE).is_file():
        convert_for_transformer_lens(log)   # the boxes' model folder is read-only: convert it here, once
    for layer in profile.layers:
        store.training(layer)
        if profile.synthetic:
            store.truth(layer)
        if profile.streams:
            store.stream_windows(layer)
        _, scale = store.heldout(layer)
        if profile.probing_backend == "harness":
            acts = store.probing(layer, scale)
            probing.llm_results(acts, profile.probing.k_values, store.llm_results_file(layer, scale))
        store.ce_data(layer)
    if profile.probing_backend == "saebench":
        saebench.fetch_datasets(profile, log=log)
    log(f"[harness] profile {profile.name}{' (smoke)' if profile.smoke else ''} prepared in "
        f"{time.time() - started:.1f}s")

    def entries(kinds, only_existing=False):
        return [str(p) for layer in profile.layers for p in store.entry_dirs(kinds, layer)
                if p.exists() or not only_existing]

    hub = hub_cache() if profile.model_source == "hub" else None
    weights = [str(model_dir())] + ([hub] if hub else [])
    dirs = {"eval": entries(("train", "heldout", "truth", "probe", "ce"), only_existing=True) + ([hub] if hub else []),
            "models": str(model_dir())}
    if profile.streams:   # the run computes activations itself: the stored windows and the weights
        dirs["train"] = entries(("train", "stream")) + weights
    else:
        dirs["train"] = entries(("train",))
    if hub:
        dirs["hub_cache"] = hub
    return dirs


def hub_cache() -> str:
    """The Hugging Face hub cache the model was loaded from (boxes read it there, read-only)."""
    from huggingface_hub import constants
    return str(constants.HF_HUB_CACHE)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the prepared folders as JSON on the last line")
    args = parser.parse_args(argv)
    dirs = prepare(load_profile(), log=(lambda m: print(m, file=sys.stderr)) if args.json else print)
    if args.json:
        print(json.dumps(dirs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
