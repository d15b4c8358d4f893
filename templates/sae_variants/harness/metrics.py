"""Core metrics of an SAE on held-out activations: L0, explained variance, MSE, dead latents, CE loss."""

from __future__ import annotations

import torch


@torch.no_grad()
def core_metrics(sae, heldout: torch.Tensor, window: torch.Tensor, batch_size: int = 4096) -> dict:
    """`heldout`: activations never trained on; `window`: tokens over which a latent must fire once
    not to count as dead (held-out plus a slice of the training set)."""
    device = next(sae.parameters()).device
    sq_err = sq_dev = l0 = l1 = cos = 0.0
    mean = heldout.mean(0).to(device)
    n = len(heldout)
    for i in range(0, n, batch_size):
        x = heldout[i:i + batch_size].to(device)
        f = sae.encode(x)
        x_hat = sae.decode(f)
        sq_err += (x - x_hat).pow(2).sum().item()
        sq_dev += (x - mean).pow(2).sum().item()
        l0 += (f != 0).float().sum().item()
        l1 += f.abs().sum().item()
        cos += torch.nn.functional.cosine_similarity(x, x_hat, dim=1).sum().item()
    fired = None
    for i in range(0, len(window), batch_size):
        active = (sae.encode(window[i:i + batch_size].to(device)) != 0).any(0)
        fired = active if fired is None else fired | active
    d_sae = fired.numel()
    return {
        "l0": l0 / n,
        "l1": l1 / n,
        "explained_variance": 1.0 - sq_err / max(sq_dev, 1e-12),
        "mse": sq_err / (n * heldout.shape[1]),
        "cossim": cos / n,
        "frac_dead": 1.0 - fired.float().sum().item() / d_sae,
        "heldout_tokens": n,
        "dead_window_tokens": len(window),
    }


@torch.no_grad()
def ce_metrics(sae, store, layer: int, scale: float) -> dict:
    """CE-loss recovered: (L_zero - L_sae) / (L_zero - L_clean), the SAE spliced in at every non-BOS position."""
    ce = store.ce_data(layer)
    if ce is None:
        return {"ce_loss_score": None, "ce_loss_with_sae": None, "ce_loss_without_sae": None,
                "ce_loss_with_ablation": None}
    device = next(sae.parameters()).device

    def through_sae(resid):
        x = resid.float().to(device) * scale
        return (sae.decode(sae.encode(x)) / scale).to(resid.dtype).to(resid.device)

    with_sae = store.loss_with_hook(ce["tokens"], layer, through_sae)
    clean, zero = ce["clean_loss"], ce["zero_loss"]
    score = (zero - with_sae) / (zero - clean) if zero != clean else None
    return {"ce_loss_score": score, "ce_loss_with_sae": with_sae, "ce_loss_without_sae": clean,
            "ce_loss_with_ablation": zero, "ce_tokens": int(ce["tokens"].numel())}
