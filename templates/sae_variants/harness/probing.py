"""Sparse probing with SAEBench's protocol, on the offline suite of sae-probes data sets.

Protocol (sae_bench.evals.sparse_probing): mean of the activations over non-special tokens of each
text; for every class a balanced one-vs-rest task (negatives sampled evenly from the other
classes); the top-k SAE latents, or top-k residual channels for the `llm_` baseline, chosen by the
absolute difference of class means on the training split; a logistic-regression probe on them;
k = 1, 2, 5, 10, 20, 50; accuracies averaged per class, then per data set, then over data sets.

The task construction, top-k selection and probes are sae-bench's own functions
(`probe_training.train_probe_on_activations`). Two deviations, both on purpose:

- SAEBench trains the all-latent probe (`sae_test_accuracy`) with a GPU torch loop that keeps the
  best test-epoch; we use the same function's sklearn path for it too (plain held-out accuracy).
- Every feature (latent, or residual channel) is standardised on the probe's training split before
  the top-k selection and the probe. A C = 1 L2 probe on a few dozen examples otherwise rewards
  large latents: multiplying every latent by 16 and dividing the decoder by 16 (the same SAE) moved
  top-5 accuracy by 0.075. Standardised, rescaling a latent cannot move any accuracy.

Each probe's per-example correctness on the test split is kept (`correct`, a string of 0/1 in the
test split's fixed order), so the agent can bootstrap confidence intervals and pair two SAEs on the
same test texts.

The language-model-only results do not depend on the SAE: they are computed once and cached next to
the probing activations, as SAEBench does.
"""

from __future__ import annotations

import json
import os
import warnings
import zlib

import torch


def _segment_mean(token_values: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Mean over each text's tokens: token_values [T, D] rows grouped by counts [n] -> [n, D]."""
    index = torch.repeat_interleave(torch.arange(len(counts)), counts)
    sums = torch.zeros(len(counts), token_values.shape[1], dtype=torch.float32)
    sums.index_add_(0, index, token_values.float())
    return sums / counts.clamp(min=1).unsqueeze(1).float()


@torch.no_grad()
def encode_means(sae, token_acts: torch.Tensor, counts: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    device = next(sae.parameters()).device
    feats = torch.cat([sae.encode(token_acts[i:i + batch_size].to(device)).float().cpu()
                       for i in range(0, len(token_acts), batch_size)])
    return _segment_mean(feats, counts)


def standardise(train_x: torch.Tensor, test_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z-score every feature with the training split's mean and std; a constant feature becomes 0."""
    mean = train_x.mean(0, keepdim=True)
    std = train_x.std(0, keepdim=True)
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    return (train_x - mean) / std, (test_x - mean) / std


def _probe(train: dict, test: dict, k: int | None, seed_text: str) -> dict[str, dict]:
    """sae-bench's `train_probe_on_activations` loop, step for step, with the sklearn probe, on
    standardised features. Per class: {"accuracy": float, "correct": "0110..."}.

    Its own wrapper cannot be called as is with jaxtyping >= 0.3: the dimension names of the outer
    signature (per-class sizes) leak into the inner calls (2x per-class sizes) and fail the check.
    """
    from sae_bench.evals.sparse_probing import probe_training as pt
    torch.manual_seed(zlib.crc32(seed_text.encode()))   # same negatives and shuffles in every run
    out = {}
    for cls in train:
        train_x, train_y = pt.prepare_probe_data(train, cls)
        test_x, test_y = pt.prepare_probe_data(test, cls)
        train_x, test_x = standardise(train_x, test_x)
        if k is not None:
            mask = pt.get_top_k_mean_diff_mask(train_x, train_y, k)
            train_x = pt.apply_topk_mask_reduce_dim(train_x, mask)
            test_x = pt.apply_topk_mask_reduce_dim(test_x, mask)
        with warnings.catch_warnings():
            # sae-bench passes `penalty=`, which scikit-learn >= 1.8 deprecates: one warning per
            # probe (hundreds per run) that says nothing about the experiment.
            warnings.simplefilter("ignore", FutureWarning)
            probe, accuracy = pt.train_sklearn_probe(train_x, train_y, test_x, test_y)
        hits = probe.predict(test_x.float().numpy()) == test_y.numpy()
        out[cls] = {"accuracy": float(accuracy), "correct": "".join("1" if h else "0" for h in hits)}
    return out


def _metrics(prefix: str, train: dict, test: dict, k_values, dataset: str) -> dict[str, dict[str, dict]]:
    per_class = {f"{prefix}_test_accuracy": _probe(train, test, None, f"{dataset}/{prefix}/all")}
    for k in k_values:
        per_class[f"{prefix}_top_{k}_test_accuracy"] = _probe(train, test, k, f"{dataset}/{prefix}/{k}")
    return per_class


def llm_results(probe_acts: dict, k_values, cache_file) -> dict:
    """Per data set: {metric: {class: accuracy}} for residual-stream probes; cached in `cache_file`."""
    if cache_file is not None and os.path.exists(cache_file):
        with open(cache_file) as f:
            return json.load(f)
    out = {}
    for name, splits in probe_acts.items():
        train = {cls: _segment_mean(a, c) for cls, (a, c) in splits["train"].items()}
        test = {cls: _segment_mean(a, c) for cls, (a, c) in splits["test"].items()}
        out[name] = _metrics("llm", train, test, k_values, name)
    if cache_file is not None:
        tmp = f"{cache_file}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(out, f)
        os.replace(tmp, cache_file)
    return out


def sae_results(sae, probe_acts: dict, k_values, test_split: str = "test") -> dict:
    """Per data set: {metric: {class: {"accuracy", "correct"}}}; probes train on "train" and are
    scored on `test_split` ("test", or "final" at the end of an idea)."""
    out = {}
    for name, splits in probe_acts.items():
        train = {cls: encode_means(sae, a, c) for cls, (a, c) in splits["train"].items()}
        test = {cls: encode_means(sae, a, c) for cls, (a, c) in splits[test_split].items()}
        out[name] = _metrics("sae", train, test, k_values, name)
    return out


def aggregate(llm: dict, sae: dict, dataset_names) -> tuple[dict, dict, list, dict, dict]:
    """SAEBench's averaging: per class -> per data set -> mean over data sets.

    Returns llm metrics, sae metrics, per-data-set details, SAEBench's unstructured per-class
    accuracies, and the per-example correctness {metric: {"dataset/class": "0110..."}}.
    """
    details, unstructured, correct = [], {}, {}
    for name in dataset_names:
        per_class = {**llm[name], **sae[name]}
        unstructured[f"{name}_results"] = {m: {c: r["accuracy"] for c, r in v.items()} for m, v in per_class.items()}
        row = {"dataset_name": f"{name}_results"}
        row.update({m: sum(r["accuracy"] for r in v.values()) / len(v) for m, v in per_class.items()})
        details.append(row)
        for metric, classes in sae[name].items():
            for cls, r in classes.items():
                correct.setdefault(metric, {})[f"{name}/{cls}"] = r["correct"]
    metrics = [m for m in details[0] if m != "dataset_name"]
    mean = {m: sum(row[m] for row in details) / len(details) for m in metrics}
    llm_metrics = {m: v for m, v in mean.items() if m.startswith("llm_")}
    sae_metrics = {m: v for m, v in mean.items() if m.startswith("sae_")}
    return llm_metrics, sae_metrics, details, unstructured, correct
