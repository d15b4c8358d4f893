"""The pre-run gate, on planted mistakes and on the seed edits applied to a realistic trainer."""

import stat
import sys
import tempfile
from pathlib import Path

import pytest

from agent.checks import check_command, check_source, format_findings, is_placeholder_comment
from agent.edits import EditStatus, apply_reply

SEEDS = Path(__file__).parent / "data" / "seeds"
TEMPLATE = Path(__file__).parent.parent / "templates" / "sae_variants"

# A trimmed experiment.py in the shape of AI-Scientist's sae_variants template: the seed replies'
# SEARCH sections match it as they matched the real file (the blank line in `loss` keeps its
# 8 spaces of indentation, as in the template).
EXPERIMENT = '''\
import torch
import os
import torch.nn as nn
import json
import argparse
import numpy as np

from harness import evaluate_sae, load_activations


class CustomSAE(nn.Module):
    """Implementation of a Custom Sparse Autoencoder."""

    def __init__(self, d_in: int, d_sae: int, hook_layer: int, model_name: str = "pythia-70m"):
        super().__init__()
        self.W_enc = nn.Parameter(torch.zeros(d_in, d_sae))
        self.W_dec = nn.Parameter(torch.zeros(d_sae, d_in))
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = torch.float32
        self.dict_size = d_sae
        self.cfg = {"d_in": d_in, "d_sae": d_sae, "hook_layer": hook_layer, "model_name": model_name}

    def encode(self, input_acts):
        pre_acts = (input_acts - self.b_dec) @ self.W_enc + self.b_enc
        acts = torch.relu(pre_acts)
        return acts

    def decode(self, acts):
        return (acts @ self.W_dec) + self.b_dec

    def forward(self, acts, output_features=False):
        encoded = self.encode(acts)
        decoded = self.decode(encoded)
        if output_features:
            return decoded, encoded
        return decoded

    def to(self, *args, **kwargs):
        super().to(*args, **kwargs)
        if args and isinstance(args[0], torch.device):
            self.device = args[0]
        return self


class SAETrainer:
    """Generic class for implementing SAE training algorithms."""

    def __init__(self, seed=None):
        self.seed = seed
        self.logging_parameters = []

    def update(self, step, activations):
        pass

    def get_logging_parameters(self):
        return {name: getattr(self, name) for name in self.logging_parameters}


class CustomTrainer(SAETrainer):
    """Trainer for Custom Sparse Autoencoder using L1 regularization."""
    def __init__(self,
                 activation_dim=512,
                 dict_size=64*512,
                 lr=1e-3,
                 l1_penalty=1e-1,
                 warmup_steps=1000,
                 resample_steps=None,
                 seed=None,
                 device=None,
                 layer=None,
                 lm_name=None,
                 wandb_name='CustomTrainer',
                 submodule_name=None,
    ):
        super().__init__(seed)

        assert layer is not None and lm_name is not None
        self.layer = layer
        self.lm_name = lm_name
        self.submodule_name = submodule_name

        if seed is not None:
            torch.manual_seed(seed)

        # Initialize autoencoder
        self.ae = CustomSAE(d_in=activation_dim, d_sae=dict_size, hook_layer=layer, model_name=lm_name)

        self.lr = lr
        self.l1_penalty = l1_penalty
        self.warmup_steps = warmup_steps
        self.wandb_name = wandb_name
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.ae.to(self.device)

        self.resample_steps = resample_steps
        if self.resample_steps is not None:
            self.steps_since_active = torch.zeros(self.ae.dict_size, dtype=int).to(self.device)
        else:
            self.steps_since_active = None

        self.optimizer = torch.optim.Adam(self.ae.parameters(), lr=lr)

        def warmup_fn(step):
            return min(step / warmup_steps, 1.0)

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda=warmup_fn)

    def loss(self, x, logging=False, **kwargs):
        x_hat, f = self.ae(x, output_features=True)
        l2_loss = torch.linalg.norm(x - x_hat, dim=-1).mean()
        l1_loss = f.norm(p=1, dim=-1).mean()

        if self.steps_since_active is not None:
            # Update steps_since_active
            deads = (f == 0).all(dim=0)
            self.steps_since_active[deads] += 1
            self.steps_since_active[~deads] = 0
        
        loss = l2_loss + self.l1_penalty * l1_loss
        return loss

    def update(self, step, activations):
        activations = activations.to(self.device)
        self.optimizer.zero_grad()
        loss = self.loss(activations)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return loss.item()

    @property
    def config(self):
        return {"trainer_class": "CustomTrainer", "lr": self.lr, "l1_penalty": self.l1_penalty,
                "warmup_steps": self.warmup_steps, "layer": self.layer, "lm_name": self.lm_name}


def run_sae_training(layer, dict_size, num_tokens, out_dir, device, lm_name="pythia-70m",
                     learning_rate=3e-4, sparsity_penalty=0.04, seed=0):
    os.makedirs(out_dir, exist_ok=True)
    activations = load_activations(lm_name, layer, num_tokens)
    trainer = CustomTrainer(
        activation_dim=activations.shape[-1],
        dict_size=dict_size,
        lr=learning_rate,
        l1_penalty=sparsity_penalty,
        seed=seed,
        device=device,
        layer=layer,
        lm_name=lm_name,
    )
    losses = [trainer.update(step, batch) for step, batch in enumerate(activations.split(256))]
    checkpoint = {"model_state_dict": trainer.ae.state_dict(), "final_loss": float(np.mean(losses[-10:]))}
    torch.save(checkpoint, os.path.join(out_dir, "autoencoder_checkpoint.pt"))
    return trainer.ae


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--out_dir", type=str, default="run_0")
    args = parser.parse_args()
    saes = []
    for layer in [3]:
        saes.append(run_sae_training(layer=layer, dict_size=2048, num_tokens=100_000,
                                     out_dir=args.out_dir, device="cpu"))
    with open(os.path.join(args.out_dir, "final_info.json"), "w") as f:
        json.dump(evaluate_sae(saes[0]), f)
'''


