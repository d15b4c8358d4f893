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

Training and held-out activations are float32 `.npy` files written row by row into a memory map as
the language model produces them, and read back memory-mapped (copy-on-write): preparing holds one
batch in RAM, not the whole set, and every run on the machine shares the same page cache. That is
what keeps gemma-2-2b's 2M x 2304 training set (18 GB) from needing several copies of itself in RAM.

BOS, padding and EOS positions are dropped: SAEBench excludes them from probing means, and the
BOS residual is orders of magnitude larger than any other token's in Gemma models.

Trust: every entry records the SHA-256 of its tensors and is verified on read; an entry that fails
(a half-written or tampered file) is recomputed, never used. Training activations and the held-out
tokens are separate entries, so the box that runs experiment.py is given the first and never sees the
second, nor the probe texts and labels. With `SAE_CACHE_READONLY=1` (inside that box) a missing
entry is an error that names `python -m agent prepare`, not a silent recomputation.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import socket
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock

from harness import data
from harness.profiles import Profile, cache_dir
from harness.stream import ActivationStream

CACHE_VERSION = 7   # 6: memory-mapped .npy; 7: no window dropped between LLM batches (zip over a generator did)
ACTS_FILE = "acts.npy"           # training and held-out entries: [tokens, d_model] float32
SCALE_ROWS = 65536               # rows scaled in place per step (bounded memory)
STORE_DTYPE = torch.float16   # scaled activations are O(1): float16 holds them with 3 significant digits


