"""Epochs over the unique data: reshuffled each epoch, reproducible at any step."""

from __future__ import annotations

import math

import numpy as np

from scaling.errors import DataError


class EpochBatches:
    """Iterate (x, y) batches over `tokens` for exactly `total_tokens` training tokens (rounded up to
    whole steps), as whole epochs over the unique data, reshuffled each epoch.

    A batch is a pure function of its step, so a run resumed at any step sees the same data.
    ``total_tokens=None`` iterates without end.
    """

    def __init__(self, tokens: np.ndarray, seq_len: int, batch_size: int, seed: int,
                 start_step: int = 0, total_tokens: int | None = None):
        self.tokens, self.seq_len, self.batch_size = tokens, int(seq_len), int(batch_size)
        self.seed, self.start_step, self.total_tokens = int(seed), int(start_step), total_tokens
        self._n = (len(tokens) - 1) // self.seq_len
        if self._n < self.batch_size:
            raise DataError(f"too little unique data for one batch: {len(tokens)} tokens make {max(self._n, 0)} "
                            f"sequences of {self.seq_len} tokens, but a batch needs {self.batch_size}")
        self._permutations: dict[int, np.ndarray] = {}

    @property
    def sequences_per_epoch(self) -> int:
        return self._n

    @property
    def steps(self) -> int | None:
        """Steps that cover ``total_tokens`` (rounded up), or None for an endless iterator."""
        if self.total_tokens is None:
            return None
        return math.ceil(self.total_tokens / (self.batch_size * self.seq_len))

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._permutations:
            if len(self._permutations) >= 4:
                self._permutations.pop(next(iter(self._permutations)))
            self._permutations[epoch] = np.random.default_rng((self.seed, epoch)).permutation(self._n)
        return self._permutations[epoch]

    def sequence_indices(self, step: int) -> np.ndarray:
        """Which sequences form batch ``step``: consecutive slots in the stream of shuffled epochs."""
        slots = np.arange(step * self.batch_size, (step + 1) * self.batch_size, dtype=np.int64)
        epochs, positions = np.divmod(slots, self._n)
        out = np.empty(self.batch_size, dtype=np.int64)
        for epoch in np.unique(epochs):
            mask = epochs == epoch
            out[mask] = self._permutation(int(epoch))[positions[mask]]
        return out

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        offsets = self.sequence_indices(step)[:, None] * self.seq_len + np.arange(self.seq_len + 1)
        window = np.asarray(self.tokens[offsets.ravel()], dtype=np.int64).reshape(self.batch_size, self.seq_len + 1)
        return window[:, :-1], window[:, 1:]

    def epochs_at(self, step: int) -> float:
        """Passes over the unique data completed after ``step`` steps."""
        return step * self.batch_size / self._n

    def __len__(self) -> int:
        if self.steps is None:
            raise TypeError("an EpochBatches without total_tokens has no length")
        return max(0, self.steps - self.start_step)

    def __iter__(self):
        step = self.start_step
        while self.steps is None or step < self.steps:
            yield self.batch(step)
            step += 1
