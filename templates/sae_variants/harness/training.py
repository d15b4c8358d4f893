"""The training driver: feeds shuffled batches of training activations to `trainer.update(step, batch)`.

experiment.py decides what the SAE and its loss are; this loop decides what data it sees, logs
progress, stops on a NaN loss, and reports the facts that go into final_info.json.
"""

from __future__ import annotations

import math
import time

import torch


class TrainingError(RuntimeError):
    pass


def _batches(activations, batch_size: int, seed: int):
    """Shuffled batches without end: a fresh order each pass over a tensor; a stream shuffles its own."""
    if hasattr(activations, "batches"):      # harness.stream.ActivationStream
        yield from activations.batches(batch_size, seed)
        return
    n = len(activations)
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(n, generator=generator)
        for position in range(0, max(1, n - batch_size + 1), batch_size):
            yield activations[order[position:position + batch_size]]


def train(trainer, activations: torch.Tensor, *, steps: int, batch_size: int, seed: int = 0,
          log_every: int | None = None, log=print) -> dict:
    """Run `steps` updates; returns training_steps, final_loss, tokens, seconds."""
    if steps <= 0:
        raise TrainingError(f"steps must be positive, got {steps}: an SAE trained for 0 steps is not a result")
    device = next(trainer.ae.parameters()).device
    batches = _batches(activations, batch_size, seed)
    log_every = log_every or max(1, steps // 10)
    started = time.time()
    final_loss = float("nan")
    losses: list[float] = []
    for step in range(steps):
        batch = next(batches).to(device)
        trainer.update(step, batch)
        if step % log_every == 0 or step == steps - 1:
            with torch.no_grad():
                loss = trainer.loss(batch)
            final_loss = float(loss if not isinstance(loss, (tuple, list)) else loss[0])
            losses.append(final_loss)
            if not math.isfinite(final_loss):
                raise TrainingError(f"loss is {final_loss} at step {step}: training diverged")
            log(f"step {step:>6d}/{steps}  loss {final_loss:.4f}  ({time.time() - started:.1f}s)")
    seconds = time.time() - started
    return {"training_steps": steps, "final_loss": final_loss, "tokens": steps * batch_size,
            "seconds": round(seconds, 2), "tokens_per_second": round(steps * batch_size / max(seconds, 1e-9)),
            "loss_curve": losses}
