"""The gemma-2-2b profile's evaluation, SAEBench's own sparse probing, on the CPU without the hub.

`run_eval_single_dataset` runs end to end on a tiny randomly initialised HookedTransformer and an
exported SAE (the evaluator's view of it), from a pre-seeded artifacts file: the language model's
probe activations that SAEBench would otherwise collect from its hub data sets on a GPU.
"""

import dataclasses
import os

import pytest
import torch
import torch.nn as nn

pytestmark = pytest.mark.slow   # imports SAEBench (~20 s) and trains ~50 small probes

D_MODEL, D_SAE, SEQ = 32, 64, 16
DATASETS = ["LabHC/bias_in_bios_class_set1", "fancyzhx/ag_news"]


class ReluSAE(nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.W_enc = nn.Parameter(torch.randn(D_MODEL, D_SAE, generator=g) / D_MODEL ** 0.5)
        self.W_dec = nn.Parameter(self.W_enc.detach().t().clone())
        self.b_enc = nn.Parameter(torch.zeros(D_SAE))
        self.b_dec = nn.Parameter(torch.zeros(D_MODEL))

    def encode(self, x):
        return torch.relu((x - self.b_dec) @ self.W_enc + self.b_enc)

    def decode(self, f):
        return f @ self.W_dec + self.b_dec


def class_activations(n: int, direction: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """[n, SEQ, D_MODEL] residuals of one class, padding zeroed as SAEBench's collection leaves it."""
    acts = torch.randn(n, SEQ, D_MODEL, generator=g) + 2.0 * direction
    acts[:, SEQ - 4:] = 0.0
    return acts


@pytest.fixture
def setup(harness_path, tmp_path):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from harness import artifacts, saebench
    from harness.profiles import PROFILES, Probing

    profile = dataclasses.replace(
        PROFILES["gemma-2-2b"], model_name="tiny-random", layers=(1,), d_model=D_MODEL, dtype="float32",
        probing=Probing(tuple(DATASETS), train_per_class=40, test_per_class=20, context_length=SEQ,
                        k_values=(1, 2, 5)))
    model = HookedTransformer(HookedTransformerConfig(n_layers=2, d_model=D_MODEL, n_ctx=SEQ, d_head=8, n_heads=4,
                                                      d_vocab=50, act_fn="gelu", d_mlp=64))
    hook = profile.hook_name(1)
    folder = saebench.artifacts_folder(str(tmp_path / "artifacts"), profile, hook)
    os.makedirs(folder)
    g = torch.Generator().manual_seed(1)
    for name in DATASETS:
        directions = torch.eye(D_MODEL)[:3]           # three separable classes
        train = {str(c): class_activations(40, d, g) for c, d in enumerate(directions)}
        test = {str(c): class_activations(20, d, g) for c, d in enumerate(directions)}
        torch.save({"train": train, "test": test, "llm_results": {"llm_test_accuracy": {c: 0.9 for c in train}}},
                   os.path.join(folder, f"{name}_activations.pt".replace("/", "_")))
    artifacts.save_sae(ReluSAE(), torch.randn(64, D_MODEL), tmp_path / "run_1", 1, {"tokens": 1000})
    sae, _ = artifacts.load_sae(tmp_path / "run_1", 1)
    wrapped = saebench.SAEBenchSAE(sae, model_name=profile.model_name, layer=1, hook_name=hook, scale=1.0,
                                   context_size=SEQ, training_tokens=1000)
    return saebench, wrapped, profile, str(tmp_path / "artifacts"), model


def test_saebench_sparse_probing_runs_on_an_exported_sae_from_cached_activations(setup):
    saebench, wrapped, profile, artifacts_path, model = setup
    result = saebench.run_saebench(wrapped, profile, artifacts_path, model)

    llm, sae = result["eval_result_metrics"]["llm"], result["eval_result_metrics"]["sae"]
    assert llm["llm_test_accuracy"] == pytest.approx(0.9), "the LLM's results come from the artifacts file"
    for k in (1, 2, 5):
        assert 0.0 <= sae[f"sae_top_{k}_test_accuracy"] <= 1.0
    # the classes differ along one residual direction each: the SAE's latents (a random ReLU basis)
    # separate them well above chance (1/2, balanced one-vs-rest)
    assert sae["sae_test_accuracy"] > 0.8 and sae["sae_top_5_test_accuracy"] > 0.6
    assert [d["dataset_name"] for d in result["eval_result_details"]] == [f"{n}_results" for n in DATASETS]
    assert set(result["eval_result_unstructured"]) == {f"{n}_results" for n in DATASETS}
    per_class = result["eval_result_unstructured"][f"{DATASETS[0]}_results"]["sae_top_1_test_accuracy"]
    assert set(per_class) == {"0", "1", "2"}
    # what SAEBench returns fits the result schema the agent validates against (its None for top-100 too)
    from harness import schema
    schema.EvalResultMetrics.model_validate(result["eval_result_metrics"])
    for detail in result["eval_result_details"]:
        schema.ProbingDetail.model_validate(detail)


def test_the_wrapper_encodes_blocks_like_rows(setup):
    """SAEBench encodes [batch, seq, d] blocks; the exported programs take rows."""
    _, wrapped, *_ = setup
    x = torch.randn(3, SEQ, D_MODEL)
    blocks = wrapped.encode(x)
    assert blocks.shape == (3, SEQ, D_SAE)
    assert torch.allclose(blocks[1], wrapped.encode(x[1]), atol=1e-6)
    assert wrapped.decode(blocks).shape == x.shape
