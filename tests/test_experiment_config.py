"""experiment.py's `Config`: the agent sets the baseline's seeds and frontier through it, every
field reaches the training claims, and the shipped reference replays still apply to the template.

Fast: no language model. The replays train a few steps on random activations, which is enough to
show that each edited experiment.py runs, exports and records its hyperparameters.
"""

import importlib.util
import json
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from agent import baseline, edits, execution, results, workspace
from agent.idea import load_idea
from agent.template import load_template
from mini import MINI

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "templates" / "sae_variants"
EDITABLE = ("experiment.py", "plot.py", "notes.txt")


def import_experiment(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def resolved(cfg):
    """The fields main() takes from the profile when left None, set as the tiny profile would."""
    for name, value in (("sparsity_penalty", 1.5), ("k", 4)):
        if getattr(cfg, name, 0) is None:
            cfg = replace(cfg, **{name: value})
    return cfg


def train_and_save(module, out_dir: Path, **extra) -> dict:
    """A few steps of the module's own trainer on random activations, saved by the harness; the claims."""
    import torch
    import harness
    cfg = resolved(replace(module.Config(), dict_size=64, batch_size=32))
    acts = torch.randn(512, 16)
    trainer = module.CustomTrainer(cfg, 16, initial_b_dec=acts.mean(dim=0), **extra)
    facts = {**asdict(cfg), **harness.train(trainer, acts, steps=20, batch_size=32, log=lambda line: None)}
    return json.loads(harness.save_sae(trainer.ae, acts, out_dir, 0, facts).read_text())


def test_the_exported_sae_does_not_carry_its_training_activations(tmp_path, harness_path):
    import torch
    import harness
    module = import_experiment(TEMPLATE / "experiment.py", "experiment_export_size")
    cfg = resolved(replace(module.Config(), dict_size=64))
    acts = torch.randn(200_000, 16)   # 12.8 MB: a view of it saved as the example input would show
    trainer = module.CustomTrainer(cfg, 16, initial_b_dec=acts.mean(dim=0))
    harness.save_sae(trainer.ae, acts, tmp_path, 0, {})
    sizes = {p.name: p.stat().st_size for p in tmp_path.glob("*.pt2")}
    assert sizes and max(sizes.values()) < 1_000_000, sizes


# ---------------------------------------------------------------- setting hyperparameters

def test_the_baseline_knobs_become_config_defaults_and_nothing_else_changes(harness_path, tmp_path):
    template = load_template(TEMPLATE)
    assert template.frontier, "the template's frontier names a hyperparameter"
    knobs = {"seed": template.baseline_seeds[-1], **{k: v[-1] for k, v in template.frontier.items()}}
    source = (TEMPLATE / "experiment.py").read_text()
    out = execution.override_assignments(source.encode(), knobs).decode()
    changed = [(a, b) for a, b in zip(source.splitlines(), out.splitlines()) if a != b]
    assert len(out.splitlines()) == len(source.splitlines()) and len(changed) == len(knobs)
    assert ("    seed: int = 0                     # initialisation and the order of training batches",
            f"    seed: int = {knobs['seed']}  # set by the agent") in changed
    (tmp_path / "experiment.py").write_text(out)
    config = import_experiment(tmp_path / "experiment.py", "experiment_overridden").Config()
    pristine = import_experiment(TEMPLATE / "experiment.py", "experiment_pristine").Config()
    assert asdict(config) == {**asdict(pristine), **knobs}


def test_a_knob_experiment_py_lacks_is_refused_by_name():
    config = b"class Config:\n    seed: int = 0\n"
    with pytest.raises(execution.OverrideError, match=r"no `sparsity_penalty` field in its `class Config`"):
        execution.override_assignments(config, {"seed": 1, "sparsity_penalty": 4.0})
    with pytest.raises(execution.OverrideError, match="does not parse"):
        execution.override_assignments(b"class Config(:\n", {"seed": 1})
    # a module without a Config keeps top-level assignments (a template of plain globals)
    assert execution.override_assignments(b"seed = 0  # why\nx = 1\n", {"seed": 3}) == \
        b"seed = 3  # set by the agent\nx = 1\n"
    with pytest.raises(execution.OverrideError, match="top-level"):
        execution.override_assignments(b"def f():\n    seed = 0\n", {"seed": 1})


def test_the_last_definition_is_set_as_python_would_read_it():
    source = b"class Config:\n    k: int = 1\n    k: int = (\n        2)\n    after: str = 'x'\n"
    out = execution.override_assignments(source, {"k": 5, "after": "y"}).decode()
    assert out == "class Config:\n    k: int = 1\n    k: int = 5  # set by the agent\n" \
                  "    after: str = 'y'  # set by the agent\n"


def _mini_idea(tmp_path, frontier: dict, **settings) -> Path:
    template = tmp_path / "template"
    shutil.copytree(MINI, template)
    source = (template / "experiment.py").read_text()   # a frontier run sets the first seed too
    (template / "experiment.py").write_text(source.replace("STEPS = 100\n", "STEPS = 100\nseed = 0\n", 1))
    spec = json.loads((template / "template.json").read_text())
    (template / "template.json").write_text(json.dumps({**spec, "frontier": frontier, **settings}))
    idea = tmp_path / "idea.md"
    idea.write_text(f"---\ntemplate: {template}\n---\n# Mini\n\n## Experiment\n1. Nothing.\n")
    return idea


def made(idea, results_dir, profile=None):
    """A workspace with its baseline, as `agent run` makes it."""
    ws = workspace.create(idea, results_dir, profile)
    baseline.establish(ws)
    return ws


def test_the_baseline_frontier_runs_the_template_at_each_value(tmp_path, monkeypatch):
    monkeypatch.setenv("SAE_CACHE_DIR", str(tmp_path / "cache"))
    ws = made(load_idea(_mini_idea(tmp_path, {"ACCURACY": [0.5]})), tmp_path / "results")
    (point,) = ws.baseline_frontier()
    key = "mini-model/blocks.0.hook_resid_post"
    assert results.headline(point)[key]["sae_top_1_test_accuracy"] == 0.5
    assert results.headline(ws.baseline())[key]["sae_top_1_test_accuracy"] == 0.75
    assert "ACCURACY = 0.75" in (ws.path / "experiment.py").read_text()   # the workspace's copy untouched


def test_a_profile_trains_the_baseline_with_its_own_seeds_and_is_judged_by_them(tmp_path, monkeypatch):
    monkeypatch.setenv("SAE_CACHE_DIR", str(tmp_path / "cache"))
    idea = load_idea(_mini_idea(tmp_path, {}, profiles=["tiny", "cpu"], baseline_seeds=[0, 1],
                                profile_baseline_seeds={"cpu": [0, 1, 2, 3]}))
    many = made(idea, tmp_path / "results", profile="cpu")
    few = made(idea, tmp_path / "results", profile="tiny")
    assert sorted(p.name for p in (many.path / "run_0").glob("seed_*")) == ["seed_1", "seed_2", "seed_3"]
    assert sorted(p.name for p in (few.path / "run_0").glob("seed_*")) == ["seed_1"]
    assert len(many.baseline_seeds()) == 4 and len(few.baseline_seeds()) == 2
    judged = json.loads((many.path / "run_0" / "intervals.json").read_text())
    assert {v["baseline_seeds"] for entry in judged.values() for v in entry["vs_baseline"].values()} == {4}


def test_the_baseline_seeds_are_scored_on_the_final_split_once_per_baseline(tmp_path, monkeypatch):
    """Every idea ends by scoring the baseline's seeds on the final split; a second idea on the same
    (cached) baseline reuses those scores instead of running the evaluator on every seed again."""
    monkeypatch.setenv("SAE_CACHE_DIR", str(tmp_path / "cache"))
    idea = load_idea(_mini_idea(tmp_path, {}, baseline_seeds=[0, 1]))
    evaluated = []

    def evaluator(ws):   # the mini template has no evaluator: this one writes what it was asked
        def evaluate_final(rel):
            evaluated.append(rel)
            (ws.path / rel / "final_split.json").write_text(json.dumps({"scored": rel, "in": ws.path.name}))
            return ws.path / rel / "final_split.json"
        return evaluate_final

    first = made(idea, tmp_path / "results")
    scores = baseline.final_split_scores(first, evaluator(first))
    assert evaluated == ["run_0", "run_0/seed_1"] and [s["scored"] for s in scores] == evaluated
    second = made(idea, tmp_path / "results")
    assert baseline.final_split_scores(second, evaluator(second)) == scores
    assert evaluated == ["run_0", "run_0/seed_1"], "the second idea ran the evaluator again"
    # Another baseline (trained again, say) never takes these scores: they belong to its results.
    third = made(idea, tmp_path / "results")
    info = third.path / "run_0" / "final_info.json"
    info.write_text(info.read_text().replace("0.75", "0.7"))
    baseline.final_split_scores(third, evaluator(third))
    assert evaluated[2:] == ["run_0"], "only the seed whose results differ is scored again"


def test_a_frontier_knob_the_template_lacks_stops_the_baseline_before_any_run(tmp_path, monkeypatch):
    monkeypatch.setenv("SAE_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(workspace.WorkspaceError, match=r"no `sparsity_penalty` top-level .* frontier"):
        made(load_idea(_mini_idea(tmp_path, {"sparsity_penalty": [0.5]})), tmp_path / "results")
    (ws,) = (tmp_path / "results").iterdir()
    assert not (ws / "run_0").exists()


# ---------------------------------------------------------------- the template and its replays

def test_every_config_field_reaches_the_training_claims(harness_path, tmp_path):
    module = import_experiment(TEMPLATE / "experiment.py", "experiment_claims")
    claims = train_and_save(module, tmp_path)
    fields = asdict(resolved(replace(module.Config(), dict_size=64, batch_size=32)))
    assert "seed" in fields and {k: claims["training"][k] for k in fields} == fields
    assert claims["training"]["training_steps"] == 20 and claims["d_sae"] == 64


@pytest.mark.parametrize("replay", sorted(p.name for p in (ROOT / "ideas").glob("*.replay.json")))
def test_a_shipped_replay_applies_exactly_and_every_step_trains(harness_path, tmp_path, replay):
    files = {name: (TEMPLATE / name).read_text() for name in EDITABLE}
    trained = 0
    for i, reply in enumerate(json.loads((ROOT / "ideas" / replay).read_text())["replies"]):
        changed, outcomes = edits.apply_reply(reply, files, EDITABLE)
        assert [o.message.split(" in ")[0] for o in outcomes] == ["exact match"] * len(outcomes), \
            [o.message for o in outcomes]
        files.update(changed)
        if "experiment.py" in changed:
            (tmp_path / f"{i}.py").write_text(files["experiment.py"])
            module = import_experiment(tmp_path / f"{i}.py", f"experiment_{Path(replay).stem}_{i}")
            extra = {"total_steps": 20} if "total_steps" in files["experiment.py"] else {}
            claims = train_and_save(module, tmp_path / f"run_{i}", **extra)
            assert set(asdict(module.Config())) <= set(claims["training"])
            trained += 1
    assert trained >= 1
