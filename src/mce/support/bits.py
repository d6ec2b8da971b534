"""Modality bitmasks in torch: the Python twin of ``csrc/include/mce/bits.h``.

A sample's ``present`` mask is an int64 with bit m set when modality m is present (M <= 31); a
row's subset S is a mask of the same kind. The boolean ``presence`` matrix is Tensor[N, M] with
``presence[n, m]`` true when modality m is present in sample n. Nothing here validates: callers
that take user input check it first (see :func:`mce.science.shapley.presence_to_mask`).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "MAX_MODALITIES",
    "has_modality",
    "modality_bits",
    "popcount",
    "presence_matrix",
    "present_masks",
    "samples_with_modality",
    "shapley_weight",
]

MAX_MODALITIES = 31
"""Largest number of modalities a presence bitmask can carry (``kMaxModalities`` in bits.h)."""


def popcount(masks: Tensor) -> Tensor:
    """Number of set bits of each int64 mask in [0, 2^32) (branch-free SWAR count, as bits.h)."""
    x = masks - ((masks >> 1) & 0x55555555)
    x = (x & 0x33333333) + ((x >> 2) & 0x33333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F
    return ((x * 0x01010101) >> 24) & 0xFF


def modality_bits(num_modalities: int, device: torch.device | str | None = None) -> Tensor:
    """Tensor[M] int64 ``[1, 2, 4, ..., 2^(M-1)]``: the bit of each modality."""
    return 1 << torch.arange(num_modalities, device=device, dtype=torch.int64)


def presence_matrix(present: Tensor, num_modalities: int) -> Tensor:
    """Masks Tensor[...] int64 -> presence Tensor[..., M] bool (bit m of each mask)."""
    return (present[..., None] & modality_bits(num_modalities, present.device)) != 0


def present_masks(presence: Tensor) -> Tensor:
    """Presence Tensor[N, M] bool (or 0/1) -> masks Tensor[N] int64 (M <= 31)."""
    bits = modality_bits(presence.shape[-1], presence.device)
    return (presence.to(torch.int64) * bits).sum(dim=-1)


def has_modality(present: Tensor, m: int) -> Tensor:
    """Tensor[N] bool: which masks have bit m set."""
    return ((present >> m) & 1) != 0


def samples_with_modality(present: Tensor, m: int) -> Tensor:
    """Tensor[K] int64: indices (increasing) of the samples whose mask has modality m present."""
    return torch.nonzero(has_modality(present, m)).flatten()


def shapley_weight(s: Tensor | int, a: Tensor | int) -> Tensor:
    """Exact Shapley weight ``w(s, a) = s! (a - s - 1)! / a!`` (Eq. 5), float64, broadcasting.

    The weight of a coalition of s players out of a (0 <= s < a); the Python twin of
    ``csrc/include/mce/shapley_weights.h`` and the one place Python writes it, on the floor so
    that the Shapley code, the pure-torch references and the authors' formula all read it
    from here.
    """
    s = torch.as_tensor(s, dtype=torch.float64)
    a = torch.as_tensor(a, dtype=torch.float64, device=s.device)
    return torch.exp(torch.lgamma(s + 1) + torch.lgamma(a - s) - torch.lgamma(a + 1))
