"""The evaluator's result file, `final_info.json`, described once: typed pydantic models, one
description per field, in the manner of SAEBench's eval output models.

The harness builds every entry through these models (harness/evaluate.py), and the agent validates
every result file it reads against them (agent/results.py loads this file by its path: it imports
pydantic and nothing else of the harness, so no torch). `final_info.schema.json` beside it is the
same description as JSON Schema, for readers outside Python; regenerate it after any change with

    python templates/sae_variants/harness/schema.py > templates/sae_variants/harness/final_info.schema.json

Required is what the agent judges a run by (sparse-probing top-1 accuracy, L0 and explained
variance; on a synthetic world F1, MCC and uniqueness). Everything else the evaluator records is
optional, so results written by an earlier harness still read, and typed where present. Types are
strict: "0.7" is not a number. A metric is null where its value was not finite (a diverged SAE) or
not measured. Keys the models do not name are kept (earlier harnesses wrote a few more); in a group
of metrics they must still be numbers.

Why not subclass SAEBench's own models (sae_bench/evals/base_eval_output.py, sparse_probing's
eval_output.py): sae-bench is installed beside the package by scripts/setup.sh, not as its
dependency, so the agent could not count on it; and its models describe another file: a required
`sae_bench_commit_hash` the harness has no value for, a required `llm_test_accuracy` the final split
leaves out, unknown keys (core_metrics, per_example, other top-k) dropped rather than kept and typed.
What SAEBench returns still fits these models (tests/test_saebench.py).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

Metric = float | None   # null: not finite, or not measured


def _optional(description: str) -> Any:
    return Field(None, description=description)


class _Record(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class _Metrics(_Record):
    """A flat group of metrics: any other key is one more metric, e.g. sae_top_20_test_accuracy."""
    __pydantic_extra__: dict[str, Metric] = Field(init=False)


class LlmMetrics(_Metrics):
    """Sparse probing on the model's own activations: the reference the SAE's probes are read against."""
    llm_test_accuracy: Metric = _optional("Probe accuracy on the full activation vector, mean over data sets")
    llm_top_1_test_accuracy: Metric = _optional("Probe accuracy on the single best activation channel "
                                                "(llm_top_<k>_test_accuracy: on the best k)")


class SaeMetrics(_Metrics):
    """Sparse probing on the SAE's latents (SAEBench's sparse_probing)."""
    sae_top_1_test_accuracy: Metric = Field(description="Probe accuracy on the single best SAE latent, mean over "
                                                        "data sets (sae_top_<k>_test_accuracy: on the best k)")
    sae_test_accuracy: Metric = _optional("Probe accuracy on all SAE latents, mean over data sets")


class GroundTruthMetrics(_Record):
    """A synthetic world's SAE against its known true features (SAELens' SynthSAEBench calculators)."""
    f1: Metric = Field(description="Each latent as a detector of its best-matching true feature, mean F1 over latents")
    mcc: Metric = Field(description="Mean |cos| of decoder rows and true features after a one-to-one matching")
    uniqueness: Metric = Field(description="Fraction of latents whose best-matching feature no other latent has")
    precision: Metric = _optional("Mean detection precision over latents")
    recall: Metric = _optional("Mean detection recall over latents")
    explained_variance: Metric = _optional("Explained variance of the held-out vectors")
    shrinkage: Metric = _optional("Norm of the reconstruction over the norm of the input")
    sae_l0: Metric = _optional("Mean number of active latents per held-out vector")
    true_l0: Metric = _optional("Mean number of active true features per held-out vector")
    true_l0_top_width: Metric = _optional("The true L0 counting only the d_sae most frequent features")
    dead_latents: Metric = _optional("Latents that never fired on the held-out vectors")
    heldout_samples: int | None = _optional("Held-out vectors scored")
    decoder_linear: bool | None = _optional("Whether decode is linear in the latents (if not, its rows are "
                                            "decode(e_i) - decode(0) all the same)")


class EvalResultMetrics(_Record):
    llm: LlmMetrics | None = _optional("Probing the model's activations (empty on the final split)")
    sae: SaeMetrics = Field(description="Probing the SAE's latents")
    ground_truth: GroundTruthMetrics | None = _optional("Synthetic profiles only: against the true features")


class ProbingDetail(_Metrics):
    """One probing data set's llm_* and sae_* accuracies, averaged over its classes."""
    dataset_name: str = Field(description="'<data set>_results'")


