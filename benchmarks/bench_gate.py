"""How long the pre-run gate takes on an experiment.py of about 700 lines (prints, asserts nothing).

    .venv/bin/python benchmarks/bench_gate.py

Uses templates/sae_variants/experiment.py when it exists and has 500+ lines, else a synthetic file
built from a realistic SAE + trainer section repeated until it is ~700 lines long.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent import checks  # noqa: E402
from agent import edits  # noqa: E402
from agent.edits import apply_reply  # noqa: E402

HEADER = """\
import os
import json
import argparse

import numpy as np
import torch
import torch.nn as nn

from harness import evaluate_sae, load_activations
"""

SECTION = '''

class CustomSAE{i}(nn.Module):
    """Implementation of a Custom Sparse Autoencoder."""

    def __init__(self, d_in: int, d_sae: int, hook_layer: int, model_name: str = "pythia-70m"):
        super().__init__()
        self.W_enc = nn.Parameter(torch.zeros(d_in, d_sae))
        self.W_dec = nn.Parameter(torch.zeros(d_sae, d_in))
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.dict_size = d_sae
        self.cfg = {{"d_in": d_in, "d_sae": d_sae, "hook_layer": hook_layer, "model_name": model_name}}

    def encode(self, input_acts):
        pre_acts = (input_acts - self.b_dec) @ self.W_enc + self.b_enc
        acts = torch.relu(pre_acts)
        return acts

    def decode(self, acts):
        return (acts @ self.W_dec) + self.b_dec

    def forward(self, acts, output_features=False):
        encoded = self.encode(acts)
        decoded = self.decode(encoded)
        if output_features:
            return decoded, encoded
        return decoded


class Trainer{i}:
    """Trainer for Custom Sparse Autoencoder using L1 regularization."""

    def __init__(self, activation_dim=512, dict_size=4096, lr=1e-3, l1_penalty=1e-1,
                 warmup_steps=1000, resample_steps=None, seed=None, device="cpu"):
        self.seed = seed
        if seed is not None:
            torch.manual_seed(seed)
        self.ae = CustomSAE{i}(d_in=activation_dim, d_sae=dict_size, hook_layer=0)
        self.lr = lr
        self.l1_penalty = l1_penalty
        self.warmup_steps = warmup_steps
        self.device = device
        self.ae.to(self.device)
        self.resample_steps = resample_steps
        if self.resample_steps is not None:
            self.steps_since_active = torch.zeros(self.ae.dict_size, dtype=int)
        else:
            self.steps_since_active = None
        self.optimizer = torch.optim.Adam(self.ae.parameters(), lr=lr)

        def warmup_fn(step):
            return min(step / warmup_steps, 1.0)

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda=warmup_fn)

    def loss(self, x, logging=False, **kwargs):
        x_hat, f = self.ae(x, output_features=True)
        l2_loss = torch.linalg.norm(x - x_hat, dim=-1).mean()
        l1_loss = f.norm(p=1, dim=-1).mean()
        if self.steps_since_active is not None:
            deads = (f == 0).all(dim=0)
            self.steps_since_active[deads] += 1
            self.steps_since_active[~deads] = 0
        return l2_loss + self.l1_penalty * l1_loss

    def update(self, step, activations):
        activations = activations.to(self.device)
        self.optimizer.zero_grad()
        loss = self.loss(activations)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return loss.item()


def run_{i}(layer, out_dir, num_tokens=100_000):
    os.makedirs(out_dir, exist_ok=True)
    activations = load_activations("pythia-70m", layer, num_tokens)
    trainer = Trainer{i}(activation_dim=activations.shape[-1])
    losses = [trainer.update(s, b) for s, b in enumerate(activations.split(256))]
    with open(os.path.join(out_dir, "final_info_{i}.json"), "w") as f:
        json.dump({{"final_loss": float(np.mean(losses[-10:])), **evaluate_sae(trainer.ae)}}, f)
    return trainer.ae
'''

# The seed 001 edit, renamed to the synthetic trainer: a second __init__ holding a placeholder.
EDIT = '''experiment.py
```python
<<<<<<< SEARCH
    def loss(self, x, logging=False, **kwargs):
        x_hat, f = self.ae(x, output_features=True)
=======
    def __init__(self, seed=None, initial_tau=1.0):
        # Existing init code...
        self.tau = initial_tau

    def loss(self, x, logging=False, **kwargs):
        x_hat, f = self.ae(x, output_features=True)
        self.tau *= 0.999
>>>>>>> REPLACE
```
'''

FAILING = '''experiment.py
```python
<<<<<<< SEARCH
        self.l1_penalty = l1_penalty * 2
        self.warmup_steps = warmup_steps
        self.device = device
=======
        self.device = device
>>>>>>> REPLACE
```
'''


def experiment_source() -> tuple[str, str]:
    template = ROOT / "templates" / "sae_variants" / "experiment.py"
    if template.exists() and len(template.read_text().splitlines()) >= 500:
        return template.read_text(), str(template)
    text, i = HEADER, 0
    while len(text.splitlines()) < 700:
        text += SECTION.format(i=i)
        i += 1
    return text, "synthetic"


def timed(fn, repeat: int = 20) -> tuple[float, float]:
    """(median, max) wall time in milliseconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), max(times)


def cold(fn):
    """Run `fn` with the parse/pyflakes caches empty, as for a file seen for the first time."""
    def run():
        checks.clear_caches()
        fn()
    return run


def main() -> None:
    old, origin = experiment_source()
    workspace = Path(tempfile.mkdtemp(prefix="bench-gate-"))
    (workspace / "harness.py").write_text("")
    changed, _ = apply_reply(EDIT, {"experiment.py": old})
    new = changed.get("experiment.py", old)
    other_python = workspace / "python"
    other_python.symlink_to(sys.executable)  # a different path: forces the one-subprocess import check

    print(f"file: {origin}, {len(old.splitlines())} lines; edited: {len(new.splitlines())} lines")
    blocking = sum(f.blocking for f in checks.check_source(new, old, search_path=workspace))
    print(f"findings on the placeholder edit: {blocking} blocking")
    rows = [
        ("gate, no baseline (cold caches)", cold(lambda: checks.check_source(old, search_path=workspace))),
        ("gate, edit vs old (cold caches)", cold(lambda: checks.check_source(new, old, search_path=workspace))),
        ("gate, edit vs old (old cached)", lambda: checks.check_source(new, old, search_path=workspace)),
        ("gate, imports via another python", cold(lambda: checks.check_source(
            new, old, search_path=workspace, python=str(other_python)))),
        ("apply_reply, one block (match)", lambda: apply_reply(EDIT, {"experiment.py": old})),
        ("apply_reply, failed block + closest lines", lambda: apply_reply(FAILING, {"experiment.py": old})),
    ]
    # issue 9: a SEARCH that matches nothing in a 4,000-line file took 146 s in closest_lines.
    big = "\n".join(f"    value_{i} = compute(x, {i}) + offset_{i % 7}" for i in range(4000)) + "\n"
    unmatched = "".join(f"        missing_{i} = other(y, {i})\n" for i in range(60))
    rows.append(("closest_lines, 4,000-line file, 60-line SEARCH", lambda: edits.closest_lines(unmatched, big)))
    for name, fn in rows:
        median, worst = timed(fn, repeat=5 if "another python" in name or "4,000" in name else 20)
        print(f"{name:48s} median {median:7.1f} ms   max {worst:7.1f} ms")


if __name__ == "__main__":
    main()
