"""The language model's fast load: transformer-lens' conversion saved once, then assigned to an
empty model, must be the same model that transformer-lens' own conversion builds; and loading it
prints the harness's own lines, not transformers' progress bars."""

import pytest
import torch

TEXTS = ["The capital of France is Paris, a city of light and", "def f(x):\n    return x + 1"]
BAR = "it/s]"   # what every tqdm redraw ends with


def test_no_progress_bar_while_a_model_loads_and_bars_again_after(harness_path, capfd):
    """Off a terminal each redraw of a bar is a line of a run's log.txt: dozens of them per load."""
    import tqdm.auto
    from transformers.utils import logging as transformers_logging
    from harness import models

    with models.quiet_progress_bars():
        for _ in tqdm.auto.tqdm(range(3), desc="Converting and de-quantizing GGUF tensors..."):
            pass   # transformers' GGUF reader calls tqdm itself
        for _ in transformers_logging.tqdm(range(3), desc="Loading weights"):
            pass
        print("[harness] loaded google/gemma-3-270m in 0.4s")
    out, err = capfd.readouterr()
    assert out == "[harness] loaded google/gemma-3-270m in 0.4s\n" and err == ""
    for _ in tqdm.auto.tqdm(range(3), desc="the caller's own bar"):
        pass
    assert "the caller's own bar" in capfd.readouterr().err, "tqdm is put back as it was"
    assert transformers_logging.is_progress_bar_enabled()



def test_bars_the_caller_switched_off_stay_off(harness_path):
    """Putting transformers' bars back turns the hub's on as well; the hub's are put back on their own."""
    import huggingface_hub.utils as hub_utils
    from transformers.utils import logging as transformers_logging
    from harness import models

    hub_utils.disable_progress_bars()
    try:
        assert transformers_logging.is_progress_bar_enabled()
        with models.quiet_progress_bars():
            pass
        assert transformers_logging.is_progress_bar_enabled() and hub_utils.are_progress_bars_disabled()
    finally:
        hub_utils.enable_progress_bars()

@pytest.mark.slow   # loads Gemma-3-270M twice
def test_saved_conversion_is_the_model_transformer_lens_builds(harness_path, sae_cache, capfd):
    from harness import models
    from harness.profiles import load_profile

    profile = load_profile("tiny")
    fast = models.load_model(profile)
    assert (models.gemma3_270m_dir() / models.TL_STATE).is_file()   # the first load saved it
    capfd.readouterr()
    built = models.convert_for_transformer_lens(save=False)          # transformer-lens from the weights, now
    out, err = capfd.readouterr()
    assert "Loading weights" not in out + err and BAR not in out + err, err   # transformers' bar, silenced
    ids = built.to_tokens(TEXTS)
    assert fast.to_tokens(TEXTS).tolist() == ids.tolist()
    assert fast.tokenizer.padding_side == built.tokenizer.padding_side
    hook = profile.hook_name(profile.layers[0])
    with torch.no_grad():
        assert float(fast(ids, return_type="loss")) == float(built(ids, return_type="loss"))
        _, a = fast.run_with_cache(ids, names_filter=hook)
        _, b = built.run_with_cache(ids, names_filter=hook)
    assert torch.equal(a[hook], b[hook])


@pytest.mark.slow   # loads Gemma-3-270M twice
def test_a_model_loaded_without_its_tokenizer_gets_it_when_asked(harness_path, sae_cache):
    from harness import models
    from harness.profiles import load_profile

    profile = load_profile("tiny")
    bare = models.load_model(profile, tokenizer=False)
    assert bare.tokenizer is None
    with pytest.raises(AssertionError):   # transformer-lens refuses text without a tokenizer
        bare.to_tokens(TEXTS)
    models.attach_tokenizer(bare, profile)
    assert bare.to_tokens(TEXTS).tolist() == models.load_model(profile).to_tokens(TEXTS).tolist()
