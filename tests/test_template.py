"""templates/sae_variants through the agent's real execution path (tiny profile): prepare, train in
the box, evaluate the exported SAE in its own process. The result file has the promised schema,
the baseline is a trained SAE, reruns hit the activation cache, and the broken seeds' baseline (an
SAE left at zero weights) is caught as untrained.

The runs share one activation cache per test session (the `sae_cache` fixture) and the converted
model weights (SAE_MODEL_DIR, default ~/.cache/sae-agent/models), which take a minute to build once.
"""

import ast
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent import execution, results
from agent.process import RunStatus
from agent.template import load_template

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "templates" / "sae_variants"
KEY = "google/gemma-3-270m/blocks.3.hook_resid_post"
K_VALUES = [1, 2, 5, 10, 20, 50]


def make_workspace(path: Path, profile: str = "tiny") -> Path:
    shutil.copytree(TEMPLATE, path, ignore=shutil.ignore_patterns("__pycache__"))
    (path / "profile.json").write_text(json.dumps({"profile": profile}))
    return path


def pipeline(ws: Path, lines: list | None = None) -> execution.Pipeline:
    template = load_template(TEMPLATE)
    return execution.Pipeline(ws, template, "tiny", protected=execution.protected_from_template(template),
                              timeout=900, on_line=lines.append if lines is not None else None)


def run_logs(ws: Path, out_dir: str) -> str:
    return "".join((ws / out_dir / name).read_text() for name in ("log.txt", "eval_log.txt")
                   if (ws / out_dir / name).exists())


def run_experiment(ws: Path, out_dir: str, smoke: bool = False, lines: list | None = None):
    started = time.monotonic()
    step = pipeline(ws, lines).run(out_dir, smoke=smoke)
    elapsed = time.monotonic() - started
    output = run_logs(ws, out_dir)
    assert step.ok, f"the run failed ({step.phase}): {step.problem or step.result.error}\n{output[-4000:]}"
    return output, elapsed


@pytest.fixture(scope="module")
def env(sae_cache):
    return sae_cache


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, env):
    """A tiny-profile workspace with run_0 (cold cache) and run_1 (warm cache) done."""
    ws = make_workspace(tmp_path_factory.mktemp("ws") / "ws")
    prepare_lines: list[str] = []
    cold_log, cold_s = run_experiment(ws, "run_0", lines=prepare_lines)
    cache_files = {p: p.stat().st_mtime_ns for p in Path(env["SAE_CACHE_DIR"]).rglob("*")
                   if p.is_file() and "stages" not in p.parts}
    warm_log, warm_s = run_experiment(ws, "run_1")
    print(f"\ntiny profile: cold run {cold_s:.1f}s, cached rerun {warm_s:.1f}s")
    return {"path": ws, "cold_log": "\n".join(prepare_lines) + cold_log, "warm_log": warm_log,
            "cache_files": cache_files, "cold_s": cold_s, "warm_s": warm_s}


