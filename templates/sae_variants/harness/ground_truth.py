"""Ground-truth metrics of an SAE on a synthetic world, with SAELens' own calculators.

The evaluator's side of a synthetic profile (harness/synthetic.py builds the world). Every metric
is SAELens' (`sae_lens.synthetic.evals`, the code behind SynthSAEBench's published table), fed
batch by batch over the held-out vectors:

    f1, precision, recall   each latent as a detector of its best-matching true feature (by decoder
                            cosine), averaged over latents (ClassificationMetricsCalculator)
    mcc                     mean |cos| of decoder rows and true features after a one-to-one
                            (Hungarian) matching (mean_correlation_coefficient)
    uniqueness              fraction of latents whose best-matching feature no other latent has
    explained_variance, shrinkage, sae_l0, true_l0, dead_latents

Decoder rows are read from the exported decode (decode(e_i) - decode(0)), so any SAE whose decode is
linear in the latents is scored the same way, whatever it names its weights; one that is not linear
is still scored on those rows and says so (`decoder_linear: false`).

Evidence for intervals: the held-out vectors are cut into BLOCKS blocks, the same for every SAE of
the profile, and the calculator's per-latent true/false positive/negative counts are kept per
block, so the agent can bootstrap F1 over blocks and pair two SAEs on the same vectors (as it does
for explained variance). MCC and uniqueness depend on the decoder alone: their spread is the seeds'.
"""

from __future__ import annotations

import torch

BLOCKS = 16
LINEAR_TOLERANCE = 1e-3


@torch.no_grad()
def decoder_is_linear(sae, rows: torch.Tensor, trials: int = 4) -> bool:
    """Whether decode(f) - decode(0) = f @ rows for random sparse codes (relative error < 1e-3)."""
    device = rows.device
    generator = torch.Generator().manual_seed(0)
    shape = (max(2, trials), rows.shape[0])
    active = torch.rand(shape, generator=generator).argsort(dim=1) < max(2, rows.shape[0] // 20)   # 5%, >= 2
    codes = (active * (0.5 + 4.5 * torch.rand(shape, generator=generator))).to(device)
    zero = sae.decode(torch.zeros(2, rows.shape[0], device=device))[:1]
    got, want = sae.decode(codes) - zero, codes @ rows
    return bool((got - want).norm() <= LINEAR_TOLERANCE * want.norm().clamp(min=1e-6))


@torch.no_grad()
def ground_truth_metrics(sae, heldout: torch.Tensor, store, layer: int, batch_size: int = 4096) -> tuple[dict, dict]:
    """(metrics, per-block counts) of `sae` on the held-out vectors of a synthetic profile."""
    from sae_lens.evals import ExplainedVarianceCalculator
    from sae_lens.synthetic import (ClassificationMetricsCalculator, DeadLatentsCalculator, L0Calculator,
                                    ShrinkageCalculator, feature_uniqueness, mean_correlation_coefficient)
    from harness.synthetic import dense_rows

    device = next(sae.parameters()).device
    truth = store.truth(layer)
    features = truth["feature_vectors"].to(device)
    rows = sae.W_dec.detach().float()                        # effective decoder rows, [d_sae, d_in]
    true_l0, sae_l0 = L0Calculator(), L0Calculator()
    dead, shrinkage = DeadLatentsCalculator(rows.shape[0]), ShrinkageCalculator()
    variance = ExplainedVarianceCalculator()
    classification = ClassificationMetricsCalculator(rows, features)
    n = len(heldout)
    edges = [round(n * b / BLOCKS) for b in range(BLOCKS + 1)]
    blocks = {"tp": [], "fp": [], "fn": []}
    for lo, hi in zip(edges, edges[1:]):
        before = {k: getattr(classification, k).clone() for k in blocks}
        for start in range(lo, hi, batch_size):
            stop = min(start + batch_size, hi)
            x = heldout[start:stop].to(device).float()
            f_true = dense_rows(truth, slice(start, stop)).to(device)
            latents = sae.encode(x)
            x_hat = sae.decode(latents)
            true_l0.add_batch(f_true)
            sae_l0.add_batch(latents)
            dead.add_batch(latents)
            shrinkage.add_batch(x_hat, x)
            variance.add_batch(x_hat, x)
            classification.add_batch(latents, f_true)
        for k in blocks:
            blocks[k].append([int(v) for v in (getattr(classification, k) - before[k]).round().tolist()])
    c = classification.compute()
    metrics = {
        "f1": c.f1_score, "precision": c.precision, "recall": c.recall,
        "mcc": mean_correlation_coefficient(rows, features),
        "uniqueness": feature_uniqueness(rows, features),
        "explained_variance": variance.compute(), "shrinkage": shrinkage.compute(),
        "sae_l0": sae_l0.compute(), "true_l0": true_l0.compute(),
        "true_l0_top_width": _true_l0_top(truth, rows.shape[0]),
        "dead_latents": dead.compute(), "heldout_samples": n,
        "decoder_linear": decoder_is_linear(sae, rows),
    }
    return metrics, blocks


def _true_l0_top(truth: dict, width: int) -> float:
    """The true L0 counting only the `width` most frequent features (SynthSAEBench's ~25 at 4096)."""
    counts = truth["row_counts"]
    return float((truth["cols"] < width).sum()) / max(1, len(counts))
