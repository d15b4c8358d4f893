"""The protected harness of the sae_variants template: do not edit (the agent's loop refuses edits here).

It owns everything a result must be able to trust: which language model and layer, the cached
activations, the data an SAE trains on, the training loop driver, the evaluation and the result file.
`experiment.py` owns the SAE, its loss and its optimiser.

    profile = harness.load_profile()                      # tiny | cpu | gemma-2-2b (+ SAE_SMOKE=1)
    store = harness.ActivationStore(profile)              # cached activations, LM loaded on a miss
    train_acts, heldout, scale = store.training(layer)    # scaled, BOS/padding dropped
    facts = harness.train(trainer, train_acts, steps=..., batch_size=...)
    entry = harness.evaluate(trainer.ae, store, layer, facts)
    harness.write_final_info(out_dir, {profile.sae_key(layer): entry})
"""

import os as _os

_os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from harness.activations import ActivationStore  # noqa: E402
from harness.evaluate import evaluate, write_final_info  # noqa: E402
from harness.profiles import Profile, load_profile  # noqa: E402
from harness.training import TrainingError, train  # noqa: E402

__all__ = ["ActivationStore", "Profile", "TrainingError", "evaluate", "load_profile", "train", "write_final_info"]