def make_workspace(root: Path) -> Path:
    """A workspace folder holding the harness package the experiment imports."""
    (root / "harness").mkdir()
    (root / "harness" / "__init__.py").write_text("def evaluate_sae(s): ...\n")
    (root / "experiment.py").write_text(EXPERIMENT)
    return root


WORKSPACE = make_workspace(Path(tempfile.mkdtemp(prefix="gate-ws-")))


@pytest.fixture
def workspace(tmp_path):
    return make_workspace(tmp_path)


def gate(new, old=None, workspace=WORKSPACE, **kw):
    return check_source(new, old, search_path=workspace, **kw)


def blocking(findings):
    return [f for f in findings if f.blocking]


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def apply_seed(prefix: str, text: str = EXPERIMENT) -> str:
    reply = next(SEEDS.glob(f"{prefix}_*.txt")).read_text()
    changed, outcomes = apply_reply(reply, {"experiment.py": text})
    assert {o.status for o in outcomes} == {EditStatus.APPLIED}, outcomes
    return changed["experiment.py"]


# ---------------------------------------------------------------- no false alarms


def test_untouched_experiment_passes_with_no_findings(workspace):
    assert gate(EXPERIMENT, workspace=workspace) == []
    assert gate(EXPERIMENT, EXPERIMENT, workspace=workspace) == []


@pytest.mark.parametrize("prefix", ["000", "003"])
def test_seed_edits_that_can_run_pass_the_gate(workspace, prefix):
    new = apply_seed(prefix)
    assert blocking(gate(new, EXPERIMENT, workspace=workspace)) == []


@pytest.mark.skipif(not (TEMPLATE / "experiment.py").exists(), reason="template not written yet")
def test_the_unmodified_template_passes_the_gate():
    text = (TEMPLATE / "experiment.py").read_text()
    findings = check_source(text, path="experiment.py", search_path=TEMPLATE)
    assert blocking(findings) == [], format_findings(findings)


def test_seed_003_rename_that_misses_a_use_reports_the_old_name(workspace):
    # The rename edits one `CustomTrainer(` call; a second one is left pointing at a name
    # that no longer exists.
    text = EXPERIMENT.replace("    for layer in [3]:\n", "    for layer in [3]:\n"
                              "        print(CustomTrainer(layer=layer, lm_name='x').config)\n")
    new = apply_seed("003", text)
    (f,) = gate(new, text, workspace=workspace)
    assert f.message == "undefined name 'CustomTrainer'" and f.line == line_of(new, "print(CustomTrainer(")


# ---------------------------------------------------------------- the seed that ran nine times


