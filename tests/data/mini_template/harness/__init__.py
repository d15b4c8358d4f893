"""A stand-in harness for loop tests: writes a result file in the template's schema, no torch."""

import json
import os

KEY = "mini-model/blocks.0.hook_resid_post"


def write_results(out_dir, accuracy, steps):
    os.makedirs(out_dir, exist_ok=True)
    smoke = os.environ.get("SAE_SMOKE") == "1"
    sae = {f"sae_top_{k}_test_accuracy": accuracy for k in (1, 2, 5, 10, 20, 50)}
    sae["sae_test_accuracy"] = accuracy
    llm = {f"llm_top_{k}_test_accuracy": 0.7 for k in (1, 2, 5, 10, 20, 50)}
    llm["llm_test_accuracy"] = 0.9
    info = {KEY: {
        "eval_type_id": "sparse_probing",
        "eval_config": {"k_values": [1, 2, 5, 10, 20, 50], "model_name": "mini-model", "smoke": smoke},
        "eval_result_metrics": {"llm": llm, "sae": sae},
        "eval_result_details": [],
        "sae_cfg_dict": {"model_name": "mini-model", "hook_layer": 0, "hook_name": "blocks.0.hook_resid_post"},
        "core_metrics": {"l0": 20.0, "explained_variance": 0.8, "mse": 0.01, "frac_dead": 0.0, "ce_loss_score": None},
        "training": {"training_steps": steps, "final_loss": 0.1, "layer": 0, "dict_size": 64,
                     "learning_rate": 1e-3, "sparsity_penalty": 0.04, "tokens": 1000, "seconds": 0.1},
    }}
    with open(os.path.join(out_dir, "final_info.json"), "w") as f:
        json.dump(info, f, indent=2)
