"""
Train a sparse autoencoder (SAE) on a language model's residual stream, then evaluate it with
SAEBench-style sparse probing and core metrics. Run as:

    python experiment.py --out_dir=run_1

This file is the experiment: the hyperparameters (`Config`), the SAE (`CustomSAE`) and how it is
trained (`CustomTrainer`) are yours to change. The harness (`harness/`, which you cannot edit)
supplies the cached activations and drives the training loop (it calls `trainer.update(step, batch)`
for every step); `harness.save_sae` exports `trainer.ae.encode`/`decode` with torch.export. After
this script exits, the harness evaluates the exported SAE in its own process and writes
`out_dir/final_info.json`; this script must not write that file. encode/decode must be plain tensor
code that works for any batch size (no `.item()` or Python `if` on tensor values there).

Activations arrive scaled so that their mean squared norm is d_model; the SAE is trained and
evaluated on that scale, so the hyperparameters mean the same thing on every profile. On a
synthetic profile (synth, synth-16k, synth-tiny) they are the hidden vectors of a world of known
features (SAELens' SynthSAEBench), and the SAE is scored on how well it recovers those features.
"""

import argparse
import os
import time
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn as nn

import harness


@dataclass
class Config:
    """Every hyperparameter, recorded in final_info.json. The profile (chosen when the workspace
    was made) fixes the language model, the layer and the data."""
    dict_size: int | None = None      # SAE width; None: the profile's (tiny 512, cpu 1280, gemma-2-2b 16384)
    batch_size: int | None = None     # activations per step; None: the profile's (tiny 256, cpu 512, gemma-2-2b 2048)
    epochs: float | None = None       # passes over the training activations; None: the profile's (tiny 4, cpu 1, gemma-2-2b 1)
    steps: int | None = None          # SAE updates; None: epochs x cached tokens / batch_size
    learning_rate: float = 3e-3       # Adam's learning rate after warm-up
    decay_fraction: float = 0.2       # linear learning-rate decay to 0 over the last 20% of steps
    sparsity_penalty: float | None = None  # L1 coefficient on latent activations; None: the profile's (1.5 on language models)
    warmup_steps: int = 100           # linear learning-rate warm-up
    sparsity_warmup_steps: int = 200  # linear ramp of the L1 coefficient from 0
    seed: int = 0                     # initialisation and the order of training batches


class CustomSAE(nn.Module):
    """A ReLU sparse autoencoder: f = ReLU((x - b_dec) W_enc + b_enc), x_hat = f W_dec + b_dec."""

    def __init__(self, d_in, d_sae):
        super().__init__()
        self.d_in, self.d_sae = d_in, d_sae
        self.W_enc = nn.Parameter(torch.empty(d_in, d_sae))
        self.W_dec = nn.Parameter(torch.empty(d_sae, d_in))
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        # Init: random unit-norm decoder rows, encoder = decoder transpose (the "tied init" that
        # keeps latents from dying early).
        with torch.no_grad():
            W = torch.randn(d_sae, d_in)
            self.W_dec.copy_(W / W.norm(dim=1, keepdim=True))
            self.W_enc.copy_(self.W_dec.t())

    def encode(self, input_acts):
        pre_acts = (input_acts - self.b_dec) @ self.W_enc + self.b_enc
        return torch.relu(pre_acts)

    def decode(self, acts):
        return acts @ self.W_dec + self.b_dec

    def forward(self, acts, output_features=False):
        encoded = self.encode(acts)
        decoded = self.decode(encoded)
        if output_features:
            return decoded, encoded
        return decoded