def test_seed_001_placeholder_init_is_blocked_for_each_reason(workspace):
    new = apply_seed("001")
    findings = gate(new, EXPERIMENT, workspace=workspace)
    by_code = {f.code: f for f in findings}
    assert by_code["placeholder"].line == line_of(new, "# Existing init code...")
    assert by_code["placeholder"].blocking
    dup = by_code["duplicate-definition"]
    assert dup.blocking and "CustomTrainer.__init__" in dup.message
    assert dup.line == new.splitlines().index("    def __init__(self, ") + 1  # the second one
    attrs = by_code["self-attribute"]
    assert attrs.blocking and "self.ae" in attrs.message and "no longer assigned" in attrs.message
    assert "'CustomTrainer' object has no attribute 'ae'" in attrs.why  # the seed's real crash
    assert not by_code["shrunk-function"].blocking


def test_format_findings_gives_file_line_what_and_why(workspace):
    findings = gate(apply_seed("001"), EXPERIMENT, workspace=workspace)
    text = format_findings(findings)
    line = line_of(apply_seed("001"), "# Existing init code...")
    assert f"experiment.py:{line}: placeholder comment `# Existing init code...` — " in text
    assert "warning: CustomTrainer.__init__ went from" in text
    assert len(text.splitlines()) == len(findings)


# ---------------------------------------------------------------- compile and pyflakes


def test_syntax_error_is_one_blocking_finding_with_its_line():
    new = EXPERIMENT.replace("        acts = torch.relu(pre_acts)", "        acts = torch.relu(pre_acts")
    (f,) = gate(new, EXPERIMENT)
    assert f.code == "syntax-error" and f.blocking
    assert f.line in (line_of(new, "torch.relu(pre_acts"), line_of(new, "torch.relu(pre_acts") + 1)


def test_return_outside_function_is_caught_by_compile():
    (f,) = gate("x = 1\nreturn x\n")
    assert f.code == "syntax-error" and f.line == 2


def test_seed_000_without_its_import_reports_the_undefined_name(workspace):
    reply = next(SEEDS.glob("000_*.txt")).read_text()
    reply = reply.replace("import torch.nn.functional as F\n", "")
    changed, _ = apply_reply(reply, {"experiment.py": EXPERIMENT})
    new = changed["experiment.py"]
    (f,) = gate(new, EXPERIMENT, workspace=workspace)
    assert f.code == "undefined-name" and f.blocking
    assert f.message == "undefined name 'F'" and f.line == line_of(new, "F.normalize")


def test_undefined_name_already_in_old_code_is_not_blamed_on_the_edit():
    old = EXPERIMENT.replace("        return (acts @ self.W_dec) + self.b_dec",
                             "        return (acts @ self.W_dec) + self.b_dec + bias_shift")
    new = old.replace("torch.relu(pre_acts)", "torch.nn.functional.gelu(pre_acts)")
    assert [f.message for f in gate(old)] == ["undefined name 'bias_shift'"]
    assert gate(new, old) == []


def test_a_second_use_of_an_old_undefined_name_is_reported():
    old = "def f():\n    return y\n"
    new = "def f():\n    return y\n\ndef g():\n    return y + 1\n"
    (f,) = gate(new, old)
    assert f.code == "undefined-name" and f.line == 5


# ---------------------------------------------------------------- placeholders


@pytest.mark.parametrize("comment", [
    "# Existing init code...", "# ... rest of the code ...", "# ... existing code ...",
    "# rest of the code remains the same", "# Rest of the implementation unchanged",
    "# existing code", "# (existing code)", "# ... (unchanged) ...", "# previous code here",
    "# Keep existing initialization code", "# [rest of __init__ as before]",
    "# ... other methods unchanged ...", "# … existing logic …",
])
def test_placeholder_comments(comment):
    assert is_placeholder_comment(comment)


@pytest.mark.parametrize("comment", [
    "# Existing checkpoints are overwritten", "# keep the existing code path for fp16 models",
    "# Loading checkpoint shards...", "# Update steps_since_active", "# wait for the other workers...",
    "# ... and normalize the decoder", "# rest of batch goes to eval", "# Initialize autoencoder",
])
def test_ordinary_comments_are_not_placeholders(comment):
    assert not is_placeholder_comment(comment)


def test_placeholder_comment_on_an_untouched_line_is_not_blamed():
    old = "def f():\n    # ... existing code ...\n    return 1\n"
    new = old.replace("return 1", "return 2")
    assert gate(new, old) == []
    assert [f.code for f in gate(new)] == ["placeholder"]  # without a baseline, every line counts


def test_bare_ellipsis_among_statements_is_a_placeholder():
    new = EXPERIMENT.replace("        self.lr = lr\n", "        ...\n        self.lr = lr\n")
    (f,) = gate(new, EXPERIMENT)
    assert f.code == "placeholder" and f.blocking and f.line == line_of(new, "        ...")


