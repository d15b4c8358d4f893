"""`python -m harness.reference --k K --out_dir D [--arch batchtopk]`: reference SAEs trained by the harness.

A plain TopK SAE (Gao et al. 2024: keep the k largest pre-activations, no sparsity penalty, no
auxiliary loss) on the same cached activations, with the profile's width, batch size and passes and
the template's learning-rate schedule. The agent trains it once per baseline, at k = the baseline's
own L0, so that every comparison can say where a well-known strong architecture sits at the same
sparsity: the ReLU/L1 baseline is deliberately simple, and beating it is not beating the field.
`--arch batchtopk` trains SAELens' BatchTopK the same way (SynthSAEBench's strong baseline: its
published F1 0.73 against 0.56 for L1 at L0 25). It is the harness's code, run from the agent's pristine copy like the evaluator, so no edit of
experiment.py changes it; it is saved with `save_sae` and evaluated exactly as every run is.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn as nn

from harness.stores import open_store
from harness.artifacts import save_sae
from harness.profiles import load_profile
from harness.training import train

LEARNING_RATE = 3e-3    # the template's Config defaults, so the two differ only in the architecture
WARMUP_STEPS = 100
DECAY_FRACTION = 0.2


class TopKSAE(nn.Module):
    """f = TopK_k(ReLU((x - b_dec) W_enc + b_enc)), x_hat = f W_dec + b_dec."""

    def __init__(self, d_in: int, d_sae: int, k: int):
        super().__init__()
        self.d_in, self.d_sae, self.k = d_in, d_sae, k
        W = torch.randn(d_sae, d_in)
        self.W_dec = nn.Parameter(W / W.norm(dim=1, keepdim=True))
        self.W_enc = nn.Parameter(self.W_dec.detach().t().clone())
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.b_dec = nn.Parameter(torch.zeros(d_in))

    def encode(self, x):
        pre = torch.relu((x - self.b_dec) @ self.W_enc + self.b_enc)
        top = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, top.indices, top.values)

    def decode(self, f):
        return f @ self.W_dec + self.b_dec


class BatchTopKSAE(TopKSAE):
    """BatchTopK (Bussmann et al. 2024), as SAELens trains it: in training the k x batch largest
    pre-activations of the whole batch are kept; at inference (what is exported) a latent fires above
    a threshold, the running mean of the smallest activation training kept, so L0 ~ k on average."""

    def __init__(self, d_in: int, d_sae: int, k: int):
        super().__init__(d_in, d_sae, k)
        self.register_buffer("threshold", torch.zeros(()))

    def encode(self, x):
        pre = torch.relu((x - self.b_dec) @ self.W_enc + self.b_enc)
        if not self.training:
            return pre * (pre > self.threshold)
        flat = pre.flatten()
        top = flat.topk(self.k * x.shape[0])
        with torch.no_grad():   # the threshold inference uses: an EMA of the smallest kept value
            kept = top.values[top.values > 0]
            if len(kept):
                self.threshold.lerp_(kept.min(), 0.01 if self.threshold > 0 else 1.0)
        return torch.zeros_like(flat).scatter(-1, top.indices, top.values).view_as(pre)


ARCHITECTURES = {"topk": TopKSAE, "batchtopk": BatchTopKSAE}


class TopKTrainer:
    """Reconstruction loss only (TopK fixes the sparsity), Adam, warm-up and decay, unit-norm decoder rows."""

    def __init__(self, ae: TopKSAE, steps: int):
        self.ae = ae
        self.optimizer = torch.optim.Adam(ae.parameters(), lr=LEARNING_RATE)
        decay_steps = max(1, int(DECAY_FRACTION * steps))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: max(0.0, min(
            (step + 1) / WARMUP_STEPS, (steps - step) / decay_steps, 1.0)))

    def loss(self, x):
        return (x - self.ae.decode(self.ae.encode(x))).pow(2).sum(dim=-1).mean()

    def update(self, step, x):
        self.optimizer.zero_grad()
        loss = self.loss(x)
        loss.backward()
        with torch.no_grad():   # only the gradient tangent to the unit sphere moves a decoder row
            W, G = self.ae.W_dec, self.ae.W_dec.grad
            G -= (G * W).sum(dim=1, keepdim=True) * W
        self.optimizer.step()
        self.scheduler.step()
        with torch.no_grad():
            self.ae.W_dec /= self.ae.W_dec.norm(dim=1, keepdim=True).clamp(min=1e-8)
        return loss.item()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, required=True, help="latents kept per token (the L0 to match)")
    parser.add_argument("--out_dir", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), default="topk")
    args = parser.parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    profile = load_profile()
    store = open_store(profile)
    for layer in profile.layers:
        torch.manual_seed(args.seed)
        acts = store.training(layer)
        k = max(1, min(args.k, profile.dict_size))
        steps = max(1, int(profile.epochs * len(acts) / profile.batch_size))
        ae = ARCHITECTURES[args.arch](acts.shape[1], profile.dict_size, k)
        with torch.no_grad():
            ae.b_dec.copy_(acts[:4096].mean(dim=0))
        print(f"{args.arch} reference: k {k}, {profile.dict_size} latents on {profile.hook_name(layer)}, {steps} steps")
        measured = train(TopKTrainer(ae, steps), acts, steps=steps, batch_size=profile.batch_size, seed=args.seed)
        facts = {"architecture": args.arch, "k": k, "dict_size": profile.dict_size, "batch_size": profile.batch_size,
                 "epochs": profile.epochs, "learning_rate": LEARNING_RATE, "seed": args.seed, **measured}
        save_sae(ae, acts, args.out_dir, layer, facts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