class CustomTrainer:
    """Trains `self.ae` with reconstruction + L1 loss, Adam, warm-up and unit-norm decoder rows."""

    def __init__(self, cfg: Config, activation_dim, initial_b_dec):
        torch.manual_seed(cfg.seed)
        self.cfg = cfg
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.ae = CustomSAE(activation_dim, cfg.dict_size).to(self.device)
        with torch.no_grad():                # start the decoder bias at the data mean
            self.ae.b_dec.copy_(initial_b_dec.to(self.device))
        self.optimizer = torch.optim.Adam(self.ae.parameters(), lr=cfg.learning_rate, betas=(0.9, 0.999))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.lr_factor)
        self.step = 0

    def sparsity_coefficient(self):
        return self.cfg.sparsity_penalty * min(1.0, self.step / max(1, self.cfg.sparsity_warmup_steps))

    def lr_factor(self, step):
        """Linear warm-up, constant, then linear decay to 0 over the last `decay_fraction` of steps."""
        warmup = min(1.0, (step + 1) / max(1, self.cfg.warmup_steps))
        decay_steps = max(1, int(self.cfg.decay_fraction * self.cfg.steps)) if self.cfg.steps else 0
        decay = min(1.0, (self.cfg.steps - step) / decay_steps) if decay_steps else 1.0
        return max(0.0, min(warmup, decay))

    def loss(self, x):
        x_hat, f = self.ae(x, output_features=True)
        recon_loss = (x - x_hat).pow(2).sum(dim=-1).mean()
        l1_loss = f.abs().sum(dim=-1).mean()
        return recon_loss + self.sparsity_coefficient() * l1_loss

    @torch.no_grad()
    def _remove_parallel_decoder_grad(self):
        # With unit-norm decoder rows, only the gradient tangent to the sphere should move them.
        W, G = self.ae.W_dec, self.ae.W_dec.grad
        if G is not None:
            G -= (G * W).sum(dim=1, keepdim=True) * W

    @torch.no_grad()
    def _normalize_decoder(self):
        self.ae.W_dec /= self.ae.W_dec.norm(dim=1, keepdim=True).clamp(min=1e-8)

    def update(self, step, activations):
        self.step = step
        activations = activations.to(self.device)
        self.optimizer.zero_grad()
        loss = self.loss(activations)
        loss.backward()
        self._remove_parallel_decoder_grad()
        self.optimizer.step()
        self.scheduler.step()
        self._normalize_decoder()
        return loss.item()

    @property
    def config(self):
        return {"trainer_class": "CustomTrainer", "activation_dim": self.ae.d_in, **asdict(self.cfg),
                "device": str(self.device)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out_dir", type=str, required=True)
    out_dir = parser.parse_args().out_dir
    os.makedirs(out_dir, exist_ok=True)
    started = time.time()

    profile = harness.load_profile()
    store = harness.open_store(profile)
    cfg = Config()
    cfg = replace(cfg, dict_size=cfg.dict_size or profile.dict_size, batch_size=cfg.batch_size or profile.batch_size,
                  epochs=cfg.epochs or profile.epochs)
    if cfg.sparsity_penalty is None:
        cfg = replace(cfg, sparsity_penalty=profile.sparsity_penalty)
    print(f"profile {profile.name}{' (smoke)' if profile.smoke else ''}: {profile.model_name}, layers {profile.layers}")

    for layer in profile.layers:
        train_acts = store.training(layer)
        cfg = replace(cfg, steps=cfg.steps or max(1, int(cfg.epochs * len(train_acts) / cfg.batch_size)))
        steps = cfg.steps
        trainer = CustomTrainer(cfg, train_acts.shape[1], initial_b_dec=train_acts[:4096].mean(dim=0))
        print(f"training a {cfg.dict_size}-latent SAE on {profile.hook_name(layer)}: {steps} steps of {cfg.batch_size}")
        measured = harness.train(trainer, train_acts, steps=steps, batch_size=cfg.batch_size, seed=cfg.seed)
        facts = {**asdict(cfg), **measured}  # every hyperparameter goes into final_info.json's training facts
        torch.save(trainer.ae.state_dict(), os.path.join(out_dir, f"sae_layer_{layer}.pt"))
        # The harness evaluates what this exports, in its own process, after this script exits.
        harness.save_sae(trainer.ae, train_acts, out_dir, layer, facts)
    print(f"trained and saved in {time.time() - started:.1f}s; the harness evaluates next")


if __name__ == "__main__":
    main()