def test_function_emptied_to_pass_is_blocked_but_a_new_stub_is_not():
    body = ("        pre_acts = (input_acts - self.b_dec) @ self.W_enc + self.b_enc\n"
            "        acts = torch.relu(pre_acts)\n        return acts\n")
    new = EXPERIMENT.replace(body, "        pass\n")
    (f,) = gate(new, EXPERIMENT)
    assert f.code == "emptied-body" and f.blocking and "CustomSAE.encode" in f.message
    stub = EXPERIMENT.replace("    def decode(self, acts):", "    def hook(self):\n        ...\n\n"
                                                          "    def decode(self, acts):")
    assert gate(stub, EXPERIMENT) == []


# ---------------------------------------------------------------- duplicate definitions


def test_method_defined_twice_is_blocked_at_the_second_definition():
    new = EXPERIMENT.replace("    def decode(self, acts):",
                             "    def encode(self, x):\n        return x\n\n    def decode(self, acts):")
    findings = gate(new, EXPERIMENT)
    (f,) = [f for f in findings if f.code == "duplicate-definition"]
    assert f.blocking and "CustomSAE.encode is defined 2 times" in f.message
    assert f.line == line_of(new, "def encode(self, x):")


def test_property_setter_and_old_duplicates_are_not_flagged():
    old = ("class A:\n    @property\n    def x(self):\n        return self._x\n\n"
           "    @x.setter\n    def x(self, v):\n        self._x = v\n\n"
           "    def f(self):\n        return 1\n\n    def f(self):\n        return 2\n")
    assert [f.code for f in gate(old)] == ["duplicate-definition"]
    assert gate(old.replace("return 2", "return 3"), old) == []


# ---------------------------------------------------------------- self.X


def test_new_read_of_an_attribute_nobody_assigns_is_blocked():
    new = EXPERIMENT.replace("        loss = l2_loss + self.l1_penalty * l1_loss\n",
                             "        loss = l2_loss + self.l1_penalty * l1_loss + self.ortho_weight\n")
    (f,) = gate(new, EXPERIMENT)
    assert f.code == "self-attribute" and f.blocking
    assert "self.ortho_weight" in f.message and "never assigned in CustomTrainer" in f.message


def test_attribute_assigned_in_an_in_file_base_class_is_fine():
    new = EXPERIMENT.replace("        loss = l2_loss + self.l1_penalty * l1_loss\n",
                             "        loss = l2_loss + self.l1_penalty * l1_loss * (self.seed or 1)\n")
    assert gate(new, EXPERIMENT) == []


def test_nn_module_subclass_is_checked_like_an_in_file_class():
    new = EXPERIMENT.replace("        acts = torch.relu(pre_acts)\n",
                             "        acts = torch.relu(pre_acts) * self.gain\n"
                             "        if self.training:\n            acts = acts * 1.0\n")
    (f,) = gate(new, EXPERIMENT)
    assert f.code == "self-attribute" and f.blocking and f.message.startswith("self.gain is read")
    registered = new.replace("        self.dtype = torch.float32\n",
                             "        self.register_buffer('gain', torch.ones(d_sae))\n"
                             "        self.dtype = torch.float32\n")
    assert gate(registered, EXPERIMENT) == []


def test_base_class_from_another_module_gives_a_warning():
    old = "from harness import BaseTrainer\n\nclass T(BaseTrainer):\n    def f(self):\n        return 1\n"
    (f,) = gate(old.replace("return 1", "return self.lr"), old)
    assert f.code == "self-attribute" and not f.blocking and "self.lr" in f.message


def test_removing_an_assignment_still_read_is_blocked_even_with_an_external_base():
    new = EXPERIMENT.replace("        self.dtype = torch.float32\n", "")
    new = new.replace("        acts = torch.relu(pre_acts)\n", "        acts = torch.relu(pre_acts).to(self.dtype)\n")
    old = EXPERIMENT.replace("        acts = torch.relu(pre_acts)\n", "        acts = torch.relu(pre_acts).to(self.dtype)\n")
    (f,) = gate(new, old)
    assert f.blocking and "self.dtype" in f.message and "no longer assigned" in f.message


def test_old_reads_of_unassigned_attributes_are_not_blamed_on_the_edit():
    old = "class A:\n    def f(self):\n        return self.missing\n\n    def g(self):\n        return 1\n"
    new = old.replace("return 1", "return 2")
    assert gate(new, old) == []
    assert [f.code for f in gate(old)] == ["self-attribute"]


