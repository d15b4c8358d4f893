"""Core metrics of an SAE on held-out activations: L0, explained variance, MSE, dead latents, CE loss."""

from __future__ import annotations

import torch


CHUNK_TOKENS = 64   # held-out tokens per bootstrap block (tokens of one context are correlated)
DENSE_FRACTION = 0.1  # a latent firing on more than 10% of tokens is "dense"


@torch.no_grad()
def core_metrics(sae, heldout: torch.Tensor, window: torch.Tensor, batch_size: int = 4096) -> tuple[dict, dict]:
    """`heldout`: activations never trained on; `window`: tokens over which a latent must fire once
    not to count as dead (held-out plus a slice of the training set).

    Returns the metrics and their per-block sums over held-out tokens, in a fixed order, so that
    the agent can bootstrap intervals and pair two SAEs on the same tokens."""
    device = next(sae.parameters()).device
    mean = heldout.mean(0).to(device)
    n = len(heldout)
    blocks = {"sq_err": [], "sq_dev": [], "l0": [], "tokens": []}
    l1 = cos = 0.0
    for i in range(0, n, CHUNK_TOKENS):
        x = heldout[i:i + CHUNK_TOKENS].to(device)
        f = sae.encode(x)
        x_hat = sae.decode(f)
        blocks["sq_err"].append((x - x_hat).pow(2).sum().item())
        blocks["sq_dev"].append((x - mean).pow(2).sum().item())
        blocks["l0"].append((f != 0).float().sum().item())
        blocks["tokens"].append(len(x))
        l1 += f.abs().sum().item()
        cos += torch.nn.functional.cosine_similarity(x, x_hat, dim=1).sum().item()
    fired = None
    for i in range(0, len(window), batch_size):
        counts = (sae.encode(window[i:i + batch_size].to(device)) != 0).float().sum(0)
        fired = counts if fired is None else fired + counts
    density = (fired / len(window)).cpu()
    d_sae = density.numel()
    sq_err, sq_dev = sum(blocks["sq_err"]), sum(blocks["sq_dev"])
    core = {
        "l0": sum(blocks["l0"]) / n,
        "l1": l1 / n,
        "explained_variance": 1.0 - sq_err / max(sq_dev, 1e-12),
        "mse": sq_err / (n * heldout.shape[1]),
        "cossim": cos / n,
        "frac_dead": float((density == 0).float().mean()),
        "dead_latents": int((density == 0).sum()),
        "dense_latents": int((density > DENSE_FRACTION).sum()),
        "d_sae": d_sae,
        "heldout_tokens": n,
        "dead_window_tokens": len(window),
    }
    return core, {"blocks": blocks, "density_histogram": density_histogram(density)}


def density_histogram(density: torch.Tensor) -> dict:
    """How many latents fire on a fraction of tokens in each decade: dead, 1e-6..1e-5, ..., 0.1..1."""
    edges = [0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0 + 1e-9]
    counts = [int(((density > lo) & (density <= hi)).sum()) if lo > 0 else int((density == 0).sum())
              for lo, hi in zip(edges[:-1], edges[1:])]
    return {"edges": edges[:-1] + [1.0], "counts": counts, "labels": ["dead", "<1e-5", "<1e-4", "<1e-3",
                                                                      "<1e-2", "<1e-1", "<=1"]}


@torch.no_grad()
def decoder_geometry(sae, d_sae: int, d_in: int) -> dict:
    """The decoder's effective rows (decode(e_i) - decode(0)): norms and pairwise |cos|.

    Measured through `decode`, not read from a weight, so it holds for any SAE whose decode is
    affine in the latents, whatever it calls its parameters."""
    device = next(sae.parameters()).device
    zero = sae.decode(torch.zeros(2, d_sae, device=device))[:1]
    rows = []
    for i in range(0, d_sae, 1024):
        eye = torch.eye(d_sae, device=device)[i:i + 1024]
        if len(eye) < 2:  # exported programs take batches of at least 2
            eye = torch.cat([eye, eye])[:2]
        rows.append((sae.decode(eye) - zero)[: min(1024, d_sae - i)].float().cpu())
    rows = torch.cat(rows)
    norms = rows.norm(dim=1)
    unit = rows / norms.clamp(min=1e-12).unsqueeze(1)
    cos = (unit @ unit.t()).abs()
    cos.fill_diagonal_(0.0)
    pairs = d_sae * (d_sae - 1)
    return {"decoder_norm_mean": float(norms.mean()), "decoder_norm_min": float(norms.min()),
            "decoder_norm_max": float(norms.max()), "decoder_mean_abs_cos": float(cos.sum() / max(pairs, 1)),
            "decoder_max_abs_cos": float(cos.max())}


@torch.no_grad()
def ce_metrics(sae, store, layer: int, scale: float) -> dict:
    """CE-loss recovered: (L_zero - L_sae) / (L_zero - L_clean), the SAE spliced in at every non-BOS position."""
    ce = store.ce_data(layer)
    if ce is None:
        return {"ce_loss_score": None, "ce_loss_with_sae": None, "ce_loss_without_sae": None,
                "ce_loss_with_ablation": None}
    device = next(sae.parameters()).device

    def through_sae(resid):
        x = resid.float().to(device).reshape(-1, resid.shape[-1]) * scale   # the SAE sees [tokens, d_in]
        x_hat = sae.decode(sae.encode(x)).reshape(resid.shape) / scale
        return x_hat.to(resid.dtype).to(resid.device)

    with_sae = store.loss_with_hook(ce["tokens"], layer, through_sae)
    clean, zero = ce["clean_loss"], ce["zero_loss"]
    score = (zero - with_sae) / (zero - clean) if zero != clean else None
    return {"ce_loss_score": score, "ce_loss_with_sae": with_sae, "ce_loss_without_sae": clean,
            "ce_loss_with_ablation": zero, "ce_tokens": int(ce["tokens"].numel())}
