"""The evaluator: `python -m harness.evaluate_run --run run_i --out DIR`.

The agent starts it from its pristine copy of the harness, in its own process and box, after
experiment.py has exited. It loads the SAE that experiment.py exported (harness/artifacts.py),
measures it on data the training process never saw, and is the only writer of `final_info.json`.
The profile comes from the agent (SAE_PROFILE, read from the workspace's committed profile.json).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from harness.stores import open_store
from harness.artifacts import load_sae
from harness.evaluate import evaluate, evaluate_final, write_final_info
from harness.profiles import load_profile


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="the run folder experiment.py wrote its SAE into")
    parser.add_argument("--out", required=True, help="where final_info.json goes")
    parser.add_argument("--split", choices=("test", "final"), default="test",
                        help="final: only sparse probing on the final split, into final_split.json")
    args = parser.parse_args(argv)
    started = time.time()
    torch.manual_seed(0)
    profile = load_profile()
    store = open_store(profile)
    entries = {}
    for layer in profile.layers:
        try:
            sae, claims = load_sae(args.run, layer)
        except FileNotFoundError as exc:
            print(f"evaluation: {exc}", file=sys.stderr)
            return 3
        if args.split == "final":
            entries[profile.sae_key(layer)] = evaluate_final(sae, store, layer)
        else:
            entries[profile.sae_key(layer)] = evaluate(sae, store, layer, claims.get("training") or {})
    path = write_final_info(args.out, entries, "final_split.json" if args.split == "final" else "final_info.json")
    print(f"[harness] evaluation wrote {path} in {time.time() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