def test_base_class_reading_what_its_subclass_sets_is_fine():
    src = ("class Base:\n    def run(self):\n        return self.ae\n\n"
           "class Child(Base):\n    def __init__(self):\n        self.ae = 1\n")
    assert gate(src) == []


def test_slots_and_new_count_as_assignments():
    src = ("class A:\n    __slots__ = ('_x',)\n\n    def x(self):\n        return self._x\n\n"
           "class B:\n    def __new__(cls):\n        self = object.__new__(cls)\n        self._y = 1\n"
           "        return self\n\n    def y(self):\n        return self._y\n")
    assert gate(src) == []


def test_dynamic_attributes_switch_the_check_off():
    src = ("class A:\n    def __init__(self, **kw):\n        for k, v in kw.items():\n"
           "            setattr(self, k, v)\n\n    def f(self):\n        return self.lr\n")
    assert gate(src) == []


# ---------------------------------------------------------------- shrunk functions


def test_function_that_lost_most_statements_is_a_warning():
    body = ("        activations = activations.to(self.device)\n        self.optimizer.zero_grad()\n"
            "        loss = self.loss(activations)\n        loss.backward()\n        self.optimizer.step()\n"
            "        self.scheduler.step()\n        return loss.item()\n")
    new = EXPERIMENT.replace(body, "        return self.loss(activations).item()\n")
    (f,) = gate(new, EXPERIMENT)
    assert f.code == "shrunk-function" and not f.blocking and "CustomTrainer.update" in f.message


# ---------------------------------------------------------------- imports


def test_missing_module_is_blocked_and_workspace_modules_resolve(workspace, monkeypatch):
    new = EXPERIMENT.replace("import json\n", "import json\nimport wandb_not_installed_xyz\n")
    (f,) = gate(new, EXPERIMENT, workspace=workspace)
    assert f.code == "unresolved-import" and f.blocking and "wandb_not_installed_xyz" in f.message
    # Without the workspace on the search path, `harness` does not resolve either (in this test
    # process, unless an earlier test imported the template's own harness or put it on sys.path).
    monkeypatch.delitem(sys.modules, "harness", raising=False)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if not (Path(p or ".") / "harness").is_dir()])
    assert {f.message.split("'")[1] for f in gate(new, EXPERIMENT, workspace=None)} == {
        "wandb_not_installed_xyz", "harness"}


def test_function_level_and_submodule_imports_are_checked():
    src = "import os.path\nimport json.no_such_sub\n\ndef f():\n    from no_such_pkg_xyz import thing\n    return thing\n"
    # Without a baseline an import in a function may sit on a path never taken: a warning.
    assert [(f.line, f.blocking) for f in gate(src)] == [(2, True), (5, False)]
    old = "import os.path\n\ndef f():\n    return 1\n"
    assert [(f.line, f.blocking) for f in gate(src, old)] == [(2, True), (5, True)]


def test_old_conditional_or_function_level_import_is_not_blamed_on_the_edit():
    old = ("import sys\nif sys.platform == 'win32':\n    import msvcrt_like_xyz\n\n"
           "def f():\n    import no_such_pkg_xyz\n    return no_such_pkg_xyz\n\nx = 1\n")
    assert gate(old.replace("x = 1", "x = 2"), old) == []
    assert [f.blocking for f in gate(old)] == [False, False]


def test_old_top_level_import_that_does_not_resolve_still_blocks():
    old = "import no_such_pkg_xyz\nx = 1\n"
    (f,) = gate(old.replace("x = 1", "x = 2"), old)
    assert f.code == "unresolved-import" and f.blocking


def test_namespace_package_submodules_resolve_without_importing_them(tmp_path):
    (tmp_path / "nspkg_xyz" / "inner").mkdir(parents=True)  # no __init__.py: namespace packages
    (tmp_path / "nspkg_xyz" / "inner" / "sub.py").write_text("")
    (f,) = gate("import nspkg_xyz.inner.sub\nimport nspkg_xyz.inner.missing\n", workspace=tmp_path)
    assert f.line == 2 and f.blocking


def test_import_guarded_by_except_import_error_is_not_checked():
    src = "try:\n    import no_such_pkg_xyz\nexcept ImportError:\n    no_such_pkg_xyz = None\n"
    assert gate(src) == []


