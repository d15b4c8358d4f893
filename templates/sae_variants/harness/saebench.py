"""The GPU profile's evaluation: SAEBench's own `run_eval` for sparse probing on its 8 data sets.

SAEBench expects a custom SAE object like its `BaseSAE`: `W_enc`, `W_dec`, `b_enc`, `b_dec`, `encode`,
`decode`, `forward`, `device`, `dtype`, a `cfg` (its `CustomSAEConfig`) and a `to(...)` that keeps
`device`/`dtype` in step. `SAEBenchSAE` wraps the experiment's SAE so: it feeds the SAE the same
scaled activations it was trained on (SAEBench passes raw residuals) and reports the true model,
layer and hook in its cfg whatever the experiment's SAE claims.
"""

from __future__ import annotations

import tempfile

import torch
import torch.nn as nn


class SAEBenchSAE(nn.Module):
    def __init__(self, sae: nn.Module, *, model_name: str, layer: int, hook_name: str, scale: float,
                 context_size: int, training_tokens: int):
        super().__init__()
        from sae_bench.custom_saes.custom_sae_config import CustomSAEConfig
        self.sae = sae
        self.scale = float(scale)
        param = next(sae.parameters())
        self.device, self.dtype = param.device, param.dtype
        d_in = getattr(sae, "d_in", None) or sae.W_dec.shape[1]
        d_sae = getattr(sae, "d_sae", None) or sae.W_dec.shape[0]
        self.cfg = CustomSAEConfig(model_name=model_name, d_in=d_in, d_sae=d_sae,
                                   hook_layer=layer, hook_name=hook_name)
        self.cfg.architecture = type(sae).__name__
        self.cfg.context_size = context_size
        self.cfg.training_tokens = training_tokens
        self.cfg.dtype = str(self.dtype).split(".")[1]
        self.cfg.device = str(self.device)

    # SAEBench reads these four directly
    @property
    def W_enc(self):   # an exported SAE has no encoder matrix (its encode may not be linear)
        return getattr(self.sae, "W_enc", None)

    @property
    def W_dec(self):
        return self.sae.W_dec

    @property
    def b_enc(self):
        return getattr(self.sae, "b_enc", None)

    @property
    def b_dec(self):
        return getattr(self.sae, "b_dec", None)

    def encode(self, x):
        return self.sae.encode(x.to(self.dtype) * self.scale)

    def decode(self, f):
        return self.sae.decode(f) / self.scale

    def forward(self, x):
        return self.decode(self.encode(x))

    def to(self, *args, **kwargs):
        super().to(*args, **kwargs)
        param = next(self.sae.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.cfg.dtype = str(self.dtype).split(".")[1]
        return self


def saebench_config(profile):
    from sae_bench.evals.sparse_probing.eval_config import SparseProbingEvalConfig
    p = profile.probing
    return SparseProbingEvalConfig(
        random_seed=p.random_seed, dataset_names=list(p.dataset_names), probe_train_set_size=p.train_per_class,
        probe_test_set_size=p.test_per_class, context_length=p.context_length,
        llm_batch_size=profile.llm_batch_size, llm_dtype=profile.dtype, model_name=profile.model_name,
        k_values=list(p.k_values))


def run_saebench(wrapped: SAEBenchSAE, profile, artifacts_path: str) -> dict:
    """One SAE through sae_bench.evals.sparse_probing.main.run_eval; returns its result dict."""
    from sae_bench.evals.sparse_probing.main import run_eval
    config = saebench_config(profile)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as output_path:
        results = run_eval(config, [(profile.sae_key(wrapped.cfg.hook_layer), wrapped)], device, output_path,
                           force_rerun=True, artifacts_path=artifacts_path)
    (only,) = results.values()
    return only
