"""Shared fixtures. Other test files add their own fixtures beside their tests."""

import os

# litellm fetches its price list from GitHub at import unless told not to; tests run offline.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import pytest  # noqa: E402
import signal  # noqa: E402

# A shell without job control starts a background command with SIGINT ignored, and an ignored
# signal stays ignored across exec: the Ctrl-C tests would then fail only because of how the suite
# was launched. Python's own handler here is reset to the default on exec, so every agent process a
# test spawns gets Python's KeyboardInterrupt again.
signal.signal(signal.SIGINT, signal.default_int_handler)

# Under `pytest -n N` (pyproject.toml) the workers share the cores out by the rule `run --jobs`
# uses for ideas: torch would otherwise start one thread per core in every worker's runs, and
# oversubscribed cores trained SAEs 2.5-3x slower than their share. Set before anything imports torch.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    from agent.parallel import threads_per_idea  # noqa: E402
    _threads = threads_per_idea(int(os.environ["PYTEST_XDIST_WORKER_COUNT"]), slurm=False)
    if _threads:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(_threads)

from fake_llm import FakeLLM  # noqa: E402  (tests/ is on sys.path: pytest's rootdir conftest)


# -- two workers (`pytest -n 2`, pyproject.toml) -------------------------------------------
# The tests of these files run on one worker, one after another, as a group: they share what only
# one test may use at a time. (xdist's own `xdist_group` marks are ignored under pytest 9.2, which
# no longer lets a plugin rename a test: pytest-xdist issue 1386.)
ONE_WORKER = {
    # the session's tiny-profile cache: test_trust poisons an entry, test_template checks a rerun rewrites none
    **dict.fromkeys(("test_template.py", "test_trust.py", "test_stream.py", "test_models.py"), "tiny-lm-cache"),
    # the first idea trains the session's synth-tiny baseline and the others reuse it; on the other
    # worker they would only wait for its lock
    "test_ground_truth.py": "synth-tiny-baseline",
    # one Slurm node: a job queued behind another test's would run out of its time limit
    "test_slurm.py": "slurm",
}


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class OneWorkerGroups(LoadScopeScheduling):
        """Every other test is a unit of its own, sent to whichever worker is free."""
        def _split_scope(self, nodeid: str) -> str:
            return ONE_WORKER.get(nodeid.split("::", 1)[0].rsplit("/", 1)[-1], nodeid)

    return OneWorkerGroups(config, log)


@pytest.fixture
def fake_llm(monkeypatch):
    """A strict OpenAI-compatible server on 127.0.0.1 (see tests/fake_llm.py).

    Reach it as a real provider: model `openai/deepseek-reasoner`, api_base `fake_llm.url`.
    OPENAI_API_KEY is a dummy here so litellm's OpenAI client agrees to send requests.
    """
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fake-llm-test")
    server = FakeLLM().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sae_cache(tmp_path_factory):
    """One activation cache for the whole test session, shared by every real-template test.

    The converted model weights live outside it (SAE_MODEL_DIR, default ~/.cache/sae-agent/models)
    and are kept across sessions: converting the GGUF takes a minute. Sets SAE_CACHE_DIR for
    in-process code; subprocess tests pass the returned environment on."""
    from pathlib import Path
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # Under `pytest -n N` every worker is a session of its own: they share one cache, as ideas
        # run at once do (preparation and each baseline are built once, under the cache's file locks).
        cache = tmp_path_factory.getbasetemp().parent / "sae-cache"
        cache.mkdir(exist_ok=True)
    else:
        cache = tmp_path_factory.mktemp("sae-cache")
    saved = {k: os.environ.get(k) for k in ("SAE_CACHE_DIR", "SAE_MODEL_DIR")}
    os.environ["SAE_CACHE_DIR"] = str(cache)
    os.environ.setdefault("SAE_MODEL_DIR", str(Path.home() / ".cache" / "sae-agent" / "models"))
    yield {"SAE_CACHE_DIR": str(cache), "SAE_MODEL_DIR": os.environ["SAE_MODEL_DIR"]}
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def agent_cli(sae_cache):
    """`agent_cli("run", "ideas/x.md", ...)`: the agent's command line in its own process, offline,
    as a user runs it from the checkout, with the session's shared cache (baselines included)."""
    import subprocess
    import sys
    from pathlib import Path
    env = {**sae_cache, "PATH": "/usr/bin:/bin", "HOME": sae_cache["SAE_CACHE_DIR"],
           "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1", "COLUMNS": "160",
           **{k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ}}

    def run(*args: str, timeout: float = 3600) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "agent", *map(str, args)], cwd=Path(__file__).parents[1],
                              env=env, capture_output=True, text=True, timeout=timeout)
    return run