def heldout_size(profile: Profile) -> int:
    """Tokens kept apart from training for the core metrics."""
    return min(8192, max(1024, profile.train_tokens // 10))


class CacheMissing(RuntimeError):
    """An entry the run needs was not prepared; only the agent's trusted prepare step computes them."""


def readonly() -> bool:
    return os.environ.get("SAE_CACHE_READONLY", "") not in ("", "0", "false", "False")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    """Cached activations for one profile; the language model is loaded only on a cache miss.
    (`harness.open_store` picks this or, on a synthetic profile, harness.synthetic.SyntheticStore.)"""

    def __init__(self, profile: Profile, log=print):
        self.profile = profile
        self.log = log
        self._model = None
        self._training: dict[int, tuple] = {}
        self._ok: set[Path] = set()   # entries verified in this process
        self.stats = {"hits": 0, "misses": 0, "llm_seconds": 0.0, "llm_tokens": 0}

    # ------------------------------------------------------------------ model
    @property
    def model(self):
        if self._model is None:
            from harness.models import load_model
            device = "cuda" if torch.cuda.is_available() else "cpu"
            # without its tokenizer until a text is tokenized: the evaluator reads token ids from the cache
            self._model = load_model(self.profile, device=device, log=self.log, tokenizer=False)
        return self._model

    @property
    def tokenizer(self):
        if self.model.tokenizer is None:
            from harness.models import attach_tokenizer
            attach_tokenizer(self.model, self.profile)
        return self.model.tokenizer

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
        tok = self.tokenizer
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
            if self._verified(path):
                self.stats["hits"] += 1
                self.log(f"[harness] activation cache hit: {path}")
                return path
            self.log(f"[harness] cache entry {path} failed verification (tampered or half-written): recomputing")
            if not readonly():
                shutil.rmtree(path, ignore_errors=True)
        self.stats["misses"] += 1
        if readonly():
            raise CacheMissing(f"the {spec['kind']} activations for {spec['hook']} (profile {self.profile.name}) "
                               f"are not prepared ({path}); run `python -m agent prepare --profile "
                               f"{self.profile.name}` first")
        self.log(f"[harness] activation cache miss: computing {spec['kind']} activations for {spec['hook']}")
        return None

    def _verified(self, path: Path) -> bool:
        if path in self._ok:
            return True
        try:
            meta = json.loads((path / "meta.json").read_text())
            ok = meta.get("sha256") == file_sha256(path / meta.get("file", "tensors.pt"))
        except (OSError, ValueError):
            ok = False
        if ok:
            self._ok.add(path)
        return ok

    def entry_dirs(self, kinds: tuple[str, ...], layer: int) -> list[Path]:
        """The cache folders of the given kinds for `layer` (what a box must be able to read)."""
        specs = {"train": lambda: self.training_spec(layer), "heldout": lambda: self.heldout_spec(layer),
                 "stream": lambda: self.stream_spec(layer),
                 "probe": lambda: self.probing_spec(layer), "ce": lambda: self.ce_spec(layer)}
        return [self._dir(specs[k]()) for k in kinds if k in specs]

    def _cached(self, spec: dict, compute) -> Path:
        """The cache folder for `spec`, computed by `compute()` if missing, once across processes:
        whoever holds the lock computes, the others wait and then find it done."""
        path = self._lookup(spec)
        if path is not None:
            return path
        path = self._dir(spec)
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            if (path / "meta.json").exists() and self._verified(path):
                self.log(f"[harness] activation cache: another run computed {path.name} meanwhile")
                return path
            return compute()

    def _staging(self, spec: dict) -> Path:
        """A fresh folder beside the entry, renamed into place by `_finish` when complete."""
        path = self._dir(spec)
        owner = f"{socket.gethostname()}-{os.getpid()}"
        for stale in path.parent.glob(f"{path.name}.tmp-*"):   # left by a prepare killed on this machine
            host, _, pid = stale.name.split(".tmp-", 1)[1].rpartition("-")
            if host in ("", socket.gethostname()) and not _alive(pid):
                shutil.rmtree(stale, ignore_errors=True)
        tmp = path.with_name(f"{path.name}.tmp-{owner}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        return tmp

    def _finish(self, spec: dict, tmp: Path, file: str, meta: dict) -> Path:
        path = self._dir(spec)
        meta = {"spec": spec, **meta, "file": file, "sha256": file_sha256(tmp / file)}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        try:
            tmp.rename(path)
        except OSError:         # another run finished first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
        return path

    def _commit(self, spec: dict, tensors: dict, meta: dict) -> Path:
        tmp = self._staging(spec)
        torch.save(tensors, tmp / "tensors.pt")
        return self._finish(spec, tmp, "tensors.pt", meta)

    # ------------------------------------------------------------------ training activations
    def training_spec(self, layer: int) -> dict:
        p = self.profile
        return self._spec("train", layer, tokens=p.train_tokens, context=p.train_context, source=p.train_source,
                          probing=asdict(p.probing))

    def heldout_spec(self, layer: int) -> dict:
        return {**self.training_spec(layer), "kind": "heldout", "heldout_tokens": heldout_size(self.profile)}

    def _load_acts(self, spec: dict, compute) -> tuple[torch.Tensor, dict]:
        """The entry's activations, memory-mapped copy-on-write: writes stay private to this process."""
        path = self._cached(spec, compute)
        meta = json.loads((path / "meta.json").read_text())
        return torch.from_numpy(np.load(path / ACTS_FILE, mmap_mode="c")), meta

    def training(self, layer: int):
        """Scaled activations (float32, [train_tokens, d_model]) to train on, memory-mapped; on a
        profile that streams, an `ActivationStream` of stream_tokens rows that starts with them."""
        if layer not in self._training:
            pool, meta = self._load_acts(self.training_spec(layer), lambda: self._compute_training(layer)[0])
            self._training[layer] = ActivationStream(self, layer, pool, meta["scale"]) if self.profile.streams \
                else pool
        return self._training[layer]

    def heldout(self, layer: int) -> tuple[torch.Tensor, float]:
        """Scaled held-out activations (never trained on, for core metrics) and the scale applied."""
        acts, meta = self._load_acts(self.heldout_spec(layer), lambda: self._compute_training(layer)[1])
        return acts, meta["scale"]

    def scale(self, layer: int) -> float:
        spec = self.training_spec(layer)
        path = self._cached(spec, lambda: self._compute_training(layer)[0])
        return json.loads((path / "meta.json").read_text())["scale"]

    def llm_results_file(self, layer: int, scale: float) -> Path:
        return self._dir(self.probing_spec(layer)) / "llm_results.json"

    def _training_texts(self, heldout: bool = False):
        """Training text in a fixed order; `heldout`: text the SAE never trains on (for CE loss)."""
        p = self.profile
        if p.train_source == "pile":
            from datasets import load_dataset
            from harness.models import quiet_progress_bars
            with quiet_progress_bars():   # the hub's "Resolving data files" bars, one line per redraw in log.txt
                stream = load_dataset(p.extra["pile_dataset"], split="validation" if heldout else "train",
                                      streaming=True)
            return (row["text"] for row in stream)
        exclude = set()
        for name in p.probing.dataset_names:
            if name in data.SUITE:
                splits = data.probing_split(name, p.probing.train_per_class, p.probing.test_per_class,
                                            p.probing.random_seed, p.probing.final_per_class)
                for split in splits.values():
                    for texts in split.values():
                        exclude.update(texts)
        texts = data.training_texts(exclude)
        return iter(texts[::-1] if heldout else texts)   # the tail is never reached by training

    def _packed_contexts(self, texts, context: int):
        """Yield [BOS + (context-1) tokens] windows packed from consecutive texts, BOS between texts
        (SAELens' layout), each text cut to one window's worth so that no single long file dominates."""
        tok = self.tokenizer
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

    def window_activations(self, ids: torch.Tensor, layer: int) -> torch.Tensor:
        """Unscaled float32 rows of the hook's activations for a batch of windows, BOS positions dropped
        (what both the cached pool and the stream are made of)."""
        hook = self.profile.hook_name(layer)
        return self._forward(ids, [hook], layer + 1)[hook][ids != self.tokenizer.bos_token_id].float()

    def _llm_batches(self, windows):
        """Windows in batches of llm_batch_size: how every training entry consumes the text, so the
        stream can tell which windows the pool and the held-out rows used."""
        while batch := list(itertools.islice(windows, self.profile.llm_batch_size)):
            yield torch.stack(batch)

    def _compute_training(self, layer: int) -> tuple[Path, Path]:
        p = self.profile
        windows = self._packed_contexts(self._training_texts(), p.train_context)
        specs = (self.training_spec(layer), self.heldout_spec(layer))
        sizes = (p.train_tokens, heldout_size(p))
        stages = [self._staging(spec) for spec in specs]
        # Rows go straight into the two files: the first train_tokens to training, the rest held out.
        parts = [np.lib.format.open_memmap(stage / ACTS_FILE, mode="w+", dtype=np.float32, shape=(n, p.d_model))
                 for stage, n in zip(stages, sizes)]
        wanted, have, sum_sq, batches, started = sum(sizes), 0, 0.0, 0, time.time()
        for ids in self._llm_batches(windows):
            acts = self.window_activations(ids, layer)[: wanted - have]
            _write_rows(parts, sizes, have, acts.numpy())
            sum_sq += float(acts.double().pow(2).sum())
            have, batches = have + len(acts), batches + 1
            self.log(f"[harness] training activations: {have}/{wanted} tokens "
                     f"({time.time() - started:.0f}s)") if batches % 10 == 0 else None
            if have >= wanted:
                break
        if have < wanted:
            raise RuntimeError(f"only {have} training tokens available, {wanted} wanted")
        scale = float(np.sqrt(p.d_model * wanted / sum_sq))   # mean squared norm d_model after scaling
        for part in parts:
            for i in range(0, len(part), SCALE_ROWS):
                part[i:i + SCALE_ROWS] *= scale
            part.flush()
        del parts
        self.log(f"[harness] {wanted} training activations in {time.time() - started:.1f}s (scale {scale:.4g})")
        meta = {"scale": scale, "seconds": time.time() - started}
        return tuple(self._finish(spec, stage, ACTS_FILE, {**meta, "n_tokens": n})
                     for spec, stage, n in zip(specs, stages, sizes))

    # ------------------------------------------------------------------ streamed training tokens
    def stream_spec(self, layer: int) -> dict:
        return {**self.training_spec(layer), "kind": "stream", "stream_tokens": self.profile.stream_tokens}

    def stream_windows(self, layer: int) -> torch.Tensor:
        """Token windows [n, train_context] (int32) whose activations the stream computes after the
        pool: at least stream_tokens - train_tokens kept tokens, from text after the held-out rows'."""
        spec = self.stream_spec(layer)
        path = self._cached(spec, lambda: self._compute_stream(spec))
        return torch.load(path / "tensors.pt")["windows"]

    def _compute_stream(self, spec: dict) -> Path:
        p, started = self.profile, time.time()
        bos = self.tokenizer.bos_token_id
        batches = self._llm_batches(self._packed_contexts(self._training_texts(), p.train_context))
        used = p.train_tokens + heldout_size(p)
        for ids in batches:              # the batches _compute_training turned into the pool and held-out rows
            used -= int((ids != bos).sum())
            if used <= 0:
                break
        wanted, kept, out = p.stream_tokens - p.train_tokens, 0, []
        for ids in batches:
            out.append(ids.to(torch.int32))
            kept += int((ids != bos).sum())
            if kept >= wanted:
                break
        if used > 0 or kept < wanted:
            raise RuntimeError(f"the training text ({p.train_source}) has {p.train_tokens + kept} usable tokens after "
                               f"the held-out rows, fewer than the profile's stream of {p.stream_tokens}; "
                               "lower stream_tokens or train on a larger text source")
        self.log(f"[harness] {kept} streamed training tokens in {sum(map(len, out))} windows "
                 f"({time.time() - started:.1f}s)")
        return self._commit(spec, {"windows": torch.cat(out)}, {"tokens": kept, "seconds": time.time() - started})

    # ------------------------------------------------------------------ probing activations
    def probing_spec(self, layer: int) -> dict:
        # Keyed by the training entry (whose scale it uses), not by the scale's float value.
        return self._spec("probe", layer, probing=asdict(self.profile.probing), train=_key(self.training_spec(layer)))

    def probing(self, layer: int, scale: float) -> dict:
        """{data set: {"train"|"test": {class: (acts [T, d] float32, counts [n_texts])}}} for the offline suite."""
        spec = self.probing_spec(layer)
        path = self._cached(spec, lambda: self._compute_probing(layer, scale, spec))
        stored = torch.load(path / "tensors.pt")
        return {ds: {split: {cls: (a.float(), c) for cls, (a, c) in classes.items()}
                     for split, classes in splits.items()} for ds, splits in stored.items()}

    def _compute_probing(self, layer: int, scale: float, spec: dict) -> Path:
        p, hook, started = self.profile, self.profile.hook_name(layer), time.time()
        out = {}
        for name in p.probing.dataset_names:
            splits = data.probing_split(name, p.probing.train_per_class, p.probing.test_per_class,
                                        p.probing.random_seed, p.probing.final_per_class)
            out[name] = {}
            for split, classes in splits.items():
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
        if self.profile.ce_sequences <= 0:
            return None
        spec = self.ce_spec(layer)
        path = self._cached(spec, lambda: self._compute_ce(layer, spec))
        meta = json.loads((path / "meta.json").read_text())
        return {"tokens": torch.load(path / "tensors.pt")["tokens"], "clean_loss": meta["clean_loss"],
                "zero_loss": meta["zero_loss"]}

    def ce_spec(self, layer: int) -> dict:
        p = self.profile
        return self._spec("ce", layer, sequences=p.ce_sequences, context=p.ce_context, source=p.train_source)

    def _compute_ce(self, layer: int, spec: dict) -> Path:
        p = self.profile
        windows = self._packed_contexts(self._training_texts(heldout=True), p.ce_context)
        tokens = torch.stack(list(itertools.islice(windows, p.ce_sequences)))
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


def _write_rows(parts: list, sizes: tuple[int, ...], start: int, rows: np.ndarray) -> None:
    """Write `rows` at global row `start` of the concatenation of `parts` (sizes[i] rows each)."""
    offset = 0
    for part, size in zip(parts, sizes):
        lo, hi = max(start, offset), min(start + len(rows), offset + size)
        if lo < hi:
            part[lo - offset:hi - offset] = rows[lo - start:hi - start]
        offset += size


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:   # someone else's process
        return True
    return True
