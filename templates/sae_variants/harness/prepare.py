"""`python -m harness.prepare [--json]`: compute every cached entry the profile's runs need.

Run by the agent (trusted code, before any generated code runs) so that experiment.py and the
evaluator find everything prepared and can be given read-only views of exactly what they need.
With --json it prints the folders each side reads: {"train": [...], "eval": [...], "models": ...}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from harness import probing
from harness.activations import ActivationStore
from harness.profiles import load_profile, model_dir


def prepare(profile, log=print) -> dict:
    store = ActivationStore(profile, log=log)
    started = time.time()
    for layer in profile.layers:
        store.training(layer)
        _, scale = store.heldout(layer)
        if profile.probing_backend == "harness":
            acts = store.probing(layer, scale)
            probing.llm_results(acts, profile.probing.k_values, store.llm_results_file(layer, scale))
        store.ce_data(layer)
    log(f"[harness] profile {profile.name}{' (smoke)' if profile.smoke else ''} prepared in "
        f"{time.time() - started:.1f}s")
    layers = profile.layers
    return {"train": [str(p) for layer in layers for p in store.entry_dirs(("train",), layer)],
            "eval": [str(p) for layer in layers for p in store.entry_dirs(("train", "heldout", "probe", "ce"), layer)
                     if p.exists()],
            "models": str(model_dir())}


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