class EvalConfig(_Record):
    """SAEBench's SparseProbingEvalConfig fields and the profile's own settings."""
    model_name: str | None = _optional("The model whose activations the SAE reads")
    random_seed: int | None = _optional("Seed of the probes' data split")
    dataset_names: list[str] | None = _optional("The probing data sets")
    probe_train_set_size: int | None = _optional("Probe training examples per class")
    probe_test_set_size: int | None = _optional("Probe test examples per class (at most)")
    probe_test_set_sizes: dict[str, int] | None = _optional("Per data set: the test examples per class")
    context_length: int | None = _optional("Tokens per probing text")
    sae_batch_size: int | None = _optional("SAEBench's SAE batch size")
    llm_batch_size: int | None = _optional("SAEBench's model batch size")
    llm_dtype: str | None = _optional("The model's dtype")
    k_values: list[int] | None = _optional("The k of the top-k probes")
    lower_vram_usage: bool | None = _optional("SAEBench's lower_vram_usage")
    profile: str | None = _optional("The harness profile (tiny, cpu, gemma-2-2b, synth, ...)")
    smoke: bool | None = _optional("A smoke run: a few steps on tiny data, not a result")
    backend: str | None = _optional("'harness' (the offline probes) or 'saebench' (SAEBench's own)")
    set_sizes_are_per_class: bool | None = _optional("Set sizes count examples per class")
    headline_metrics: list[str] | None = _optional("The profile's headline metrics, most important first: "
                                                   "the first is what a run is judged by")
    world: str | None = _optional("Synthetic profiles: the world of known features, in words")
    stands_in_for: dict[str, str] | None = _optional("Offline data sets: the SAEBench data set each stands in for")


class SaeConfig(_Record):
    """The truth about the SAE, in SAEBench's sae_cfg_dict: model, layer and hook come from the harness."""
    model_name: str | None = _optional("The model")
    d_in: int | None = _optional("Input width")
    d_sae: int | None = _optional("Number of latents")
    hook_layer: int | None = _optional("The layer")
    hook_name: str | None = _optional("The hook point, e.g. blocks.3.hook_resid_post")
    context_size: int | None = _optional("Training context length")
    hook_head_index: int | None = _optional("Always null: residual stream")
    architecture: str | None = _optional("The SAE's declared architecture or class name")
    prepend_bos: bool | None = _optional("Contexts start with BOS")
    normalize_activations: str | None = _optional("How activations are scaled before the SAE")
    activation_scale: float | None = _optional("The scale applied to activations before the SAE")
    dtype: str | None = _optional("The SAE's dtype")
    device: str | None = _optional("Where it was evaluated")
    dataset_path: str | None = _optional("The training data")
    training_tokens: int | None = _optional("Tokens trained on, as the training process claims")
    exclude_special_tokens: bool | None = _optional("BOS and padding dropped from training and evaluation")


class CoreMetrics(_Record):
    """Reconstruction and sparsity on held-out activations (harness/metrics.py)."""
    l0: Metric = Field(description="Mean number of active latents per held-out token")
    explained_variance: Metric = Field(description="1 - squared error / squared deviation from the mean, held out")
    l1: Metric = _optional("Mean L1 norm of the latents")
    mse: Metric = _optional("Mean squared error per dimension")
    cossim: Metric = _optional("Mean cosine of input and reconstruction")
    frac_dead: Metric = _optional("Fraction of latents that never fired on the held-out tokens and a training slice")
    dead_latents: int | None = _optional("Latents that never fired")
    dense_latents: int | None = _optional("Latents firing on more than 10% of tokens")
    d_sae: int | None = _optional("Number of latents")
    heldout_tokens: int | None = _optional("Held-out tokens measured")
    dead_window_tokens: int | None = _optional("Tokens a latent had to fire on once not to count as dead")
    ce_loss_score: Metric = _optional("CE loss recovered with the SAE spliced in: (zero - sae) / (zero - clean); "
                                      "null without a language model")
    ce_loss_with_sae: Metric = _optional("CE loss with the SAE spliced in")
    ce_loss_without_sae: Metric = _optional("CE loss of the clean model")
    ce_loss_with_ablation: Metric = _optional("CE loss with the layer's activations zeroed")
    ce_tokens: int | None = _optional("Tokens the CE losses are measured on")


class LatentDensity(_Record):
    edges: list[float] = Field(description="Lower edges of the firing-frequency bins, then 1")
    counts: list[int] = Field(description="Latents per bin")
    labels: list[str] = Field(description="Each bin in words: dead, <1e-5, ..., <=1")


