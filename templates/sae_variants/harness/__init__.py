"""The protected harness of the sae_variants template: do not edit (the agent's loop refuses edits here).

It owns everything a result must be able to trust: which language model and layer, the cached
activations, the data an SAE trains on, the training loop driver, the evaluation and the result file.
`experiment.py` owns the SAE, its loss and its optimiser, and ends by saving the trained SAE:

    profile = harness.load_profile()                      # tiny | cpu | gemma-2-2b (+ SAE_SMOKE=1)
    store = harness.open_store(profile)                   # cached activations or a synthetic world's vectors
    train_acts = store.training(layer)                    # scaled, BOS/padding dropped
    facts = harness.train(trainer, train_acts, steps=..., batch_size=...)
    harness.save_sae(trainer.ae, train_acts, out_dir, layer, facts)   # exported encode/decode + facts

The evaluation is not called from experiment.py: the agent runs `python -m harness.evaluate_run`
in a separate process on the saved SAE, and only that process writes `final_info.json`.
"""

import os as _os

_os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from harness.activations import ActivationStore  # noqa: E402
from harness.artifacts import ExportError, save_sae  # noqa: E402
from harness.profiles import Profile, load_profile  # noqa: E402
from harness.stores import open_store  # noqa: E402
from harness.training import TrainingError, train  # noqa: E402

__all__ = ["ActivationStore", "ExportError", "Profile", "TrainingError", "load_profile", "open_store", "save_sae", "train"]
