"""Streamed training activations (harness/stream.py): the GPU profile's 50M-token budget cannot be a
cache, so a run computes activations beyond the cached pool itself. Exercised here on the tiny
profile with a stream, through the real language model, in process and in the bwrap box."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent import sandbox

TEMPLATE = Path(__file__).resolve().parents[1] / "templates" / "sae_variants"
STREAM_TOKENS = 40_000        # the tiny pool is 24,000: 16,000 computed while training


def streaming(profile, **changes):
    return dataclasses.replace(profile, stream_tokens=STREAM_TOKENS, stream_buffer=4096, **changes)


@pytest.fixture(scope="module")
def stream(sae_cache):
    import sys as _sys
    _sys.path.insert(0, str(TEMPLATE))
    from harness.activations import ActivationStore
    from harness.profiles import PROFILES
    store = ActivationStore(streaming(PROFILES["tiny"]), log=lambda *a: None)
    yield store, store.training(3)
    _sys.path.remove(str(TEMPLATE))


def _keys(rows) -> set[bytes]:
    return set(_counts(rows))


def _counts(rows):
    # The first token of a window depends only on (BOS, token), so a few rows legitimately repeat.
    from collections import Counter
    return Counter(bytes(r) for r in rows.numpy())


@pytest.fixture(scope="module")
def one_pass(stream):
    import torch
    _, acts = stream
    return torch.cat(list(acts._rows()))


@pytest.mark.slow  # the real language model
def test_a_stream_reads_like_the_training_tensor_within_its_pool(stream):
    store, acts = stream
    assert len(acts) == STREAM_TOKENS and tuple(acts.shape) == (STREAM_TOKENS, 640)
    pool = acts.pool
    assert len(pool) == store.profile.train_tokens == 24_000
    assert float((acts[:4096].mean(0) - pool[:4096].mean(0)).abs().max()) == 0
    with pytest.raises(IndexError, match="only the first 24000 of the 40000"):
        acts[30_000]
    with pytest.raises(IndexError, match="harness.train"):
        acts[:STREAM_TOKENS]
    with pytest.raises(IndexError):
        acts[-1]                      # the stream's last row, not the pool's
    import torch
    assert torch.equal(acts[torch.tensor([0, 23_999])], pool[[0, 23_999]])


@pytest.mark.slow  # the real language model
def test_streamed_windows_are_the_text_after_the_pool_and_held_out_rows(stream):
    store, _ = stream
    p = store.profile
    windows = store.stream_windows(3)
    bos = store.tokenizer.bos_token_id
    text = store._packed_contexts(store._training_texts(), p.train_context)
    before, used = 0, 0
    first = windows[0].long()
    for w in text:                    # find where the stream starts in the training text
        if w.equal(first):
            break
        before, used = before + 1, used + int((w != bos).sum())
    assert before % p.llm_batch_size == 0, "the stream starts at a batch of the cache's computation"
    from harness.activations import heldout_size
    cached = p.train_tokens + heldout_size(p)   # the pool and the held-out rows, consumed a batch at a time
    assert used >= cached, "the stream overlaps the held-out rows"
    assert used - cached < p.llm_batch_size * p.train_context, "the stream skipped text it could use"
    assert int((windows != bos).sum()) >= STREAM_TOKENS - p.train_tokens


@pytest.mark.slow  # the real language model
def test_streamed_rows_are_new_rows_on_the_cache_scale(stream, one_pass):
    store, acts = stream
    import torch
    pool = acts.pool
    assert torch.equal(one_pass[: len(pool)], pool), "the pool comes first, unchanged"
    fresh = one_pass[len(pool):]
    assert len(fresh) >= STREAM_TOKENS - len(pool)
    heldout, _ = store.heldout(3)
    assert len(_keys(fresh) & _keys(heldout)) < 0.03 * len(heldout), "streamed rows are held-out rows"
    assert len(_keys(fresh) & _keys(pool)) < 0.03 * len(fresh), "streamed rows repeat the pool"
    # Same scale as the cache: mean squared norm about d_model.
    ratio = float(fresh.pow(2).sum(1).mean()) / float(pool.pow(2).sum(1).mean())
    assert 0.7 < ratio < 1.4, ratio


@pytest.mark.slow  # the real language model
def test_stream_batches_are_shuffled_seeded_and_each_row_read_once_per_pass(stream, one_pass):
    import torch
    _, acts = stream
    batches = acts.batches(256, seed=0)
    # The buffer reads ahead by up to its size, so stop that far before the pass ends.
    seen = torch.cat([next(batches) for _ in range((len(one_pass) - 4096) // 256)])
    available = _counts(one_pass)
    assert all(n <= available[k] for k, n in _counts(seen).items()), "a row was read twice in one pass"
    pool = _keys(acts.pool)
    from_pool = sum(k in pool for k in _keys(seen))
    assert from_pool < 0.7 * len(seen), "the stream never got past its pool"
    assert not torch.equal(seen[:256], acts.pool[:256]), "batches come in file order"
    again = acts.batches(256, seed=0)
    assert torch.equal(next(again), seen[:256])
    assert not torch.equal(next(acts.batches(256, seed=1)), seen[:256])


@pytest.mark.slow  # the real language model
def test_the_training_driver_reads_a_stream(stream):
    import torch
    from harness.training import train
    _, acts = stream

    class Trainer:
        def __init__(self):
            self.ae = torch.nn.Linear(640, 640)
            self.opt = torch.optim.SGD(self.ae.parameters(), lr=1e-3)

        def loss(self, x):
            return (self.ae(x) - x).pow(2).sum(1).mean()

        def update(self, step, x):
            self.opt.zero_grad()
            self.loss(x).backward()
            self.opt.step()

    facts = train(Trainer(), acts, steps=len(acts) // 512, batch_size=512, log=lambda *a: None)
    assert facts["training_steps"] == 78 and facts["tokens"] == 78 * 512


@pytest.mark.slow  # the real language model, in the box
@pytest.mark.skipif(not sandbox.bwrap_works(), reason="bubblewrap cannot run here")
def test_a_boxed_run_streams_from_what_prepare_gave_it_and_no_labelled_data(stream, sae_cache, tmp_path):
    from agent.execution import _labelled_data_dirs
    from harness import prepare
    store, _ = stream
    dirs = prepare.prepare(store.profile, log=lambda *a: None)
    assert any("stream-" in d for d in dirs["train"]) and str(Path(sae_cache["SAE_MODEL_DIR"])) in dirs["train"]
    assert not any("heldout-" in d or "probe-" in d for d in dirs["train"])
    stage = tmp_path / "stage"
    (stage / "out").mkdir(parents=True)
    for path in (TEMPLATE / "harness").glob("*.py"):
        (stage / "harness").mkdir(exist_ok=True)
        (stage / "harness" / path.name).write_bytes(path.read_bytes())
    (stage / "probe.py").write_text(
        "import dataclasses, json, os\n"
        "from harness.activations import ActivationStore\n"
        "from harness.profiles import PROFILES\n"
        f"p = dataclasses.replace(PROFILES['tiny'], stream_tokens={STREAM_TOKENS}, stream_buffer=4096)\n"
        "acts = ActivationStore(p, log=lambda *a: None).training(3)\n"
        "batches = acts.batches(256, 0)\n"
        "rows = [next(batches) for _ in range(100)]\n"   # 25,600 rows: past the 24,000 of the pool
        "import importlib.util, pathlib\n"
        "data = pathlib.Path(importlib.util.find_spec('sae_probes').origin).parent / 'data'\n"
        "json.dump({'rows': sum(map(len, rows)), 'labelled': sorted(os.listdir(data)) if data.exists() else []},"
        " open('out/seen.json', 'w'))\n")
    box = sandbox.Box("bwrap", stage, writable=[stage / "out"], readable=[Path(d) for d in dirs["train"]],
                      hidden=_labelled_data_dirs())
    env = {**os.environ, **sae_cache, "SAE_CACHE_READONLY": "1", "PYTHONPATH": str(stage)}
    proc = subprocess.run(box.wrap([sys.executable, "probe.py"]), env=env, cwd=stage, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads((stage / "out" / "seen.json").read_text())
    assert seen == {"rows": 100 * 256, "labelled": []}


def test_the_gpu_profile_streams_fifty_million_tokens_from_a_pool_that_fits_on_disk(harness_path):
    from harness import profiles
    p = profiles.PROFILES["gemma-2-2b"]
    assert p.streams and p.stream_tokens * p.epochs >= 50_000_000
    pool_gb = p.train_tokens * p.d_model * 4 / 1e9
    assert pool_gb < 10, pool_gb            # float32 pool: 9.2 GB of the 40 GB disk
    assert p.stream_buffer * p.d_model * 4 / 1e9 < 3   # the shuffle buffer in RAM
    smoke = profiles.smoke(p)
    assert smoke.streams and smoke.stream_tokens <= 8192, "smoke mode exercises the stream, briefly"
    assert not any(profiles.PROFILES[name].streams for name in ("tiny", "cpu"))