def config_defaults(path: Path) -> dict:
    """The field defaults of the `class Config` in an experiment.py, read without importing it."""
    tree = ast.parse(path.read_text())
    (config,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Config"]
    return {n.target.id: ast.literal_eval(n.value) for n in config.body if isinstance(n, ast.AnnAssign)}


def final_info(workspace, run="run_0"):
    return json.loads((workspace["path"] / run / "final_info.json").read_text())


@pytest.mark.slow  # the real language model
def test_final_info_has_saebench_shape_and_training_facts(workspace):
    info = final_info(workspace)
    assert list(info) == [KEY]          # one SAE, keyed by the model and the hook it really read
    entry = info[KEY]
    assert entry["eval_type_id"] == "sparse_probing"
    cfg = entry["eval_config"]
    assert cfg["k_values"] == K_VALUES and cfg["model_name"] == "google/gemma-3-270m"
    assert cfg["dataset_names"] == ["code_language", "news_topic", "review_sentiment"]
    llm, sae = entry["eval_result_metrics"]["llm"], entry["eval_result_metrics"]["sae"]
    for k in K_VALUES:
        assert 0.0 <= llm[f"llm_top_{k}_test_accuracy"] <= 1.0
        assert 0.0 <= sae[f"sae_top_{k}_test_accuracy"] <= 1.0
    assert 0.0 <= llm["llm_test_accuracy"] <= 1.0 and 0.0 <= sae["sae_test_accuracy"] <= 1.0
    details = entry["eval_result_details"]
    assert [d["dataset_name"] for d in details] == [f"{n}_results" for n in cfg["dataset_names"]]
    assert all("sae_top_1_test_accuracy" in d and "llm_top_1_test_accuracy" in d for d in details)
    # The overall metric is the mean of the per-data-set ones (SAEBench's averaging).
    mean = sum(d["sae_top_5_test_accuracy"] for d in details) / len(details)
    assert sae["sae_top_5_test_accuracy"] == pytest.approx(mean)

    sae_cfg = entry["sae_cfg_dict"]
    assert sae_cfg["model_name"] == "google/gemma-3-270m"
    assert sae_cfg["hook_layer"] == 3 and sae_cfg["hook_name"] == "blocks.3.hook_resid_post"
    assert sae_cfg["d_in"] == 640 and sae_cfg["d_sae"] == entry["training"]["dict_size"]

    core = entry["core_metrics"]
    for name in ("l0", "explained_variance", "mse", "frac_dead", "ce_loss_score"):
        assert isinstance(core[name], float), name
    training = entry["training"]
    for name in ("training_steps", "final_loss", "layer", "dict_size", "learning_rate", "sparsity_penalty",
                 "tokens", "seconds"):
        assert name in training, name
    assert training["layer"] == sae_cfg["hook_layer"]
    # every hyperparameter of experiment.py's Config, seed included, with the values the run used
    config = config_defaults(TEMPLATE / "experiment.py")
    assert set(config) >= {"seed", "learning_rate", "sparsity_penalty", "epochs", "dict_size", "batch_size"}
    # None defaults resolved from the tiny profile: its width, batch size, 4 passes, the steps they make
    # and its L1 coefficient
    resolved = {"dict_size": training["dict_size"], "batch_size": training["tokens"] // training["training_steps"],
                "epochs": 4, "steps": training["training_steps"], "sparsity_penalty": 1.5}
    assert {k: training[k] for k in config} == {**config, **resolved}
    assert results.load_results(workspace["path"] / "run_0") == info


@pytest.mark.slow  # the real language model
def test_baseline_is_a_trained_sae(workspace):
    info = final_info(workspace)
    assert results.untrained_problems(info) == []
    entry = info[KEY]
    assert entry["training"]["training_steps"] >= 100
    assert entry["eval_result_metrics"]["sae"]["sae_top_1_test_accuracy"] > 0.55
    assert entry["core_metrics"]["explained_variance"] > 0.5
    assert 1 < entry["core_metrics"]["l0"] < entry["training"]["dict_size"] / 4
    # spliced in, the reconstruction beats zero-ablating the residual stream
    assert 0 < entry["core_metrics"]["ce_loss_score"] <= 1
    assert entry["core_metrics"]["frac_dead"] < 0.5


@pytest.mark.slow  # the real language model
def test_second_run_hits_the_activation_cache(workspace):
    # (Whether run_0 computed the cache depends on the tests before it, which share the session's
    # cache; a cold cache computed once is tests/test_parallel.py's cold-cache test.)
    assert "activation cache miss" not in workspace["warm_log"]
    assert workspace["warm_log"].count("activation cache hit") >= 4   # training, held-out, CE and probing data
    # nothing in the cache was rewritten by the rerun
    for path, mtime in workspace["cache_files"].items():
        assert path.stat().st_mtime_ns == mtime, path
    # the language model's own probe results are cached, the SAE's are reproducible under the same seed
    run0, run1 = final_info(workspace, "run_0")[KEY], final_info(workspace, "run_1")[KEY]
    assert run0["eval_result_metrics"]["llm"] == run1["eval_result_metrics"]["llm"]
    assert run1["eval_result_metrics"]["sae"]["sae_top_1_test_accuracy"] == pytest.approx(
        run0["eval_result_metrics"]["sae"]["sae_top_1_test_accuracy"], abs=0.03)


@pytest.mark.slow  # the real language model
def test_training_activations_are_memory_mapped_and_a_runs_writes_stay_private(workspace, harness_path):
    import torch
    from harness.activations import ActivationStore
    from harness.profiles import load_profile
    profile = load_profile("tiny")
    store = ActivationStore(profile, log=lambda *a: None)
    acts = store.training(3)
    assert acts.dtype == torch.float32 and acts.shape == (profile.train_tokens, profile.d_model)
    before = float(acts[:256].sum())
    acts.mul_(0)                      # what a careless experiment.py could do to its training data
    fresh = ActivationStore(profile, log=lambda *a: None)
    assert float(fresh.training(3)[:256].sum()) == before, "the write stayed in this process"
    assert fresh._verified(fresh._dir(fresh.training_spec(3))), "the cache file is unchanged"


@pytest.mark.slow  # the real language model
def test_plot_draws_png_files(workspace):
    proc = subprocess.run([sys.executable, "plot.py"], cwd=workspace["path"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for name in ("sparsity_fidelity.png", "topk_accuracy.png"):
        png = workspace["path"] / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


@pytest.mark.slow  # the real language model
def test_an_sae_left_at_zero_weights_is_detected_as_untrained(workspace, env, tmp_path):
    # The seeds' bug: weights initialised to zero stay zero (ReLU'(0) = 0, so no gradient ever flows).
    ws = make_workspace(tmp_path / "zero")
    source = (ws / "experiment.py").read_text()
    init = "            self.W_dec.copy_(W / W.norm(dim=1, keepdim=True))\n            self.W_enc.copy_(self.W_dec.t())\n"
    assert init in source
    (ws / "experiment.py").write_text(source.replace(
        init, "            self.W_dec.zero_()\n            self.W_enc.zero_()\n"))
    run_experiment(ws, "run_0")
    info = json.loads((ws / "run_0" / "final_info.json").read_text())
    problems = results.untrained_problems(info)
    assert any("chance" in p for p in problems), problems
    assert any("explained variance" in p for p in problems), problems


@pytest.mark.slow  # the real language model
def test_smoke_mode_runs_a_few_steps_and_says_so(env, tmp_path):
    ws = make_workspace(tmp_path / "smoke")
    output, elapsed = run_experiment(ws, "run_1", smoke=True)
    entry = json.loads((ws / "run_1" / "final_info.json").read_text())[KEY]
    assert entry["training"]["smoke"] is True and entry["eval_config"]["smoke"] is True
    assert 0 < entry["training"]["training_steps"] < 100
    assert "(smoke)" in output


@pytest.mark.slow  # the real language model
def test_a_runtime_error_in_the_sae_fails_the_run_with_its_traceback(env, tmp_path):
    ws = make_workspace(tmp_path / "broken")
    source = (ws / "experiment.py").read_text()
    (ws / "experiment.py").write_text(source.replace(
        "        return torch.relu(pre_acts)\n", "        return torch.relu(pre_acts) @ self.W_missing\n", 1))
    step = pipeline(ws).run("run_1", smoke=True)
    assert step.result.status == RunStatus.FAILED and step.phase == "train"
    assert "W_missing" in (ws / "run_1" / "log.txt").read_text()
    assert not (ws / "run_1" / "final_info.json").exists()


# ---------------------------------------------------------------- pieces that need no language model

def test_profile_comes_from_profile_json_and_sae_profile_overrides_it(harness_path, tmp_path, monkeypatch):
    from harness import profiles
    monkeypatch.delenv("SAE_PROFILE", raising=False)
    monkeypatch.delenv("SAE_SMOKE", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "profile.json").write_text('{"profile": "tiny"}')
    assert profiles.load_profile().name == "tiny"
    monkeypatch.setenv("SAE_PROFILE", "cpu")
    assert profiles.load_profile().name == "cpu"
    monkeypatch.setenv("SAE_PROFILE", "gpt-5")
    with pytest.raises(profiles.ProfileError, match="unknown profile 'gpt-5'"):
        profiles.load_profile()


def test_training_driver_refuses_zero_steps(harness_path):
    import torch
    from harness.training import TrainingError, train

    class Trainer:
        ae = torch.nn.Linear(2, 2)

    with pytest.raises(TrainingError, match="0 steps"):
        train(Trainer(), torch.zeros(10, 2), steps=0, batch_size=4)


def test_gemma_2_2b_profile_is_the_seeds_setting(harness_path):
    from harness import profiles
    p = profiles.PROFILES["gemma-2-2b"]
    assert (p.model_name, p.hook_name(12), p.dtype) == ("gemma-2-2b", "blocks.12.hook_resid_post", "bfloat16")
    assert p.layers == (12,) and p.probing_backend == "saebench"
    assert p.extra["pile_dataset"] == "monology/pile-uncopyrighted"
    assert p.sae_key(12) == "gemma-2-2b/blocks.12.hook_resid_post"


def test_saebench_gets_its_config_and_an_sae_wrapper_it_accepts(harness_path):
    import torch
    from harness import profiles
    from harness.saebench import SAEBenchSAE, saebench_config
    from sae_bench.sae_bench_utils import general_utils

    p = profiles.PROFILES["gemma-2-2b"]
    cfg = saebench_config(p)
    assert cfg.model_name == "gemma-2-2b" and cfg.llm_dtype == "bfloat16"
    assert cfg.k_values == K_VALUES and len(cfg.dataset_names) == 8
    assert cfg.dataset_names[0] == "LabHC/bias_in_bios_class_set1"

    sys.path.insert(0, str(TEMPLATE))
    try:
        import experiment
    finally:
        sys.path.remove(str(TEMPLATE))
    trainer = experiment.CustomTrainer(experiment.Config(dict_size=32), 16, initial_b_dec=torch.zeros(16))
    wrapped = SAEBenchSAE(trainer.ae, model_name="gemma-2-2b", layer=12, hook_name="blocks.12.hook_resid_post",
                          scale=0.5, context_size=128, training_tokens=1000)
    sae_id, sae, _ = general_utils.load_and_format_sae("custom", wrapped, "cpu")
    assert general_utils.check_decoder_norms(sae.W_dec.data)
    assert (sae.cfg.hook_layer, sae.cfg.hook_name, sae.cfg.model_name) == (12, "blocks.12.hook_resid_post", "gemma-2-2b")
    x = torch.randn(3, 16)
    assert torch.allclose(wrapped.encode(x), trainer.ae.encode(x * 0.5))       # SAEBench passes raw residuals
    assert torch.allclose(wrapped.decode(wrapped.encode(x)), trainer.ae(x * 0.5) / 0.5, atol=1e-6)
    wrapped.to(dtype=torch.bfloat16)
    assert wrapped.dtype == torch.bfloat16 and wrapped.cfg.dtype == "bfloat16"


def test_cpu_probe_splits_are_disjoint_balanced_and_as_large_as_each_data_set_allows(harness_path):
    from harness import data
    from harness.profiles import PROFILES
    p = PROFILES["cpu"].probing
    sizes = {}
    for name in p.dataset_names:
        splits = data.probing_split(name, p.train_per_class, p.test_per_class, p.random_seed, p.final_per_class)
        for cls in splits["train"]:
            parts = [set(splits[s][cls]) for s in ("train", "test", "final")]
            assert [len(x) for x in parts] == [150, len(splits["test"][cls]), 60]
            assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2]), (name, cls)
        # a text two classes claim is in neither: else it is a positive in one class's train split and
        # a negative in another's test split (disease_class has 83 such texts, art_type 16)
        owners = [t for split in splits.values() for texts in split.values() for t in texts]
        assert len(owners) == len(set(owners)), f"{name}: a text is drawn for two classes or splits"
        per_class = {len(texts) for texts in splits["test"].values()}
        assert len(per_class) == 1, f"{name}: classes of different test sizes {per_class}"
        sizes[name] = per_class.pop()
        smallest = min(len(set(t)) for t in data.SUITE[name][1]().values())
        assert sizes[name] == min(300, smallest - 210)
    assert sizes["disease_class"] == 93 and sizes["occupation"] == 300   # the smallest class binds, or the cap
    assert sum(sizes.values()) >= 2000
