"""The GPU profile's evaluation: SAEBench's own sparse probing (`run_eval_single_sae`) on its 8 data sets.

SAEBench expects a custom SAE object like its `BaseSAE`: `W_enc`, `W_dec`, `b_enc`, `b_dec`, `encode`,
`decode`, `forward`, `device`, `dtype`, a `cfg` (its `CustomSAEConfig`) and a `to(...)` that keeps
`device`/`dtype` in step. `SAEBenchSAE` wraps the experiment's SAE so: it feeds the SAE the same
scaled activations it was trained on (SAEBench passes raw residuals) and reports the true model,
layer and hook in its cfg whatever the experiment's SAE claims.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
import warnings

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

    # SAEBench encodes [batch, seq, d_model] blocks; the exported programs take [n, d] rows.
    def encode(self, x):
        rows = x.reshape(-1, x.shape[-1]).to(self.dtype) * self.scale
        return self.sae.encode(rows).reshape(*x.shape[:-1], -1)

    def decode(self, f):
        return (self.sae.decode(f.reshape(-1, f.shape[-1])) / self.scale).reshape(*f.shape[:-1], -1)

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


@contextlib.contextmanager
def _probe_dimensions_checked_per_call():
    """SAEBench's `train_probe_on_activations` cannot be called as is with the installed jaxtyping
    (0.2.28 and 0.3.x alike): its `@jaxtyped` signature binds `train_dataset_size` to the per-class
    size, and the sklearn probe it calls checks the same name against the positives plus negatives
    (twice that), so every top-k probe fails. Inside this block the outer signature is not checked;
    every function it calls keeps its own checks."""
    from sae_bench.evals.sparse_probing import probe_training as pt
    checked = pt.train_probe_on_activations
    pt.train_probe_on_activations = getattr(checked, "__wrapped__", checked)
    try:
        yield
    finally:
        pt.train_probe_on_activations = checked


def fetch_datasets(profile, log=print) -> None:
    """Download SAEBench's probe data sets into the hub cache, through SAEBench's own loader (so
    exactly the files its evaluation reads). `prepare` runs this, trusted and with the network; the
    evaluator's box then sees the hub cache read-only, where huggingface_hub returns a file that is
    already there without writing, but fails on one it would have to download."""
    from sae_bench.sae_bench_utils import dataset_utils
    p = profile.probing
    for name in p.dataset_names:
        started = time.time()
        dataset_utils.get_multi_label_train_test_data(name, p.train_per_class, p.test_per_class, p.random_seed)
        log(f"[harness] SAEBench data set {name} fetched in {time.time() - started:.1f}s")


def artifacts_folder(artifacts_path: str, profile, hook_name: str) -> str:
    """Where SAEBench keeps (and reuses) the language model's probe activations: its own layout."""
    return os.path.join(artifacts_path, "sparse_probing", profile.model_name, hook_name)


def run_saebench(wrapped: SAEBenchSAE, profile, artifacts_path: str, model) -> dict:
    """One SAE through SAEBench's `run_eval_single_sae` (every data set through
    `run_eval_single_dataset`), with the language model the harness already holds: `run_eval`
    would load a second copy of it. Returns SAEBench's result fields: eval_result_metrics
    {llm, sae}, eval_result_details, eval_result_unstructured."""
    from sae_bench.evals.sparse_probing.eval_output import (SparseProbingLlmMetrics,
                                                            SparseProbingSaeMetrics)
    from sae_bench.evals.sparse_probing.main import run_eval_single_sae
    config = saebench_config(profile)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    folder = artifacts_folder(artifacts_path, profile, wrapped.cfg.hook_name)
    with _probe_dimensions_checked_per_call(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)   # sklearn's `penalty=` deprecation, per probe
        # save_activations=False: SAEBench's saved token activations take ~53 GB for gemma-2-2b, more
        # than the 40 GB disk budget; recomputing them runs the model over the probe texts each evaluation.
        # An artifacts file that is already there (pre-seeded) is still read.
        results, per_class = run_eval_single_sae(config, wrapped, model, device, folder, save_activations=False)
    scalars = {k: v for k, v in results.items() if not isinstance(v, dict)}
    # SAEBench's own output records check the metric names and types
    llm = SparseProbingLlmMetrics(**{k: v for k, v in scalars.items() if k.startswith("llm_")})
    sae = SparseProbingSaeMetrics(**{k: v for k, v in scalars.items() if k.startswith("sae_")})
    return {
        "eval_result_metrics": {"llm": dataclasses.asdict(llm), "sae": dataclasses.asdict(sae)},
        "eval_result_details": [{"dataset_name": name, **r} for name, r in results.items() if isinstance(r, dict)],
        "eval_result_unstructured": per_class,
    }
