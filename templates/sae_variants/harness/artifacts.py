"""The trained SAE as files: what `experiment.py` hands to the evaluator.

`experiment.py` runs the LLM's code, so nothing it leaves in memory may decide a result. It ends by
calling `save_sae`, which writes for each layer

    out_dir/sae_layer_<L>.encode.pt2   encode, exported with torch.export (x [batch, d_in] -> f [batch, d_sae])
    out_dir/sae_layer_<L>.decode.pt2   decode, exported the same way (f -> x_hat)
    out_dir/sae_layer_<L>.json         what the training process claims: steps, tokens, hyperparameters

and exits. The evaluator (`python -m harness.evaluate_run`, a separate process started by the
agent from its pristine copy of this harness) loads the two programs with `torch.export.load` — a
graph of tensor operations and weights, no Python from experiment.py — and measures everything
itself. The claims in the JSON are reported as such; no metric is taken from them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn as nn

EXAMPLE_BATCH = 8


class ExportError(RuntimeError):
    """The SAE's encode/decode cannot be exported; the message says why and how to fix it."""


class _Method(nn.Module):
    """One method of the SAE as a module's forward, so torch.export can trace it."""

    def __init__(self, sae: nn.Module, method: str):
        super().__init__()
        self.sae, self.method = sae, method

    def forward(self, x):
        return getattr(self.sae, self.method)(x)


def paths(out_dir, layer: int) -> dict[str, Path]:
    base = Path(out_dir) / f"sae_layer_{layer}"
    return {"encode": base.with_suffix(".encode.pt2"), "decode": base.with_suffix(".decode.pt2"),
            "facts": base.with_suffix(".json")}


def _export(module: nn.Module, example: torch.Tensor, what: str):
    batch = torch.export.Dim("batch", min=2, max=1 << 20)
    try:
        return torch.export.export(module, (example,), dynamic_shapes=({0: batch},), strict=False)
    except Exception as exc:  # torch raises many types here; all mean the same to the user
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(
            f"the SAE's {what} could not be exported with torch.export ({type(exc).__name__}: {first}). "
            f"The harness evaluates the exported {what}, never the Python object, so {what} must be "
            "plain tensor code that works for any batch size: no .item()/.tolist() or Python `if` on "
            "tensor values, no in-place updates of module state, no batch size baked into shapes "
            "(use x.shape[0]). Keep training-only logic (statistics, schedules) in CustomTrainer.") from None


@torch.no_grad()
def save_sae(sae: nn.Module, activations: torch.Tensor, out_dir, layer: int, facts: dict) -> Path:
    """Export `sae.encode` and `sae.decode` and write the training facts; returns the facts file."""
    out = paths(out_dir, layer)
    os.makedirs(out_dir, exist_ok=True)
    sae.eval()
    device = next(sae.parameters()).device
    # a copy, not a view: torch.export.save stores the example input, and a view would take the
    # whole training set's storage with it (2.5 GB per run on the cpu profile)
    example = activations[:EXAMPLE_BATCH].to(device).clone()
    features = sae.encode(example)
    if not isinstance(features, torch.Tensor) or features.dim() != 2 or len(features) != len(example):
        raise ExportError(f"sae.encode must return one [batch, d_sae] tensor, got "
                          f"{type(features).__name__} {getattr(features, 'shape', '')}")
    torch.export.save(_export(_Method(sae, "encode"), example, "encode"), out["encode"])
    torch.export.save(_export(_Method(sae, "decode"), features, "decode"), out["decode"])
    claims = {"layer": layer, "d_in": int(example.shape[1]), "d_sae": int(features.shape[1]),
              "architecture": type(sae).__name__, "device": str(device), "training": facts}
    out["facts"].write_text(json.dumps(claims, indent=2, default=str))
    return out["facts"]


class ExportedSAE(nn.Module):
    """The evaluator's view of a trained SAE: the two exported programs and nothing else."""

    def __init__(self, encode: nn.Module, decode: nn.Module, d_in: int, d_sae: int, architecture: str):
        super().__init__()
        self._encode, self._decode = encode, decode
        self.d_in, self.d_sae, self.architecture = d_in, d_sae, architecture
        self._anchor = nn.Parameter(torch.zeros(1), requires_grad=False)  # device for parameter-free SAEs

    def eval(self):  # exported graphs have no train/eval switch; their mode was fixed at export
        return self

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) == 1:  # the programs were exported for batches of 2 or more
            return self._encode(torch.cat([x, x]))[:1]
        return self._encode(x)

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        if len(f) == 1:
            return self._decode(torch.cat([f, f]))[:1]
        return self._decode(f)

    def forward(self, x):
        return self.decode(self.encode(x))

    @property
    def W_dec(self) -> torch.Tensor:
        """The effective decoder rows, decode(e_i) - decode(0): what SAEBench's decoder checks read."""
        if getattr(self, "_w_dec", None) is None:
            with torch.no_grad():
                eye = torch.eye(self.d_sae, device=self._anchor.device)
                self._w_dec = self.decode(eye) - self.decode(torch.zeros(2, self.d_sae, device=eye.device))[:1]
        return self._w_dec


def load_sae(run_dir, layer: int) -> tuple[ExportedSAE, dict]:
    """The exported SAE of `layer` and the training process's claims; FileNotFoundError names what is missing."""
    files = paths(run_dir, layer)
    missing = [str(p) for p in files.values() if not p.is_file() or p.is_symlink()]
    if missing:
        raise FileNotFoundError(f"no trained SAE for layer {layer}: missing {', '.join(missing)} "
                                "(experiment.py must end with harness.save_sae(...))")
    claims = json.loads(files["facts"].read_text())
    encode = torch.export.load(str(files["encode"])).module()
    decode = torch.export.load(str(files["decode"])).module()
    sae = ExportedSAE(encode, decode, int(claims["d_in"]), int(claims["d_sae"]), str(claims.get("architecture", "")))
    return sae, claims
