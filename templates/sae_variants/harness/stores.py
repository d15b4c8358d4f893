"""`open_store(profile)`: the store a profile's runs read from.

A language-model profile reads cached activations (harness/activations.py); a synthetic profile
reads the hidden vectors of its world (harness/synthetic.py). Both have the same interface
(`training`, `heldout`, `probing`, `entry_dirs`), so experiment.py, the evaluator and prepare
never ask which one they hold.
"""

from __future__ import annotations

from harness.activations import ActivationStore
from harness.profiles import Profile


def open_store(profile: Profile, log=print) -> ActivationStore:
    if profile.synthetic:
        from harness.synthetic import SyntheticStore
        return SyntheticStore(profile, log=log)
    return ActivationStore(profile, log=log)