def test_imports_are_resolved_by_the_runs_interpreter_in_one_call(tmp_path, workspace):
    log = tmp_path / "calls"
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\necho call >> "{log}"\nexec "{sys.executable}" "$@"\n')
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    new = EXPERIMENT.replace("import json\n", "import json\nimport no_such_pkg_xyz\n")
    findings = gate(new, EXPERIMENT, workspace=workspace, python=str(python))
    assert [f.message for f in findings] == [f"module 'no_such_pkg_xyz' is not installed for {python}"]
    assert log.read_text() == "call\n"


def test_an_interpreter_that_cannot_run_gives_a_warning_not_a_crash(tmp_path):
    (f,) = gate("import json\n", python=str(tmp_path / "no-python"))
    assert f.code == "import-check-failed" and not f.blocking


# ---------------------------------------------------------------- the CLI entry


def test_check_command_exit_status_and_output(tmp_path, workspace, capsys):
    before = workspace / "experiment.py"
    after = workspace / "experiment_new.py"
    after.write_text(apply_seed("001"))
    assert check_command(after, before) == 1
    out = capsys.readouterr().out
    assert "# Existing init code..." in out and "blocking" in out
    assert check_command(before, None) == 0
    assert "0 blocking" in capsys.readouterr().out


def test_check_command_resolves_a_package_files_imports_from_above_the_package(tmp_path):
    pkg = tmp_path / "harness"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from harness.data import load\n")
    (pkg / "data.py").write_text("def load():\n    return 1\n")
    assert check_command(pkg / "__init__.py") == 0


# ---------------------------------------------------------------- issue 10: false alarms the gate no longer raises
# Each edit below ran to the end in a real run; the gate must let it through.


def test_attributes_an_installed_base_provides_are_found_by_importing_it():
    src = ("import torch\nfrom torch.nn import Module\nimport torch.nn as tnn\n\n"
           "class Gate(Module):\n    def forward(self, x):\n        return x if self.training else x * 0\n\n"
           "class Head(tnn.Linear):\n    def forward(self, x):\n"
           "        return x @ self.weight.T + self.bias + self.in_features\n")
    assert gate(src) == []
    # Resolved, the base is checked as strictly as a file class: nn.Linear gives no `scale`.
    (f,) = gate(src.replace("+ self.in_features", "+ self.scale"))
    assert f.blocking and "self.scale" in f.message and "never assigned in Head" in f.message


@pytest.mark.parametrize("guarded", [
    "        if hasattr(self, 'ema'):\n            acts = acts * self.ema\n",
    "        acts = acts * getattr(self, 'ema', 1.0)\n        if getattr(self, 'ema', None) is not None:\n"
    "            acts = acts + self.ema\n",
    "        try:\n            acts = acts * self.ema\n        except AttributeError:\n            pass\n",
])
def test_reads_guarded_by_hasattr_getattr_default_or_except_attributeerror_pass(guarded):
    new = EXPERIMENT.replace("        acts = torch.relu(pre_acts)\n",
                             "        acts = torch.relu(pre_acts)\n" + guarded)
    assert gate(new, EXPERIMENT) == []
    unguarded = EXPERIMENT.replace("        acts = torch.relu(pre_acts)\n",
                                   "        acts = torch.relu(pre_acts) * self.ema\n")
    assert [f.code for f in gate(unguarded, EXPERIMENT)] == ["self-attribute"]


HELPER = "def init_state(module, size):\n    module.ema = torch.ones(size)\n    setattr(module, 'gain', 1.0)\n\n\n"
METHOD = "    def _init_state(self, size):\n        self.ema = torch.ones(size)\n        self.gain = 1.0\n\n"


@pytest.mark.parametrize("assignment, helper, method", [
    ("        for name in ('ema', 'gain'):\n            setattr(self, name, torch.ones(d_sae))\n", "", ""),
    ("        object.__setattr__(self, 'ema', 1.0)\n        super().__setattr__('gain', 1.0)\n", "", ""),
    ("        self.__dict__['ema'] = 1.0\n        self.__dict__['gain'] = 1.0\n", "", ""),
    ("        self.register_buffer(name='ema', tensor=torch.ones(d_sae))\n"
     "        for n in ['gain']:\n            self.register_parameter(n, nn.Parameter(torch.ones(d_sae)))\n", "", ""),
    ("        init_state(self, d_sae)\n", HELPER, ""),
    ("        self._init_state(d_sae)\n", "", METHOD),
])
def test_attributes_set_by_setattr_dict_registers_or_an_init_helper_pass(assignment, helper, method):
    new = EXPERIMENT.replace("class CustomSAE(nn.Module):", helper + "class CustomSAE(nn.Module):")
    new = new.replace("        self.dtype = torch.float32\n", "        self.dtype = torch.float32\n" + assignment)
    new = new.replace("    def encode(self, input_acts):\n", method + "    def encode(self, input_acts):\n")
    new = new.replace("        acts = torch.relu(pre_acts)\n",
                      "        acts = torch.relu(pre_acts) * self.ema * self.gain\n")
    assert gate(new, EXPERIMENT) == [], format_findings(gate(new, EXPERIMENT))
    # Without the assignment the same reads are blocked: the test would see a gate that ignores them.
    bare = new.replace(assignment, "").replace(method, "")
    assert [f.code for f in blocking(gate(bare, EXPERIMENT))] == ["self-attribute"]


