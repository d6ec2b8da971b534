"""Independent random streams derived from a run's seed.

Every random draw of a run that must not be correlated with another (the missing-modality
masks, each epoch's data order, the upper-bound models' held-out splits) takes a generator of
its own, seeded from ``(seed, purpose, *keys)`` through :class:`numpy.random.SeedSequence`.
Seeding two draws with the same integer (``manual_seed(seed)`` for the masks and
``manual_seed(seed + epoch)`` for the order) would make epoch 0's order the permutation that
drew the masks.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

__all__ = ["stream_seed", "stream"]


def stream_seed(seed: int, purpose: str, *keys: int) -> int:
    """A 63-bit seed for the stream ``(seed, purpose, *keys)``, independent of every other
    stream's.

    Args:
        seed: the run's seed (a non-negative int).
        purpose: what the stream draws ("masks", "order", ...).
        keys: further non-negative ints that tell streams of one purpose apart (an epoch).

    Raises:
        ValueError: a negative seed or key.
    """
    for value in (seed, *keys):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"seeds and stream keys must be non-negative ints, got {value!r}")
    entropy = [int(seed), zlib.crc32(purpose.encode()), *(int(key) for key in keys)]
    state = np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]
    return int(state) >> 1


def stream(seed: int, purpose: str, *keys: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded by :func:`stream_seed`."""
    return torch.Generator().manual_seed(stream_seed(seed, purpose, *keys))
