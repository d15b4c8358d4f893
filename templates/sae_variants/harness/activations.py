"""Residual-stream activations, computed once through transformer-lens and cached on disk.

The cache lives in `$SAE_CACHE_DIR/activations/<key>/` (default `~/.cache/sae-agent`), one folder per
(model, hook, data, tokens, context), shared by every run and workspace: a rerun, or another idea on
the same profile, never recomputes the language model. Folders are written to a temporary name and
renamed into place, so concurrent runs never read a half-written cache, and computed under a file lock
(`<folder>.lock`), so a second process waits for the first one and reuses its result.

Activations are stored scaled by one constant per hook, chosen so that training activations have
mean squared norm d_model (SAELens' and dictionary_learning's "expected average norm"
normalisation). The SAE trains and is evaluated on scaled activations, so one set of
hyperparameters fits every model; `scale` is kept in the cache and in final_info.json, and the
CE-loss splice divides it back out.

BOS, padding and EOS positions are dropped: SAEBench excludes them from probing means, and the
BOS residual is orders of magnitude larger than any other token's in Gemma models.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch
from filelock import FileLock

from harness import data
from harness.profiles import Profile, cache_dir

CACHE_VERSION = 2
STORE_DTYPE = torch.float16   # scaled activations are O(1): float16 holds them with 3 significant digits


def heldout_size(profile: Profile) -> int:
    """Tokens kept apart from training for the core metrics."""
    return min(8192, max(1024, profile.train_tokens // 10))


def _key(spec: dict) -> str:
    blob = json.dumps(spec, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _sae_probes_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("sae-probes")
    except PackageNotFoundError:
        return "unknown"


class ActivationStore:
    """Cached activations for one profile; the language model is loaded only on a cache miss."""

    def __init__(self, profile: Profile, log=print):
        self.profile = profile
        self.log = log
        self._model = None
        self._training: dict[int, tuple] = {}
        self.stats = {"hits": 0, "misses": 0, "llm_seconds": 0.0, "llm_tokens": 0}

    # ------------------------------------------------------------------ model
    @property
    def model(self):
        if self._model is None:
            from harness.models import load_model
            device = "cuda" if torch.cuda.is_available() else "cpu"
            self._model = load_model(self.profile, device=device, log=self.log)
        return self._model

    def _forward(self, tokens: torch.Tensor, hooks: list[str], stop_at_layer: int) -> dict[str, torch.Tensor]:
        started = time.time()
        with torch.no_grad():
            _, cache = self.model.run_with_cache(tokens.to(self.model.cfg.device), stop_at_layer=stop_at_layer,
                                                 names_filter=lambda name: name in hooks)
        self.stats["llm_seconds"] += time.time() - started
        self.stats["llm_tokens"] += tokens.numel()
        return {h: cache[h].float().cpu() for h in hooks}

    def _tokenize(self, texts: list[str], context: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded tokens (BOS first, as the model was trained) and the mask of tokens to keep."""
        tok = self.model.tokenizer
        tok.padding_side = "right"
        enc = tok(texts, padding="longest", truncation=True, max_length=context, return_tensors="pt")
        ids = enc["input_ids"]
        keep = enc["attention_mask"].bool()
        for special in {tok.bos_token_id, tok.eos_token_id, tok.pad_token_id} - {None}:
            keep &= ids != special
        return ids, keep

    # ------------------------------------------------------------------ cache plumbing
    def _spec(self, kind: str, layer: int, **extra) -> dict:
        p = self.profile
        return {"version": CACHE_VERSION, "kind": kind, "model": p.model_name, "source": p.model_source,
                "dtype": p.dtype, "hook": p.hook_name(layer), "sae_probes": _sae_probes_version(), **extra}

    def _dir(self, spec: dict) -> Path:
        return cache_dir() / "activations" / f"{spec['kind']}-{_key(spec)}"

    def _lookup(self, spec: dict) -> Path | None:
        path = self._dir(spec)
        if (path / "meta.json").exists():
            self.stats["hits"] += 1
            self.log(f"[harness] activation cache hit: {path}")
            return path
        self.stats["misses"] += 1
        self.log(f"[harness] activation cache miss: computing {spec['kind']} activations for {spec['hook']}")
        return None

    def _cached(self, spec: dict, compute) -> Path:
        """The cache folder for `spec`, computed by `compute()` if missing, once across processes:
        whoever holds the lock computes, the others wait and then find it done."""
        path = self._lookup(spec)
        if path is not None:
            return path
        path = self._dir(spec)
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            if (path / "meta.json").exists():
                self.log(f"[harness] activation cache: another run computed {path.name} meanwhile")
                return path
            return compute()

    def _commit(self, spec: dict, tensors: dict, meta: dict) -> Path:
        path = self._dir(spec)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        torch.save(tensors, tmp / "tensors.pt")
        (tmp / "meta.json").write_text(json.dumps({"spec": spec, **meta}, indent=2))
        try:
            tmp.rename(path)
        except OSError:         # another run finished first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
        return path

    # ------------------------------------------------------------------ training activations
    def training_spec(self, layer: int) -> dict:
        p = self.profile
        return self._spec("train", layer, tokens=p.train_tokens, context=p.train_context, source=p.train_source,
                          probing=asdict(p.probing))

    def training(self, layer: int) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Scaled activations (float32): [train_tokens, d_model] to train on, held-out tokens for core
        metrics (never trained on), and the scale applied. Loaded once per run."""
        if layer not in self._training:
            spec = self.training_spec(layer)
            path = self._cached(spec, lambda: self._compute_training(layer, spec))
            stored = torch.load(path / "tensors.pt")
            meta = json.loads((path / "meta.json").read_text())
            acts = stored["acts"].float()
            n_train = len(acts) - heldout_size(self.profile)
            self._training[layer] = (acts[:n_train], acts[n_train:], meta["scale"])
        return self._training[layer]

    def llm_results_file(self, layer: int, scale: float) -> Path:
        p = self.profile
        spec = self._spec("probe", layer, probing=asdict(p.probing), scale=round(scale, 8))
        return self._dir(spec) / "llm_results.json"

    def _training_texts(self, heldout: bool = False):
        """Training text in a fixed order; `heldout`: text the SAE never trains on (for CE loss)."""
        p = self.profile
        if p.train_source == "pile":
            from datasets import load_dataset
            stream = load_dataset(p.extra["pile_dataset"], split="validation" if heldout else "train",
                                  streaming=True)
            return (row["text"] for row in stream)
        exclude = set()
        for name in p.probing.dataset_names:
            if name in data.SUITE:
                train, test = data.probing_split(name, p.probing.train_per_class, p.probing.test_per_class,
                                                 p.probing.random_seed)
                for split in (train, test):
                    for texts in split.values():
                        exclude.update(texts)
        texts = data.training_texts(exclude)
        return iter(texts[::-1] if heldout else texts)   # the tail is never reached by training

    def _packed_contexts(self, texts, context: int):
        """Yield [BOS + (context-1) tokens] windows packed from consecutive texts, BOS between texts
        (SAELens' layout), each text cut to one window's worth so that no single long file dominates."""
        tok = self.model.tokenizer
        bos = tok.bos_token_id
        stream: list[int] = []
        pending = []
        for text in texts:
            pending.append(text[: context * 8])
            if len(pending) < 64:
                continue
            for ids in tok(pending, add_special_tokens=False)["input_ids"]:
                stream.extend(ids[: context - 1] + [bos])
            pending = []
            while len(stream) >= context - 1:
                yield torch.tensor([bos] + stream[: context - 1])
                stream = stream[context - 1:]

    def _compute_training(self, layer: int, spec: dict) -> Path:
        p = self.profile
        hook = p.hook_name(layer)
        bos = self.model.tokenizer.bos_token_id
        windows = self._packed_contexts(self._training_texts(), p.train_context)
        chunks, have, started = [], 0, time.time()
        wanted = p.train_tokens + heldout_size(p)
        while have < wanted:
            batch = [w for w, _ in zip(windows, range(p.llm_batch_size))]
            if not batch:
                break
            ids = torch.stack(batch)
            acts = self._forward(ids, [hook], layer + 1)[hook][ids != bos]
            chunks.append(acts)
            have += len(acts)
            self.log(f"[harness] training activations: {min(have, wanted)}/{wanted} tokens "
                     f"({time.time() - started:.0f}s)") if len(chunks) % 10 == 0 else None
        acts = torch.cat(chunks)[:wanted]
        if len(acts) < wanted:
            raise RuntimeError(f"only {len(acts)} training tokens available, {wanted} wanted")
        scale = float((acts.shape[1] / acts.pow(2).sum(1).mean()).sqrt())
        self.log(f"[harness] {len(acts)} training activations in {time.time() - started:.1f}s "
                 f"(scale {scale:.4g})")
        return self._commit(spec, {"acts": (acts * scale).to(STORE_DTYPE)},
                            {"scale": scale, "n_tokens": len(acts), "seconds": time.time() - started})

    # ------------------------------------------------------------------ probing activations
    def probing(self, layer: int, scale: float) -> dict:
        """{data set: {"train"|"test": {class: (acts [T, d] float32, counts [n_texts])}}} for the offline suite."""
        p = self.profile
        spec = self._spec("probe", layer, probing=asdict(p.probing), scale=round(scale, 8))
        path = self._cached(spec, lambda: self._compute_probing(layer, scale, spec))
        stored = torch.load(path / "tensors.pt")
        return {ds: {split: {cls: (a.float(), c) for cls, (a, c) in classes.items()}
                     for split, classes in splits.items()} for ds, splits in stored.items()}

    def _compute_probing(self, layer: int, scale: float, spec: dict) -> Path:
        p, hook, started = self.profile, self.profile.hook_name(layer), time.time()
        out = {}
        for name in p.probing.dataset_names:
            train, test = data.probing_split(name, p.probing.train_per_class, p.probing.test_per_class,
                                             p.probing.random_seed)
            out[name] = {}
            for split, classes in (("train", train), ("test", test)):
                out[name][split] = {}
                for cls, texts in classes.items():
                    texts = sorted(texts, key=len)      # similar lengths per batch: less padding
                    acts, counts = [], []
                    for i in range(0, len(texts), p.llm_batch_size):
                        ids, keep = self._tokenize(texts[i:i + p.llm_batch_size], p.probing.context_length)
                        resid = self._forward(ids, [hook], layer + 1)[hook]
                        acts.append(resid[keep] * scale)
                        counts.append(keep.sum(1))
                    out[name][split][cls] = (torch.cat(acts).to(STORE_DTYPE), torch.cat(counts))
        self.log(f"[harness] probing activations in {time.time() - started:.1f}s")
        return self._commit(spec, out, {"seconds": time.time() - started})

    # ------------------------------------------------------------------ CE-loss data
    def ce_data(self, layer: int) -> dict | None:
        """Token sequences for CE-loss recovered, with the clean and zero-ablated losses (SAE-independent)."""
        p = self.profile
        if p.ce_sequences <= 0:
            return None
        spec = self._spec("ce", layer, sequences=p.ce_sequences, context=p.ce_context, source=p.train_source)
        path = self._cached(spec, lambda: self._compute_ce(layer, spec))
        meta = json.loads((path / "meta.json").read_text())
        return {"tokens": torch.load(path / "tensors.pt")["tokens"], "clean_loss": meta["clean_loss"],
                "zero_loss": meta["zero_loss"]}

    def _compute_ce(self, layer: int, spec: dict) -> Path:
        p = self.profile
        windows = self._packed_contexts(self._training_texts(heldout=True), p.ce_context)
        tokens = torch.stack([w for w, _ in zip(windows, range(p.ce_sequences))])
        clean = self.loss_with_hook(tokens, layer, None)
        zero = self.loss_with_hook(tokens, layer, lambda resid: torch.zeros_like(resid))
        return self._commit(spec, {"tokens": tokens}, {"clean_loss": clean, "zero_loss": zero})

    def loss_with_hook(self, tokens: torch.Tensor, layer: int, replace) -> float:
        """Mean next-token loss with the residual at `layer` replaced (BOS position left alone)."""
        hook_name = self.profile.hook_name(layer)

        def hook(resid, hook):
            out = resid.clone()
            out[:, 1:] = replace(resid[:, 1:])
            return out

        hooks = [] if replace is None else [(hook_name, hook)]
        started = time.time()
        with torch.no_grad():
            loss = self.model.run_with_hooks(tokens.to(self.model.cfg.device), return_type="loss",
                                             fwd_hooks=hooks)
        self.stats["llm_seconds"] += time.time() - started
        return float(loss)
