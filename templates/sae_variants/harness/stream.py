"""Training activations computed while the SAE trains, for budgets no disk can cache.

gemma-2-2b's budget is 50M tokens: as a cache that would be 50M x 2304 x 4 bytes = 460 GB. So, as
SAEBench's own trainers do (dictionary_learning's ActivationBuffer, SAELens' ActivationsStore), the
training process runs the language model itself: the cached pool first (`train_tokens` rows,
memory-mapped), then fresh activations of the token windows that `prepare` stored for it (the text
after the windows the pool and the held-out rows came from, so the held-out rows are never trained
on). The rows go through a shuffle buffer of `stream_buffer` rows, half of which is replaced by
fresh rows each time it has been read, so consecutive batches do not come from the same texts.

The training box needs only the stored token ids and the model's weights: no text, no network,
and nothing of the probe data. Rows are scaled by the pool's constant, like every cached row.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

POOL_CHUNK = 65536   # pool rows copied out of the memory map at a time


class ActivationStream:
    """Looks like the [stream_tokens, d_model] training tensor to experiment.py: `len`, `shape` and
    indexing within the cached pool (`acts[:4096].mean(0)`) work; the rows beyond the pool exist
    only as `harness.train` reads them, through `batches`."""

    def __init__(self, store, layer: int, pool: torch.Tensor, scale: float):
        self.store, self.layer, self.pool, self.scale = store, layer, pool, scale
        self.shape = torch.Size((store.profile.stream_tokens, pool.shape[1]))
        self.dtype, self.device = pool.dtype, pool.device

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index):
        if isinstance(index, slice):
            start, stop, _ = index.indices(len(self))
            beyond = max(start, stop) > len(self.pool)
        elif isinstance(index, int):      # a negative index counts from the stream's end, not the pool's
            beyond = not 0 <= (index + len(self) if index < 0 else index) < len(self.pool)
        else:
            index = torch.as_tensor(index)
            beyond = index.dtype != torch.bool and index.numel() > 0 and not (
                0 <= int(index.min()) and int(index.max()) < len(self.pool))
        if beyond:
            raise IndexError(f"only the first {len(self.pool)} of the {len(self)} training activations are "
                             "cached and can be indexed; the rest are computed as harness.train reads them "
                             "(train with harness.train, or index below the pool's size)")
        return self.pool[index]

    def __repr__(self) -> str:
        return (f"ActivationStream({len(self)} x {self.shape[1]}: {len(self.pool)} cached, "
                f"the rest computed by {self.store.profile.model_name} as training reads them)")

    # ------------------------------------------------------------------ rows
    def _rows(self) -> Iterator[torch.Tensor]:
        """Every row of the stream once, in order: the pool, then the fresh windows' activations."""
        for start in range(0, len(self.pool), POOL_CHUNK):
            yield self.pool[start:start + POOL_CHUNK].clone()
        windows = self.store.stream_windows(self.layer)
        step = self.store.profile.llm_batch_size
        for start in range(0, len(windows), step):
            yield self.store.window_activations(windows[start:start + step].long(), self.layer) * self.scale

    def batches(self, batch_size: int, seed: int = 0) -> Iterator[torch.Tensor]:
        """Shuffled [batch_size, d_model] batches, without end (the stream starts over when read)."""
        generator = torch.Generator().manual_seed(seed)
        size = max(2 * batch_size, min(self.store.profile.stream_buffer, len(self)))
        source = _Refill(self._rows)
        buffer = source.take(size)
        while True:
            order = torch.randperm(len(buffer), generator=generator)
            read = max(batch_size, (len(buffer) // 2) // batch_size * batch_size)
            for start in range(0, read, batch_size):
                yield buffer[order[start:start + batch_size]]
            buffer = torch.cat([buffer[order[read:]], source.take(size - (len(buffer) - read))])


class _Refill:
    """Rows from `rows()` in exact counts; when it runs out it is started again (the next pass)."""

    def __init__(self, rows):
        self.rows, self.it = rows, rows()
        self.left: torch.Tensor | None = None   # the unused end of the last chunk

    def take(self, n: int) -> torch.Tensor:
        out, have, restarted = [], 0, False
        while have < n:
            chunk, self.left = (self.left, None) if self.left is not None else (next(self.it, None), None)
            if chunk is None:
                if restarted:
                    raise RuntimeError("the training stream has no rows")
                self.it, restarted = self.rows(), True
                continue
            restarted = False
            if have + len(chunk) > n:
                chunk, self.left = chunk[: n - have], chunk[n - have:]
            out.append(chunk)
            have += len(chunk)
        return torch.cat(out)
