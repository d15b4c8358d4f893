"""The language model's fast load: transformer-lens' conversion saved once, then assigned to an
empty model, must be the same model that transformer-lens' own conversion builds."""

import pytest
import torch

pytestmark = pytest.mark.slow   # loads Gemma-3-270M twice


TEXTS = ["The capital of France is Paris, a city of light and", "def f(x):\n    return x + 1"]


def test_saved_conversion_is_the_model_transformer_lens_builds(harness_path, sae_cache):
    from harness import models
    from harness.profiles import load_profile

    profile = load_profile("tiny")
    fast = models.load_model(profile)
    assert (models.gemma3_270m_dir() / models.TL_STATE).is_file()   # the first load saved it
    built = models.convert_for_transformer_lens(save=False)          # transformer-lens from the weights, now
    ids = built.to_tokens(TEXTS)
    assert fast.to_tokens(TEXTS).tolist() == ids.tolist()
    assert fast.tokenizer.padding_side == built.tokenizer.padding_side
    hook = profile.hook_name(profile.layers[0])
    with torch.no_grad():
        assert float(fast(ids, return_type="loss")) == float(built(ids, return_type="loss"))
        _, a = fast.run_with_cache(ids, names_filter=hook)
        _, b = built.run_with_cache(ids, names_filter=hook)
    assert torch.equal(a[hook], b[hook])


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