@pytest.fixture
def idea(tmp_path, monkeypatch):
    """An idea on the mini template (tests/mini.py), with a cache of its own."""
    from mini import mini_idea
    monkeypatch.setenv("SAE_CACHE_DIR", str(tmp_path / "cache"))
    return mini_idea(tmp_path)


@pytest.fixture(autouse=True)
def _history_backups(tmp_path_factory, monkeypatch):
    """The agent's history backups (agent/gitguard.py) go to a scratch folder, never ~/.cache."""
    monkeypatch.setenv("SAE_HISTORY_DIR", str(tmp_path_factory.mktemp("history-backups")))


@pytest.fixture
def harness_path(monkeypatch):
    """The SAE template's harness importable as `harness`, fresh for this test."""
    import sys
    from pathlib import Path
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "templates" / "sae_variants"))
    for name in list(sys.modules):
        if name == "harness" or name.startswith("harness."):
            monkeypatch.delitem(sys.modules, name)


SYNTH_KEY = "synth/blocks.0.hook_resid_post"


def synthetic_result(quality: float = 0.7, *, seed: int = 0, latents: int = 6, blocks: int = 12, samples: int = 40,
                     l0: float = 20.0, mcc: float = 0.8, uniqueness: float = 0.9, top1: float = 0.7,
                     ev_err: float = 20.0) -> dict:
    """A synthetic world's final_info.json (the SynthSAEBench profiles), small: on each of `blocks`
    held-out blocks every latent finds its true feature in about `quality` of `samples` and fires
    wrongly about as often as it misses. f1 is computed from those counts, as the harness does."""
    import numpy as np
    rng = np.random.default_rng(seed)
    tp = rng.binomial(samples, quality, size=(blocks, latents))
    fn, fp = samples - tp, rng.binomial(samples, 1 - quality, size=(blocks, latents))
    t, p, n = tp.sum(0), fp.sum(0), fn.sum(0)
    f1 = float(np.mean(2 * t / (2 * t + p + n)))
    core_blocks = {"sq_err": list(ev_err + rng.normal(0, 0.5, blocks)), "sq_dev": [100.0] * blocks,
                   "l0": [l0 * 64] * blocks, "tokens": [64] * blocks}
    ev = 1 - sum(core_blocks["sq_err"]) / sum(core_blocks["sq_dev"])
    return {SYNTH_KEY: {
        "eval_config": {"headline_metrics": ["f1", "mcc", "explained_variance"], "k_values": [1, 2],
                        "world": "64 true features in 16 dimensions, Zipfian firing"},
        "eval_result_metrics": {
            "sae": {"sae_top_1_test_accuracy": top1, "sae_test_accuracy": top1 + 0.1},
            "llm": {},
            "ground_truth": {"f1": f1, "precision": float(np.mean(t / (t + p))), "recall": float(np.mean(t / (t + n))),
                             "mcc": mcc, "uniqueness": uniqueness, "shrinkage": 0.9, "true_l0": 5.0, "sae_l0": l0,
                             "dead_latents": 0, "explained_variance": ev, "decoder_linear": True}},
        "core_metrics": {"l0": l0, "explained_variance": ev, "frac_dead": 0.0},
        "training": {"training_steps": 100},
        "per_example": {"core_blocks": core_blocks,
                        "ground_truth_blocks": {"tp": tp.tolist(), "fp": fp.tolist(), "fn": fn.tolist()}}}}


@pytest.fixture
def synthetic():
    """`synthetic(quality, seed=..., l0=..., mcc=...)`: a synthetic world's final_info.json, keyed SYNTH_KEY."""
    return synthetic_result