def test_self_dict_update_makes_the_attributes_unknowable_and_the_check_steps_aside():
    src = ("class Config:\n    def __init__(self, **kw):\n        self.__dict__.update(kw)\n\n"
           "    def lr(self):\n        return self.learning_rate\n")
    assert gate(src) == []


def test_an_untouched_attribute_an_old_base_gave_is_not_reported_as_no_longer_assigned():
    old = ("import torch.nn as nn\n\nclass SAE(nn.Module):\n    def forward(self, x):\n"
           "        return x * 2 if self.training else x\n")
    # The edit swaps the base for one from the workspace, which the gate cannot read; the line
    # reading self.training is untouched and nothing that assigned it was removed.
    new = old.replace("import torch.nn as nn\n", "import torch.nn as nn\nfrom harness import BaseSAE\n")
    new = new.replace("class SAE(nn.Module):", "class SAE(BaseSAE):")
    assert blocking(gate(new, old)) == []
    # Removing a line that did assign it is still blamed on the edit.
    old2 = old.replace("    def forward", "    def __init__(self):\n        self.scale = 2\n\n    def forward")
    old2 = old2.replace("x * 2", "x * self.scale")
    new2 = old2.replace("        self.scale = 2\n", "        super().__init__()\n")
    (f,) = gate(new2, old2)
    assert f.blocking and "self.scale is read but no longer assigned" in f.message


def test_a_registered_first_definition_is_a_deliberate_override_not_a_duplicate():
    src = ("VARIANTS = {}\n\ndef make_sae(d):\n    return ('relu', d)\n\nVARIANTS['relu'] = make_sae\n\n"
           "def make_sae(d):\n    return ('topk', d)\n\nVARIANTS['topk'] = make_sae\n")
    assert gate(src, "VARIANTS = {}\n") == []
    # A call inside another function's body finds the last definition: that is no registration.
    called = src.replace("VARIANTS['relu'] = make_sae\n", "def main():\n    return make_sae(1)\n")
    assert [f.code for f in gate(called, "VARIANTS = {}\n")] == ["duplicate-definition"]


def test_a_conditional_second_definition_is_not_a_duplicate():
    src = ("import torch\n\ndef kernel(x):\n    return x\n\nif torch.cuda.is_available():\n"
           "    def kernel(x):\n        return x.cuda()\n\ntry:\n    from fancy_kernels import fused\n"
           "except ImportError:\n    def fused(x):\n        return x\n")
    assert [f.code for f in gate(src, "import torch\n")] == []


# ---------------------------------------------------------------- issue 10: failures the gate now catches


def test_a_read_in_init_before_the_assignment_is_blocked():
    new = EXPERIMENT.replace("        self.lr = lr\n", "        print('lr', self.lr)\n        self.lr = lr\n")
    (f,) = gate(new, EXPERIMENT)
    assert f.code == "self-attribute-order" and f.blocking and f.line == line_of(new, "print('lr'")
    assert "self.lr is read in CustomTrainer.__init__, before __init__ assigns it" in f.message
    # A loop's later iterations see what its body assigns; a guarded read is fine too.
    ok = EXPERIMENT.replace("        self.lr = lr\n", "        for i in range(2):\n            if i:\n"
                            "                print(self.lr)\n            self.lr = lr\n")
    assert gate(ok, EXPERIMENT) == []


