"""Evaluate a trained SAE and write `final_info.json` in SAEBench's shape, one entry per SAE.

Runs in the evaluator's own process (`harness/evaluate_run.py`) on the SAE that experiment.py
exported; see harness/artifacts.py for why. Besides SAEBench's fields each entry keeps
`per_example` (per-probe test correctness, per-block reconstruction sums) for the agent's
confidence intervals, and `diagnostics` (decoder geometry, latent density). Every entry is built
through harness/schema.py's models, the description of the file the agent validates against.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from pathlib import Path

import torch

from harness import metrics, probing, schema
from harness.data import SUITE, test_split_size
from harness.profiles import Profile

EVAL_TYPE_ID = "sparse_probing"


def _eval_config(profile: Profile) -> dict:
    p = profile.probing
    cfg = {
        "random_seed": p.random_seed,
        "dataset_names": list(p.dataset_names),
        "probe_train_set_size": p.train_per_class,
        "probe_test_set_size": p.test_per_class,
        "context_length": p.context_length,
        "sae_batch_size": 4096,
        "llm_batch_size": profile.llm_batch_size,
        "llm_dtype": profile.dtype,
        "model_name": profile.model_name,
        "k_values": list(p.k_values),
        "lower_vram_usage": False,
        # beyond SAEBench's fields
        "profile": profile.name,
        "smoke": profile.smoke,
        "backend": profile.probing_backend,
        "set_sizes_are_per_class": True,
    }
    cfg["headline_metrics"] = list(profile.headline_metrics)
    if profile.synthetic:   # tasks "is ground-truth feature f active", balanced, from held-out vectors
        from harness.synthetic import describe
        cfg["world"] = describe(profile.world)
        cfg["probe_test_set_sizes"] = {name: p.test_per_class for name in p.dataset_names}
    elif profile.probing_backend == "harness":   # the test split is capped by each data set's smallest class
        cfg["probe_test_set_sizes"] = {name: test_split_size(name, p.train_per_class, p.test_per_class,
                                                             p.final_per_class) for name in p.dataset_names}
        cfg["stands_in_for"] = {name: SUITE[name][0] for name in p.dataset_names if name in SUITE}
    return cfg


def _sae_cfg(profile: Profile, layer: int, sae, scale: float, training: dict) -> dict:
    """The truth about this SAE: model, layer and hook come from the harness, not from the SAE."""
    return {
        "model_name": profile.model_name,
        "d_in": int(sae.d_in),
        "d_sae": int(sae.d_sae),
        "hook_layer": layer,
        "hook_name": profile.hook_name(layer),
        "context_size": profile.train_context,
        "hook_head_index": None,
        "architecture": getattr(sae, "architecture", "") or type(sae).__name__,
        "prepend_bos": True,
        "normalize_activations": "expected_average_only_in",
        "activation_scale": scale,
        "dtype": "float32",
        "device": str(next(sae.parameters()).device),
        "dataset_path": profile.train_source,
        "training_tokens": training.get("tokens"),
        "exclude_special_tokens": True,
    }


def evaluate(sae, store, layer: int, training: dict, log=print) -> dict:
    """The final_info.json entry for one trained SAE (`training`: the training process's claims)."""
    profile: Profile = store.profile
    started = time.time()
    sae.eval()
    heldout, scale = store.heldout(layer)
    train_acts = store.training(layer)
    window = torch.cat([heldout, train_acts[: max(0, 20_000 - len(heldout))]])
    core, blocks = metrics.core_metrics(sae, heldout, window)
    core.update(metrics.ce_metrics(sae, store, layer, scale))
    geometry = metrics.decoder_geometry(sae, sae.d_sae, sae.d_in)
    log(f"[harness] core metrics: L0 {core['l0']:.1f}, explained variance {core['explained_variance']:.3f}, "
        f"dead {core['frac_dead']:.3f}, CE-loss score {core['ce_loss_score']}")

    correct = {}
    if profile.probing_backend == "saebench":
        from harness.saebench import SAEBenchSAE, run_saebench
        from harness.profiles import cache_dir
        wrapped = SAEBenchSAE(sae, model_name=profile.model_name, layer=layer,
                              hook_name=profile.hook_name(layer), scale=scale,
                              context_size=profile.train_context, training_tokens=training.get("tokens", 0))
        store.tokenizer   # SAEBench tokenizes its own texts with the model's tokenizer
        bench = run_saebench(wrapped, profile, str(cache_dir() / "saebench_artifacts"), store.model)
        llm_m, sae_m = bench["eval_result_metrics"]["llm"], bench["eval_result_metrics"]["sae"]
        details, unstructured = bench["eval_result_details"], bench.get("eval_result_unstructured")
    else:
        probe_acts = store.probing(layer, scale)
        k_values = profile.probing.k_values
        llm = probing.llm_results(probe_acts, k_values, store.llm_results_file(layer, scale))
        sae_res = probing.sae_results(sae, probe_acts, k_values)
        llm_m, sae_m, details, unstructured, correct = probing.aggregate(llm, sae_res, profile.probing.dataset_names)
    log(f"[harness] sparse probing: SAE top-1 {sae_m['sae_top_1_test_accuracy']:.3f} "
        f"(LLM top-1 {llm_m['llm_top_1_test_accuracy']:.3f}), SAE all-latent {sae_m['sae_test_accuracy']:.3f}")

    ground_truth, gt_blocks = {}, None
    if profile.synthetic:
        from harness.ground_truth import ground_truth_metrics
        ground_truth, gt_blocks = ground_truth_metrics(sae, heldout, store, layer)
        log(f"[harness] ground truth: F1 {ground_truth['f1']:.4f}, MCC {ground_truth['mcc']:.4f}, "
            f"uniqueness {ground_truth['uniqueness']:.4f} at L0 {ground_truth['sae_l0']:.1f} "
            f"(true L0 {ground_truth['true_l0_top_width']:.1f} on the top {sae.d_sae} features)")

    facts = {k: v for k, v in training.items() if k != "loss_curve"}
    facts.update({"layer": layer, "dict_size": int(sae.d_sae), "profile": profile.name,
                  "smoke": profile.smoke, "eval_seconds": round(time.time() - started, 2)})
    # Built through the schema: a field the agent relies on that is missing or mistyped stops the
    # evaluation here, naming the field, instead of reaching the agent as a file it cannot read.
    entry = schema.SaeEntry(
        eval_type_id=EVAL_TYPE_ID,
        eval_config=_eval_config(profile),
        eval_id=str(uuid.uuid4()),
        datetime_epoch_millis=int(time.time() * 1000),
        eval_result_metrics={"llm": llm_m, "sae": sae_m, **({"ground_truth": ground_truth} if ground_truth else {})},
        eval_result_details=details,
        eval_result_unstructured=unstructured,
        sae_cfg_dict=_sae_cfg(profile, layer, sae, scale, training),
        core_metrics=core,
        diagnostics={**geometry, "latent_density": blocks["density_histogram"]},
        training=facts,
        loss_curve=training.get("loss_curve", []),
        per_example={"probing": correct, "core_blocks": blocks["blocks"],
                     **({"ground_truth_blocks": gt_blocks} if gt_blocks else {})},
    )
    return entry.model_dump(exclude_unset=True)


def evaluate_final(sae, store, layer: int) -> dict:
    """Sparse probing on the final split (probes trained on the usual training split): scored once,
    at the end of an idea, for the runs the loop reports; the coder never sees these numbers."""
    profile: Profile = store.profile
    _, scale = store.heldout(layer)
    probe_acts = store.probing(layer, scale)
    missing = [name for name, splits in probe_acts.items() if "final" not in splits]
    if missing:
        raise ValueError(f"the profile {profile.name} has no final split for {', '.join(missing)}")
    names = profile.probing.dataset_names
    sae_res = probing.sae_results(sae, probe_acts, profile.probing.k_values, test_split="final")
    _, sae_m, details, _, correct = probing.aggregate({n: {} for n in names}, sae_res, names)
    return schema.FinalSplitEntry(
        eval_type_id=EVAL_TYPE_ID, split="final", eval_config=_eval_config(profile),
        eval_result_metrics={"sae": sae_m, "llm": {}}, eval_result_details=details,
        per_example={"probing": correct}).model_dump(exclude_unset=True)


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_final_info(out_dir: str | Path, entries: dict[str, dict], name: str = "final_info.json") -> Path:
    """`out_dir/final_info.json`: {"<model>/<hook>": entry}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    path.write_text(json.dumps(_json_safe(entries), indent=2))
    return path
