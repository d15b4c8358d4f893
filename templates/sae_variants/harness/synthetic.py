"""Synthetic worlds with known features (SAELens' SynthSAEBench generator), cached like activations.

A synthetic profile replaces the language model by a `sae_lens.synthetic.SyntheticModel`: hidden
vectors are sparse combinations of known feature directions (Zipfian firing, a hierarchy with
mutually exclusive children, low-rank correlations, superposition), so an SAE is scored on whether
it recovered the features. Four cache entries, each content-addressed by the world's config and
verified on read like every activation entry (harness/activations.py):

    world    the SyntheticModel itself, built from its seeded config (never from a hub): only
             `prepare` reads it. Its orthogonalisation is slow on a CPU (~90 s for 4,096 x 256).
    train    a pool of hidden vectors, memory-mapped: what experiment.py's box is given. Sampling is
             ~5,500 vectors/s on 2 cores, ~8x slower than training an SAE on them, so runs read a
             pool instead of sampling on the fly.
    heldout  other hidden vectors, for the evaluator only
    truth    their ground-truth feature activations (sparse) and the feature vectors: evaluator only

So the training box never sees a feature vector, a feature activation or the hierarchy. Vectors are
scaled like activations (mean squared norm d_model), which changes no ground-truth metric: cosines,
firing and ratios are scale-free.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from harness.activations import ACTS_FILE, ActivationStore, CACHE_VERSION, _key
from harness.profiles import Profile, World

RECIPE = 1   # bump when world_config's recipe changes: every synthetic cache entry is then rebuilt
SAMPLE_BATCH = 1024     # SyntheticModel.sample is fastest at ~1k rows (4k rows: 25% slower)
TRAIN_SEED, HELDOUT_SEED = 1, 2


def world_config(world: World):
    """SynthSAEBench-16k's recipe (SAELens docs/synth_sae_bench.md) at the world's size."""
    from sae_lens.synthetic import (FoldedNormalMagnitudeConfig, HierarchyConfig, LinearMagnitudeConfig,
                                    LowRankCorrelationConfig, OrthogonalizationConfig, SyntheticModelConfig,
                                    ZipfianFiringProbabilityConfig)
    return SyntheticModelConfig(
        num_features=world.features, hidden_dim=world.hidden_dim,
        firing_probability=ZipfianFiringProbabilityConfig(exponent=world.zipf_exponent, max_prob=world.max_prob,
                                                          min_prob=world.min_prob),
        hierarchy=HierarchyConfig(total_root_nodes=world.roots or max(1, world.features // 128), branching_factor=4,
                                  max_depth=3, mutually_exclusive_portion=1.0, mutually_exclusive_min_depth=0,
                                  compensate_probabilities=True, scale_children_by_parent=True),
        orthogonalization=OrthogonalizationConfig(num_steps=world.orthogonalization_steps, lr=3e-4),
        correlation=LowRankCorrelationConfig(rank=25, correlation_scale=0.1),
        mean_firing_magnitudes=LinearMagnitudeConfig(start=5.0, end=4.0),
        std_firing_magnitudes=FoldedNormalMagnitudeConfig(mean=0.5, std=0.5),
        bias=0.5, seed=world.seed)


def describe(world: World) -> str:
    return (f"{world.features} ground-truth features in {world.hidden_dim} dimensions (SynthSAEBench's recipe: "
            f"Zipfian firing {world.max_prob:g} to {world.min_prob:g}, hierarchy with mutually exclusive children, "
            "low-rank correlations, superposition)")


class SyntheticStore(ActivationStore):
    """The ActivationStore of a synthetic profile: the same interface experiment.py and the evaluator
    use (`training`, `heldout`, `probing`), backed by a synthetic world instead of a language model."""

    def __init__(self, profile: Profile, log=print):
        super().__init__(profile, log)
        self._world = None
        self._truth: dict[int, dict] = {}

    @property
    def model(self):
        raise RuntimeError(f"profile {self.profile.name} is a synthetic world: it has no language model")

    def _spec(self, kind: str, layer: int, **extra) -> dict:
        # keyed by our World (what world_config builds from), so the training box never imports
        # sae_lens (10 s of CPU): only prepare and the evaluator do
        world = {k: v for k, v in asdict(self.profile.world).items() if k not in ("heldout_samples", "probe_features")}
        return {"version": CACHE_VERSION, "kind": kind, "source": "synthetic", "hook": self.profile.hook_name(layer),
                "world": world, "recipe": RECIPE, "sae_lens": _sae_lens_version(), **extra}

    def _dir(self, spec: dict) -> Path:
        from harness.profiles import cache_dir
        return cache_dir() / "synthetic" / f"{spec['kind']}-{_key(spec)}"

    # ------------------------------------------------------------------ the world
    def world_spec(self) -> dict:
        return self._spec("world", 0)

    def world(self):
        """The SyntheticModel, built once from its config and saved; loaded from the cache after."""
        if self._world is None:
            from sae_lens.synthetic import SyntheticModel
            path = self._cached(self.world_spec(), self._build_world)
            self._world = SyntheticModel.load_from_disk(path / "model")
        return self._world

    def _build_world(self) -> Path:
        from sae_lens.synthetic import SyntheticModel
        spec, started = self.world_spec(), time.time()
        w = self.profile.world
        self.log(f"[harness] building the synthetic world: {w.features} features in {w.hidden_dim} dimensions, "
                 f"{w.orthogonalization_steps} orthogonalisation steps (once; minutes on a CPU)")
        device = "cuda" if torch.cuda.is_available() else "cpu"
        os.environ.setdefault("TQDM_DISABLE", "1")   # SAELens' per-step bars would flood prepare's output
        model = SyntheticModel(world_config(w), device=device)
        tmp = self._staging(spec)
        model.save(tmp / "model")
        # One file carries the checksum the cache verifies: every file of the saved model, hashed.
        manifest = {f.name: _sha(f) for f in sorted((tmp / "model").iterdir())}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        self.log(f"[harness] synthetic world built in {time.time() - started:.1f}s")
        return self._finish(spec, tmp, "manifest.json", {"seconds": time.time() - started})

    def _verified(self, path: Path) -> bool:
        if not super()._verified(path):
            return False
        manifest = path / "manifest.json"
        if not manifest.exists():
            return True
        ok = all(_sha(path / "model" / name) == sha for name, sha in json.loads(manifest.read_text()).items())
        if not ok:
            self._ok.discard(path)
        return ok

    # ------------------------------------------------------------------ samples
    def training_spec(self, layer: int) -> dict:
        return self._spec("train", layer, samples=self.profile.train_tokens)

    def heldout_spec(self, layer: int) -> dict:
        return self._spec("heldout", layer, samples=self.profile.world.heldout_samples,
                          train=_key(self.training_spec(layer)))

    def truth_spec(self, layer: int) -> dict:
        return {**self.heldout_spec(layer), "kind": "truth"}

    def _compute_training(self, layer: int) -> tuple[Path, Path]:
        """The training pool, then the held-out vectors and their ground truth, scaled alike."""
        p = self.profile
        world = self.world()
        train_spec, started = self.training_spec(layer), time.time()
        stage = self._staging(train_spec)
        pool = np.lib.format.open_memmap(stage / ACTS_FILE, mode="w+", dtype=np.float32,
                                         shape=(p.train_tokens, p.d_model))
        torch.manual_seed(TRAIN_SEED)
        sum_sq = 0.0
        for i in range(0, p.train_tokens, SAMPLE_BATCH):
            rows = world.sample(min(SAMPLE_BATCH, p.train_tokens - i)).float().cpu()
            pool[i:i + len(rows)] = rows.numpy()
            sum_sq += float(rows.double().pow(2).sum())
            if (i // SAMPLE_BATCH) % 200 == 0:
                self.log(f"[harness] synthetic training pool: {i}/{p.train_tokens} vectors ({time.time() - started:.0f}s)")
        scale = float(np.sqrt(p.d_model * p.train_tokens / sum_sq))
        for i in range(0, p.train_tokens, 65536):
            pool[i:i + 65536] *= scale
        pool.flush()
        del pool
        meta = {"scale": scale, "seconds": time.time() - started, "n_tokens": p.train_tokens}
        train = self._finish(train_spec, stage, ACTS_FILE, meta)
        self.log(f"[harness] {p.train_tokens} synthetic training vectors in {time.time() - started:.1f}s "
                 f"(scale {scale:.4g})")
        return train, self._cached(self.heldout_spec(layer), lambda: self._compute_eval(layer, scale, "heldout"))

    def _compute_eval(self, layer: int, scale: float, wanted: str) -> Path:
        """Held-out vectors (heldout entry) and their feature activations, kept sparse (truth entry),
        both from one seeded draw; returns the `wanted` entry's folder. An entry already in place is
        kept (the draw is the same)."""
        world, n = self.world(), self.profile.world.heldout_samples
        torch.manual_seed(HELDOUT_SEED)
        hidden, cols, vals, counts = [], [], [], []
        for i in range(0, n, SAMPLE_BATCH):
            h, f = world.sample_with_features(min(SAMPLE_BATCH, n - i))
            f = f.to_dense() if f.is_sparse else f
            hidden.append(h.float().cpu() * scale)
            active = (f != 0).cpu()
            counts.append(active.sum(1))
            rows, c = active.nonzero(as_tuple=True)
            cols.append(c.to(torch.int32))
            vals.append(f.cpu()[rows, c].float())
        truth = {"row_counts": torch.cat(counts), "cols": torch.cat(cols), "values": torch.cat(vals),
                 "feature_vectors": world.feature_dict.feature_vectors.detach().float().cpu(),
                 "n_features": self.profile.world.features}
        paths = {"truth": self._commit(self.truth_spec(layer), truth, {})}
        spec = self.heldout_spec(layer)
        stage = self._staging(spec)
        np.save(stage / ACTS_FILE, torch.cat(hidden).numpy())
        paths["heldout"] = self._finish(spec, stage, ACTS_FILE, {"scale": scale, "n_tokens": n})
        return paths[wanted]

    def heldout(self, layer: int) -> tuple[torch.Tensor, float]:
        scale = self.scale(layer)
        acts, _ = self._load_acts(self.heldout_spec(layer), lambda: self._compute_eval(layer, scale, "heldout"))
        return acts, scale

    def truth(self, layer: int) -> dict:
        """{"row_counts", "cols", "values", "feature_vectors", "n_features"} of the held-out vectors."""
        if layer not in self._truth:
            path = self._cached(self.truth_spec(layer), lambda: self._compute_eval(layer, self.scale(layer), "truth"))
            self._truth[layer] = torch.load(path / "tensors.pt")
        return self._truth[layer]

    def feature_activity(self, layer: int, rows: slice | None = None) -> torch.Tensor:
        """Dense ground-truth activations [n, features] of held-out vectors `rows` (all by default)."""
        t = self.truth(layer)
        return dense_rows(t, rows or slice(0, len(t["row_counts"])))

    # ------------------------------------------------------------------ sparse probing
    def probing_spec(self, layer: int) -> dict:
        return self._spec("probe", layer, probing=asdict(self.profile.probing), heldout=_key(self.heldout_spec(layer)))

    def _compute_probing(self, layer: int, scale: float, spec: dict) -> Path:
        """Binary tasks "is ground-truth feature f active", balanced, disjoint splits of held-out vectors:
        SAEBench's layout with one vector per 'text'."""
        p = self.profile.probing
        acts, _ = self.heldout(layer)
        t = self.truth(layer)
        row_of = torch.repeat_interleave(torch.arange(len(t["row_counts"])), t["row_counts"])
        sizes = {"train": p.train_per_class, "test": p.test_per_class, "final": p.final_per_class}
        generator = torch.Generator().manual_seed(p.random_seed)
        out = {}
        for name in p.dataset_names:
            feature = int(name.rsplit("_", 1)[1])
            on = torch.zeros(len(acts), dtype=torch.bool)
            on[row_of[t["cols"] == feature]] = True
            pools = {"on": on.nonzero().squeeze(1), "off": (~on).nonzero().squeeze(1)}
            need = sum(sizes.values())
            if len(pools["on"]) < need:
                raise ValueError(f"feature {feature} fires on {len(pools['on'])} of {len(acts)} held-out vectors, "
                                 f"fewer than the {need} its probing task needs; raise heldout_samples")
            order = {cls: idx[torch.randperm(len(idx), generator=generator)] for cls, idx in pools.items()}
            out[name], at = {}, 0
            for split, size in sizes.items():
                if size:
                    out[name][split] = {cls: (acts[idx[at:at + size]].clone(), torch.ones(size, dtype=torch.long))
                                        for cls, idx in order.items()}
                at += size
        return self._commit(spec, out, {})

    def ce_data(self, layer: int):
        return None

    def entry_dirs(self, kinds: tuple[str, ...], layer: int) -> list[Path]:
        specs = {"train": lambda: self.training_spec(layer), "heldout": lambda: self.heldout_spec(layer),
                 "truth": lambda: self.truth_spec(layer), "probe": lambda: self.probing_spec(layer),
                 "world": self.world_spec}
        return [self._dir(specs[k]()) for k in kinds if k in specs]


def dense_rows(truth: dict, rows: slice) -> torch.Tensor:
    """Dense feature activations of held-out rows [start, stop) from the stored sparse layout."""
    counts = truth["row_counts"]
    starts = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
    lo, hi = rows.start or 0, min(rows.stop, len(counts))
    a, b = int(starts[lo]), int(starts[hi])
    out = torch.zeros(hi - lo, int(truth["n_features"]))
    local = torch.repeat_interleave(torch.arange(hi - lo), counts[lo:hi])
    out[local, truth["cols"][a:b].long()] = truth["values"][a:b]
    return out


def _sha(path: Path) -> str:
    from harness.activations import file_sha256
    return file_sha256(path)


def _sae_lens_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("sae-lens")
    except PackageNotFoundError:
        return "unknown"
