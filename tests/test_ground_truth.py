"""Ground truth: the synthetic profiles (harness/synthetic.py, harness/ground_truth.py).

A world of a few hundred known features is built, cached and verified like the activations; the
training side sees only its pool of hidden vectors; the evaluator scores an exported SAE with
SAELens' own calculators and keeps per-block evidence that reproduces the headline F1.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

pytest.importorskip("sae_lens")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def micro(harness_path, tmp_path, monkeypatch):
    """A synthetic profile small enough to build in seconds, in a private cache."""
    from harness import profiles
    monkeypatch.setenv("SAE_CACHE_DIR", str(tmp_path / "cache"))
    base = profiles.PROFILES["synth-tiny"]
    world = dataclasses.replace(base.world, features=256, hidden_dim=32, orthogonalization_steps=2,
                                heldout_samples=3000, probe_features=2)
    return dataclasses.replace(
        base, name="synth-micro", world=world, d_model=32, train_tokens=4096, dict_size=64, batch_size=128,
        probing=dataclasses.replace(base.probing, dataset_names=("feature_00000", "feature_00003"),
                                    train_per_class=20, test_per_class=20, final_per_class=5))


def test_prepare_builds_the_world_once_and_the_training_side_sees_only_the_pool(micro):
    from harness.stores import open_store
    from harness.prepare import prepare
    from harness.synthetic import SyntheticStore
    dirs = prepare(micro, log=lambda m: None)
    (train,) = dirs["train"]
    assert Path(train).name.startswith("train-")
    assert {Path(d).name.split("-")[0] for d in dirs["eval"]} == {"train", "heldout", "truth", "probe"}
    store = open_store(micro, log=lambda m: None)
    assert isinstance(store, SyntheticStore)
    pool = store.training(0)
    assert tuple(pool.shape) == (4096, 32)
    assert abs(float(pool.pow(2).sum(1).mean()) - 32) < 0.5     # scaled to mean squared norm d_model
    truth = store.truth(0)
    assert truth["feature_vectors"].shape == (256, 32) and len(truth["row_counts"]) == 3000
    # a second prepare finds every entry and rebuilds nothing
    messages = []
    prepare(micro, log=messages.append)
    assert not any("building the synthetic world" in m or "cache miss" in m for m in messages), messages


def test_the_16k_profile_builds_its_code_path_on_a_scaled_down_world(harness_path, tmp_path, monkeypatch):
    """synth-16k is for a GPU; SAE_SMOKE shrinks its world (same recipe: p_max 0.4, seed 42) so a
    CPU builds, samples and probes it the same way."""
    monkeypatch.setenv("SAE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SAE_SMOKE", "1")
    from harness.prepare import prepare
    from harness.profiles import load_profile
    from harness.stores import open_store
    profile = load_profile("synth-16k")
    assert profile.smoke and profile.world.features == 512 and profile.world.max_prob == 0.4
    prepare(profile, log=lambda m: None)
    store = open_store(profile, log=lambda m: None)
    assert tuple(store.training(0).shape) == (4096, 64)
    (task,) = store.probing(0, store.scale(0)).values()
    assert set(task) == {"train", "test"} and set(task["train"]) == {"on", "off"}


def test_a_tampered_world_is_rebuilt_and_a_missing_entry_in_a_box_names_prepare(micro, monkeypatch):
    from harness.activations import CacheMissing
    from harness.stores import open_store
    store = open_store(micro, log=lambda m: None)
    world_dir = store._cached(store.world_spec(), store._build_world)
    weights = next(p for p in (world_dir / "model").iterdir() if p.suffix == ".safetensors")
    weights.write_bytes(weights.read_bytes()[:-8] + b"tampered")
    messages = []
    fresh = open_store(micro, log=messages.append)
    fresh.world()
    assert any("failed verification" in m for m in messages) and any("building" in m for m in messages)
    monkeypatch.setenv("SAE_CACHE_READONLY", "1")
    boxed = open_store(micro, log=lambda m: None)
    with pytest.raises(CacheMissing, match="agent prepare --profile synth-micro"):
        boxed.training(0)


def _export(tmp_path, module, acts):
    from harness.artifacts import load_sae, save_sae
    save_sae(module, acts, tmp_path, 0, {"training_steps": 1, "tokens": 1})
    return load_sae(tmp_path, 0)[0]


def test_ground_truth_metrics_reward_the_true_dictionary_and_their_blocks_reproduce_f1(micro, tmp_path):
    import torch
    from harness.stores import open_store
    from harness.ground_truth import ground_truth_metrics
    store = open_store(micro, log=lambda m: None)
    heldout, _ = store.heldout(0)
    vectors = store.truth(0)["feature_vectors"]

    class Linear(torch.nn.Module):
        def __init__(self, rows):
            super().__init__()
            self.W_dec = torch.nn.Parameter(rows.clone())
            self.W_enc = torch.nn.Parameter(torch.linalg.pinv(rows))
            self.d_in, self.d_sae = rows.shape[1], rows.shape[0]

        def encode(self, x):
            return torch.relu(x @ self.W_enc - 0.5)

        def decode(self, f):
            return f @ self.W_dec

    oracle = _export(tmp_path / "oracle", Linear(vectors[:64]), heldout)
    random = _export(tmp_path / "random", Linear(torch.nn.functional.normalize(torch.randn(64, 32), dim=1)), heldout)
    good, blocks = ground_truth_metrics(oracle, heldout, store, 0)
    bad, _ = ground_truth_metrics(random, heldout, store, 0)
    assert good["mcc"] > 0.99 and bad["mcc"] < 0.9 and good["uniqueness"] == 1.0
    assert good["f1"] > bad["f1"] and good["decoder_linear"]
    # the per-block counts the agent bootstraps sum to the calculator's own F1
    tp, fp, fn = (torch.tensor(blocks[k]).sum(0).float() for k in ("tp", "fp", "fn"))
    per_latent = torch.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), torch.zeros_like(tp))
    assert len(blocks["tp"]) == 16 and abs(float(per_latent.mean()) - good["f1"]) < 1e-5


def test_a_decoder_that_is_not_linear_is_scored_and_says_so(micro, tmp_path):
    import torch
    from harness.stores import open_store
    from harness.ground_truth import ground_truth_metrics
    store = open_store(micro, log=lambda m: None)
    heldout, _ = store.heldout(0)

    class Squared(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.W = torch.nn.Parameter(torch.randn(32, 16))
            self.d_in, self.d_sae = 32, 16

        def encode(self, x):
            return torch.relu(x @ self.W)

        def decode(self, f):
            return (f ** 2) @ self.W.t()

    metrics, _ = ground_truth_metrics(_export(tmp_path, Squared(), heldout), heldout, store, 0)
    assert metrics["decoder_linear"] is False and 0.0 <= metrics["mcc"] <= 1.0


def test_the_evaluator_writes_the_profiles_headline_metrics_and_evidence(micro, tmp_path):
    """train -> export -> evaluate on the micro world, in process: the result names its headline
    metrics, carries SAELens' ground-truth metrics and sparse probing in SAEBench's shape."""
    import torch
    import harness
    from harness.stores import open_store
    from harness.evaluate import evaluate
    from harness.artifacts import load_sae
    store = open_store(micro, log=lambda m: None)
    acts = store.training(0)
    sys_path_template = Path(__file__).resolve().parents[1] / "templates" / "sae_variants"
    import importlib.util
    spec = importlib.util.spec_from_file_location("experiment_gt", sys_path_template / "experiment.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg = module.Config(dict_size=64, batch_size=128, sparsity_penalty=3.0, steps=60)
    trainer = module.CustomTrainer(cfg, 32, initial_b_dec=acts[:1024].mean(0))
    facts = harness.train(trainer, acts, steps=60, batch_size=128, log=lambda m: None)
    harness.save_sae(trainer.ae, acts, tmp_path, 0, facts)
    sae, claims = load_sae(tmp_path, 0)
    entry = evaluate(sae, store, 0, claims["training"], log=lambda m: None)
    assert entry["eval_config"]["headline_metrics"] == ["f1", "mcc", "explained_variance"]
    gt = entry["eval_result_metrics"]["ground_truth"]
    assert 0 < gt["f1"] <= 1 and 0 < gt["mcc"] <= 1 and gt["sae_l0"] == pytest.approx(entry["core_metrics"]["l0"])
    assert set(entry["per_example"]["ground_truth_blocks"]) == {"tp", "fp", "fn"}
    assert set(entry["eval_result_metrics"]["sae"]) >= {"sae_top_1_test_accuracy", "sae_top_50_test_accuracy"}
    assert {d["dataset_name"] for d in entry["eval_result_details"]} == {"feature_00000_results", "feature_00003_results"}
    assert torch.isfinite(torch.tensor(gt["explained_variance"]))
    # the file the agent reads, through the schema it validates every result against
    from agent import results
    from harness.evaluate import write_final_info
    write_final_info(tmp_path / "run_1", {micro.sae_key(0): entry})
    assert results.load_results(tmp_path / "run_1")[micro.sae_key(0)]["core_metrics"] == entry["core_metrics"]


# ---------------------------------------------------------------- the README's main job and known answers
# Through the whole loop, as a user runs it: `agent run ideas/<idea>.md --profile synth-tiny`, offline
# (no model is configured, so the idea's recorded replies are replayed). The synth-tiny baseline is
# trained once per test session (the shared cache) and reused by every idea after the first.
def _run_idea(agent_cli, idea: str, tmp_path):
    out = tmp_path / "results"
    proc = agent_cli("run", f"ideas/{idea}.md", "--profile", "synth-tiny", "--results", out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (ws,) = list(out.iterdir())
    (entry,) = json.loads((ws / "run_1" / "intervals.json").read_text()).values()
    return ws, entry, proc


@pytest.mark.slow
def test_the_readme_main_job_finds_batchtopk_better_on_f1_at_matched_l0(tmp_path, agent_cli):
    """The README's quick start: SynthSAEBench's ranking found again, every attempt committed."""
    import git
    from agent import history, results
    ws, entry, proc = _run_idea(agent_cli, "batchtopk", tmp_path)
    assert "offline replay — no LLM is called" in proc.stdout
    matched = entry["at_matched_sparsity"]
    assert matched["f1"]["verdict"] == "better", matched
    assert matched["f1"]["change"] - matched["f1"]["half_width"] > 0

    attempts = history.read_history(ws)
    assert attempts[0].status == "baseline" and attempts[-1].status == "notes", [a.subject for a in attempts]
    assert all(a.model.startswith("replay:") for a in attempts[1:])
    (success,) = [a for a in attempts if a.status == "success"]
    assert success.subject.startswith("run 1: f1 "), success.subject
    assert not git.Repo(ws).is_dirty(untracked_files=True)
    assert results.untrained_problems(results.load_results(ws / "run_0")) == []
    (run1,) = results.headline(results.load_results(ws / "run_1")).values()
    assert run1["training_steps"] > 0 and run1["sae_top_1_test_accuracy"] > 0.55   # probing above chance
    assert (ws / "notes.txt").read_text() != (REPO / "templates/sae_variants/notes.txt").read_text()

    # The harness's own TopK reference, trained with the baseline at k = the seeds' mean L0, sits at
    # that sparsity; the coder is shown it beside every comparison.
    seeds = [results.headline(results.load_results(p)) for p in [ws / "run_0", *(ws / "run_0").glob("seed_*")]]
    k = round(sum(h["l0"] for seed in seeds for h in seed.values()) / len(seeds))
    reference = results.load_results(ws / "run_0" / "reference_topk")
    (ref,) = results.headline(reference).values()
    (facts,) = [v["training"] for v in reference.values()]
    assert facts["k"] == k and k - 1 <= ref["l0"] <= k
    assert f"reference (topk SAE, k {k}, the harness's own" in (ws / "transcript.md").read_text()

    log = agent_cli("log", ws, "--json")
    assert log.returncode == 0, log.stderr
    assert [r["status"] for r in json.loads(log.stdout)["attempts"]] == [a.status for a in attempts]


@pytest.mark.slow
def test_known_positive_matryoshka_beats_the_l1_baseline_on_f1_at_matched_l0(tmp_path, agent_cli):
    from agent import history
    ws, entry, _ = _run_idea(agent_cli, "matryoshka", tmp_path)
    matched = entry["at_matched_sparsity"]
    assert matched["f1"]["verdict"] == "better", matched
    assert matched["f1"]["change"] - matched["f1"]["half_width"] > 0
    subject = [a.subject for a in history.read_history(ws) if a.status == "success"][0]
    assert subject.startswith("run 1: f1 "), subject


@pytest.mark.slow
def test_known_null_is_no_detectable_change_on_every_headline_metric(tmp_path, agent_cli):
    import git
    from agent import history, stats
    from agent.template import load_template
    ws, entry, _ = _run_idea(agent_cli, "null_change", tmp_path)
    verdicts = {m: v["verdict"] for m, v in entry["vs_baseline"].items()}
    assert {"f1", "mcc", "explained_variance"} <= set(verdicts), verdicts
    # L0 is the sparsity setting: its change is never judged, whatever it is
    assert all(v == (stats.SETTING if m == "l0" else "no detectable change") for m, v in verdicts.items()), verdicts
    subject = [a.subject for a in history.read_history(ws) if a.status == "success"][0]
    assert "no detectable change" in subject
    # the final split was scored once, at the end, and went into the notes commit, not to the coder
    final = json.loads((ws / "final_split.json").read_text())
    seeds = load_template(REPO / "templates" / "sae_variants").seeds_for("synth-tiny")
    assert final["baseline_seeds"] == len(seeds) and "1" in final["runs"]
    final_lines = git.Repo(ws).head.commit.message.split("Final split", 1)[1]
    assert "run 1 (best on the test split): sae_top_1 0." in final_lines   # probing: the final split holds no ground truth
    messages = json.loads((ws / "transcript.json").read_text())["messages"]
    assert not any("Final split" in m.get("content", "") for m in messages)
    log = agent_cli("log", ws)
    row = next(line for line in log.stdout.splitlines() if line.split()[:3] == ["1", "1", "success"])
    assert "±" in row and "▲" not in row and "▼" not in row    # intervals shown, no false finding