def test_a_read_in_a_method_init_calls_before_the_attribute_is_set_is_blocked():
    new = EXPERIMENT.replace("        self.optimizer = torch.optim.Adam(self.ae.parameters(), lr=lr)\n",
                             "        self.optimizer = self._make_optimizer()\n")
    new = new.replace("    def loss(self, x, logging=False, **kwargs):\n",
                      "    def _make_optimizer(self):\n"
                      "        return torch.optim.Adam(self.ae.parameters(), lr=self.lr * self.lr_scale)\n\n"
                      "    def loss(self, x, logging=False, **kwargs):\n")
    new = new.replace("        self.scheduler = torch", "        self.lr_scale = 1.0\n        self.scheduler = torch")
    (f,) = gate(new, EXPERIMENT)
    assert f.code == "self-attribute-order" and f.blocking
    assert f.line == line_of(new, "lr=self.lr * self.lr_scale")
    assert "self.lr_scale is read in _make_optimizer(), which CustomTrainer.__init__ calls at line " \
           f"{line_of(new, 'self.optimizer = self._make_optimizer()')}" in f.message


def test_a_read_through_an_object_whose_class_is_in_the_file_is_blocked():
    new = EXPERIMENT.replace("        return loss\n\n    def update",
                             "        loss = loss + self.ae.W_dec_norm.sum()\n        return loss\n\n    def update")
    (f,) = gate(new, EXPERIMENT)
    assert f.code == "object-attribute" and f.blocking and f.line == line_of(new, "W_dec_norm")
    assert f.message == "self.ae.W_dec_norm is read but CustomSAE has no attribute W_dec_norm"
    assert "'CustomSAE' object has no attribute 'W_dec_norm'" in f.why
    # What CustomSAE and nn.Module do have passes; so does a local made from a file class.
    fine = EXPERIMENT.replace("        return loss\n\n    def update",
                              "        loss = loss + self.ae.W_dec.sum() * self.ae.training\n"
                              "        return loss\n\n    def update")
    assert gate(fine, EXPERIMENT) == []
    local = EXPERIMENT.replace("    losses = [", "    print(trainer.ae, trainer.warmup)\n    losses = [")
    (g,) = gate(local, EXPERIMENT)
    assert g.message == "trainer.warmup is read but CustomTrainer has no attribute warmup"


def test_an_attribute_only_read_by_its_own_augmented_assignment_is_blocked():
    new = EXPERIMENT.replace("        self.scheduler.step()\n",
                             "        self.scheduler.step()\n        self.streaks += 1\n")
    (f,) = gate(new, EXPERIMENT)
    assert f.code == "self-attribute" and f.blocking and f.line == line_of(new, "self.streaks += 1")
    assert "self.streaks is read but never assigned in CustomTrainer" in f.message
    started = new.replace("        self.lr = lr\n", "        self.lr = lr\n        self.streaks = 0\n")
    assert gate(started, EXPERIMENT) == []


def test_a_base_class_from_a_workspace_module_is_never_imported(tmp_path, monkeypatch):
    """Only installed packages are imported to resolve a base: a workspace module is code the LLM
    may have written, and the gate must not run it, even when it is on sys.path."""
    marker = tmp_path / "ran"
    (tmp_path / "evil_base_xyz.py").write_text(
        f"open({str(marker)!r}, 'w').write('imported')\nclass Base:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    src = "from evil_base_xyz import Base\n\nclass A(Base):\n    def f(self):\n        return self.x\n"
    (f,) = gate(src, workspace=tmp_path)
    assert f.code == "self-attribute" and not f.blocking  # unknown base: a warning
    assert not marker.exists() and "evil_base_xyz" not in sys.modules


def test_without_torch_importable_nn_module_falls_back_to_what_it_is_known_to_give(monkeypatch):
    from agent import checks
    from agent.checks import classes

    monkeypatch.setattr(classes, "real_class", lambda dotted: None)
    checks.clear_caches()
    src = ("import torch.nn as nn\n\nclass A(nn.Module):\n    def f(self, x):\n"
           "        return x if self.training else self.gain\n")
    (f,) = gate(src)
    assert f.blocking and f.message.startswith("self.gain is read")
    checks.clear_caches()


def test_each_registered_rule_runs_alone_and_reports_only_its_own_codes(workspace):
    from agent.checks import RULES

    new = apply_seed("001").replace("import json\n", "import json\nimport no_such_pkg_xyz\n")
    seen = set()
    for rule in RULES:
        codes = {f.code for f in check_source(new, EXPERIMENT, search_path=workspace, rules=(rule,))}
        assert codes <= set(rule.codes), (rule.name, codes)
        seen |= codes
    # All of them together are what the gate reports by default.
    assert seen == {f.code for f in gate(new, EXPERIMENT, workspace=workspace)}
    assert {"placeholder", "duplicate-definition", "self-attribute", "unresolved-import"} <= seen