class Diagnostics(_Record):
    """Decoder geometry (measured through decode, whatever the SAE names its weights) and latent density."""
    decoder_norm_mean: Metric = _optional("Mean norm of the decoder rows")
    decoder_norm_min: Metric = _optional("Smallest decoder row norm")
    decoder_norm_max: Metric = _optional("Largest decoder row norm")
    decoder_mean_abs_cos: Metric = _optional("Mean |cos| between distinct decoder rows")
    decoder_max_abs_cos: Metric = _optional("Largest |cos| between distinct decoder rows")
    latent_density: LatentDensity | None = _optional("How many latents fire how often")


class Training(_Record):
    """What the training process claims (harness.train's facts and experiment.py's hyperparameters,
    which are free), plus what the evaluator adds: layer, dict_size, profile, smoke, eval_seconds."""
    training_steps: int | None = _optional("Optimiser steps, as claimed")
    final_loss: Metric = _optional("The last logged training loss, as claimed")
    tokens: int | None = _optional("Training tokens, as claimed")
    seconds: Metric = _optional("Training time, as claimed")
    layer: int | None = _optional("The layer the SAE reads")
    dict_size: int | None = _optional("Number of latents, measured")
    profile: str | None = _optional("The harness profile")
    smoke: bool | None = _optional("A smoke run")
    eval_seconds: Metric = _optional("The evaluation's time")


class CoreBlocks(_Record):
    """Reconstruction sums per 64-token block of held-out tokens, the same blocks for every run of a
    profile: the agent bootstraps explained variance and L0 over them, paired across runs."""
    sq_err: list[Metric] = Field(description="Per block: summed squared reconstruction error")
    sq_dev: list[Metric] = Field(description="Per block: summed squared deviation from the held-out mean")
    l0: list[Metric] = Field(description="Per block: summed active latents")
    tokens: list[int] = Field(description="Per block: tokens")


class GroundTruthBlocks(_Record):
    """Per held-out block and latent: detection counts against the best-matching true feature (F1's evidence)."""
    tp: list[list[int]] = Field(description="[block][latent] true positives")
    fp: list[list[int]] = Field(description="[block][latent] false positives")
    fn: list[list[int]] = Field(description="[block][latent] false negatives")


class PerExample(_Record):
    """The evidence the agent's intervals are computed from."""
    probing: dict[str, dict[str, str]] | None = _optional(
        "Per probing metric, per '<data set>/<class>': each test text's correctness as '0'/'1', in a fixed order")
    core_blocks: CoreBlocks | None = _optional("Reconstruction sums per held-out block")
    ground_truth_blocks: GroundTruthBlocks | None = _optional("Synthetic profiles: detection counts per block")


class SaeEntry(_Record):
    """One trained SAE: SAEBench's sparse_probing output fields plus core metrics, training facts and evidence."""
    eval_type_id: str | None = _optional("'sparse_probing'")
    eval_config: EvalConfig | None = _optional("The evaluation's settings")
    eval_id: str | None = _optional("A UUID of this evaluation")
    datetime_epoch_millis: int | None = _optional("When it was evaluated")
    eval_result_metrics: EvalResultMetrics = Field(description="The headline metrics, by group")
    eval_result_details: list[ProbingDetail] | None = _optional("Per probing data set")
    eval_result_unstructured: dict[str, Any] | None = _optional("Per data set, per metric, per class: accuracies")
    sae_cfg_dict: SaeConfig | None = _optional("The SAE as the harness knows it")
    core_metrics: CoreMetrics = Field(description="Reconstruction and sparsity, held out")
    diagnostics: Diagnostics | None = _optional("Decoder geometry and latent density")
    training: Training | None = _optional("The training process's claims and the evaluator's facts")
    loss_curve: list[Metric] | None = _optional("Logged training losses, as claimed")
    per_example: PerExample | None = _optional("Evidence for intervals")


class FinalInfo(RootModel[dict[str, SaeEntry]]):
    """final_info.json: one entry per trained SAE, keyed '<model>/<hook_name>'; never mixed across layers."""


class FinalSplitEntry(_Record):
    """One SAE's entry of final_split.json: sparse probing only, on the split the coder never hears about."""
    eval_type_id: str = Field(description="'sparse_probing'")
    split: Literal["final"] = Field(description="The split scored")
    eval_config: EvalConfig = Field(description="The evaluation's settings")
    eval_result_metrics: EvalResultMetrics = Field(description="Probing the SAE's latents (llm is empty)")
    eval_result_details: list[ProbingDetail] = Field(description="Per probing data set")
    per_example: PerExample = Field(description="Per test text correctness")


def json_schema() -> dict:
    """final_info.schema.json: FinalInfo as JSON Schema (draft 2020-12)."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **FinalInfo.model_json_schema()}


def json_schema_text() -> str:
    return json.dumps(json_schema(), indent=2) + "\n"


if __name__ == "__main__":
    print(json_schema_text(), end="")
