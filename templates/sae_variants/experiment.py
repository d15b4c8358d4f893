"""
Train a sparse autoencoder (SAE) on a language model's residual stream, then evaluate it with
SAEBench-style sparse probing and core metrics. Run as:

    python experiment.py --out_dir=run_1

This file is the experiment: the SAE (`CustomSAE`), how it is trained (`CustomTrainer`) and the
hyperparameters below are yours to change. The harness (`harness/`, which you cannot edit) supplies
the cached activations and drives the training loop (it calls `trainer.update(step, batch)` for every
step); `harness.save_sae` exports `trainer.ae.encode`/`decode` with torch.export. After this script
exits, the harness evaluates the exported SAE in its own process and writes `out_dir/final_info.json`;
this script must not write that file. encode/decode must be plain tensor code that works for any
batch size (no `.item()` or Python `if` on tensor values there).

Activations arrive scaled so that their mean squared norm is d_model; the SAE is trained and
evaluated on that scale, so the hyperparameters below mean the same thing on every profile.
"""

import argparse
import os
import time
from collections import namedtuple

import torch
import torch.nn as nn

import harness

# -----------------------------------------------------------------------------
# hyperparameters (the profile, chosen when the workspace was made, fixes model, layer and data)
dict_size = None           # SAE width; None: the profile's default (tiny 512, cpu 2560, gemma-2-2b 16384)
batch_size = None          # activations per step; None: the profile's default (tiny 256, cpu 512, gemma-2-2b 2048)
epochs = 4                 # passes over the cached training activations
learning_rate = 3e-3
sparsity_penalty = 1.5     # L1 coefficient on latent activations (activations have mean squared norm d_model)
warmup_steps = 100         # linear learning-rate warm-up
sparsity_warmup_steps = 200  # linear ramp of the L1 coefficient from 0
seed = 0
# -----------------------------------------------------------------------------
# every knob above is recorded with the result (nanoGPT's habit)
HYPERPARAMETERS = [k for k, v in dict(globals()).items() if not k.startswith("_") and isinstance(v, (int, float, str, type(None)))]


class CustomSAE(nn.Module):
    """A ReLU sparse autoencoder: f = ReLU((x - b_dec) W_enc + b_enc), x_hat = f W_dec + b_dec."""

    def __init__(self, d_in, d_sae, hook_layer, model_name="", hook_name=None):
        super().__init__()
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
        self.d_in, self.d_sae = d_in, d_sae
        self.hook_layer = hook_layer
        self.hook_name = hook_name or f"blocks.{hook_layer}.hook_resid_post"
        self.model_name = model_name

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

    def __init__(self, activation_dim, dict_size, lr=3e-3, l1_penalty=1.5, warmup_steps=100,
                 sparsity_warmup_steps=200, seed=0, device=None, layer=None, lm_name=None, hook_name=None,
                 initial_b_dec=None):
        torch.manual_seed(seed)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.ae = CustomSAE(activation_dim, dict_size, hook_layer=layer, model_name=lm_name,
                            hook_name=hook_name).to(self.device)
        if initial_b_dec is not None:        # start the decoder bias at the data mean
            with torch.no_grad():
                self.ae.b_dec.copy_(initial_b_dec.to(self.device))
        self.lr = lr
        self.l1_penalty = l1_penalty
        self.warmup_steps = warmup_steps
        self.sparsity_warmup_steps = sparsity_warmup_steps
        self.optimizer = torch.optim.Adam(self.ae.parameters(), lr=lr, betas=(0.9, 0.999))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: min(1.0, (step + 1) / max(1, self.warmup_steps)))
        self.step = 0

    def sparsity_coefficient(self):
        return self.l1_penalty * min(1.0, self.step / max(1, self.sparsity_warmup_steps))

    def loss(self, x, logging=False):
        x_hat, f = self.ae(x, output_features=True)
        recon_loss = (x - x_hat).pow(2).sum(dim=-1).mean()
        l1_loss = f.abs().sum(dim=-1).mean()
        loss = recon_loss + self.sparsity_coefficient() * l1_loss
        if not logging:
            return loss
        return namedtuple("LossLog", ["x", "x_hat", "f", "losses"])(
            x, x_hat, f, {"loss": loss.item(), "recon_loss": recon_loss.item(), "l1_loss": l1_loss.item(),
                          "l0": (f != 0).float().sum(dim=-1).mean().item()})

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
        return {"trainer_class": "CustomTrainer", "activation_dim": self.ae.d_in, "dict_size": self.ae.d_sae,
                "lr": self.lr, "l1_penalty": self.l1_penalty, "warmup_steps": self.warmup_steps,
                "sparsity_warmup_steps": self.sparsity_warmup_steps, "device": str(self.device)}


def run_sae_training(layer, activations, profile, out_dir, dict_size, batch_size, epochs, learning_rate,
                     sparsity_penalty, warmup_steps, sparsity_warmup_steps, seed):
    """Build the trainer, let the harness drive it over the activations; returns (trainer, facts)."""
    trainer = CustomTrainer(
        activation_dim=activations.shape[1], dict_size=dict_size, lr=learning_rate, l1_penalty=sparsity_penalty,
        warmup_steps=warmup_steps, sparsity_warmup_steps=sparsity_warmup_steps, seed=seed, layer=layer,
        lm_name=profile.model_name, hook_name=profile.hook_name(layer),
        initial_b_dec=activations[:4096].mean(dim=0))
    steps = max(1, int(epochs * len(activations) / batch_size))
    print(f"training a {dict_size}-latent SAE on {profile.hook_name(layer)}: {steps} steps of {batch_size}")
    facts = harness.train(trainer, activations, steps=steps, batch_size=batch_size, seed=seed)
    facts.update({"learning_rate": learning_rate, "sparsity_penalty": sparsity_penalty, "batch_size": batch_size,
                  "epochs": epochs, "warmup_steps": warmup_steps, "trainer_config": trainer.config})
    torch.save(trainer.ae.state_dict(), os.path.join(out_dir, f"sae_layer_{layer}.pt"))
    return trainer, facts


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out_dir", type=str, required=True)
    out_dir = parser.parse_args().out_dir
    os.makedirs(out_dir, exist_ok=True)
    started = time.time()

    profile = harness.load_profile()
    store = harness.ActivationStore(profile)
    print(f"profile {profile.name}{' (smoke)' if profile.smoke else ''}: {profile.model_name}, layers {profile.layers}")

    for layer in profile.layers:
        train_acts = store.training(layer)
        trainer, facts = run_sae_training(
            layer, train_acts, profile, out_dir, dict_size=dict_size or profile.dict_size,
            batch_size=batch_size or profile.batch_size, epochs=epochs, learning_rate=learning_rate,
            sparsity_penalty=sparsity_penalty, warmup_steps=warmup_steps,
            sparsity_warmup_steps=sparsity_warmup_steps, seed=seed)
        facts["hyperparameters"] = {k: globals()[k] for k in HYPERPARAMETERS if k in globals()}
        # The harness evaluates what this exports, in its own process, after this script exits.
        harness.save_sae(trainer.ae, train_acts, out_dir, layer, facts)
    print(f"trained and saved in {time.time() - started:.1f}s; the harness evaluates next")


if __name__ == "__main__":
    main()
