"""The gate's contract rule: an edit (a whole file above all) must keep what the agent runs the file by."""

from pathlib import Path

import pytest

from agent import checks
from agent.checks import contract

REPO = Path(__file__).resolve().parent.parent
EXPERIMENT = (REPO / "templates" / "sae_variants" / "experiment.py").read_text()
FIELDS = ("seed", "sparsity_penalty")  # what the template's baseline sets (seeds, frontier)


def found(new: str, old: str = EXPERIMENT) -> list:
    return checks.check_source(new, old, rules=(contract.RULE,), keep_fields=FIELDS)


@pytest.mark.parametrize("cut,code,message", [
    ('\n\nif __name__ == "__main__":\n    main()\n', "dropped-entry", 'the `if __name__ == "__main__":` block is gone'),
    ("        harness.save_sae(trainer.ae, train_acts, out_dir, layer, facts)\n", "dropped-export",
     "harness.save_sae(...) is no longer called"),
    ("    seed: int = 0                     # initialisation and the order of training batches\n",
     "dropped-config-field", "Config.seed is gone"),
])
def test_a_whole_file_that_drops_what_the_agent_runs_by_is_blocked(cut, code, message):
    assert cut in EXPERIMENT
    new = EXPERIMENT.replace(cut, "\n" if code == "dropped-entry" else "")
    (f,) = found(new)
    assert f.blocking and f.code == code and f.message == message
    assert f.why  # the coder hears what to do


def test_a_file_without_main_is_blocked():
    start = EXPERIMENT.index("def main():")
    end = EXPERIMENT.index('if __name__ == "__main__":')
    new = EXPERIMENT[:start] + EXPERIMENT[end:].replace("    main()\n", "    print('training')\n")
    # main() took the export with it: both are named
    assert [f.message for f in found(new)] == ["main() is gone", "harness.save_sae(...) is no longer called"]


def test_unchanged_or_only_changed_code_passes():
    assert found(EXPERIMENT) == []
    assert found(EXPERIMENT.replace("learning_rate: float = 3e-3", "learning_rate: float = 1e-3")) == []
    # A field the agent does not set may go; one it sets may change its default.
    assert found(EXPERIMENT.replace("    warmup_steps: int = 100           # linear learning-rate warm-up\n", "")) == []
    assert found(EXPERIMENT.replace("seed: int = 0 ", "seed: int = 7 ")) == []


def test_only_what_the_edit_removed_is_held_against_it():
    # A file that never had an entry or the export (plot.py, a mini template) is not blamed.
    assert found("x = 1\n", old="y = 2\n") == []
    assert found("x = 1\n", old=None) == []


def test_the_rule_is_in_the_gate_by_default():
    assert contract.RULE in checks.RULES
