"""Seeded per-modality missing masks (imbalanced missing rates)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import permutations

import torch
from torch import Tensor

from mce.data.dataset import MultimodalData

# The paper's six settings a-f: the permutations of (0.2, 0.5, 0.8) over three modalities.
PRESETS: dict[str, tuple[float, ...]] = {
    name: rates for name, rates in zip("abcdef", permutations((0.2, 0.5, 0.8)))
}


@dataclass(frozen=True)
class MaskedSplit:
    """A split after masking: the kept samples, their positions in the original split, and how
    many samples were dropped because every modality was missing."""

    data: MultimodalData
    kept: Tensor
    dropped: int


def parse_missing_rates(text: str, num_modalities: int) -> tuple[float, ...]:
    """'a'..'f' (3 modalities) or comma-separated rates in [0, 1), one per modality."""
    if text in PRESETS:
        rates = PRESETS[text]
    else:
        try:
            rates = tuple(float(part) for part in text.split(","))
        except ValueError as error:
            raise ValueError(
                f"missing rates {text!r} are not comma-separated numbers or a preset "
                f"({', '.join(PRESETS)})"
            ) from error
    if len(rates) != num_modalities:
        raise ValueError(f"{len(rates)} missing rates given for {num_modalities} modalities")
    for rate in rates:
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"missing rate {rate} is outside [0, 1)")
    return rates


def draw_presence(num_samples: int, rates: Sequence[float], seed: int) -> Tensor:
    """Presence bitmasks [N]: for modality m exactly round(N rate_m) samples, chosen at random
    (seeded), miss it. Samples may end up with no modality: see :func:`apply_missing_rates`."""
    generator = torch.Generator().manual_seed(seed)
    present = torch.zeros(num_samples, dtype=torch.int64)
    for m, rate in enumerate(rates):
        missing = torch.randperm(num_samples, generator=generator)[: round(num_samples * rate)]
        column = torch.ones(num_samples, dtype=torch.int64)
        column[missing] = 0
        present |= column << m
    return present


def apply_missing_rates(data: MultimodalData, rates: Sequence[float], seed: int) -> MaskedSplit:
    """Mask a split with per-modality missing rates and drop the samples left with nothing."""
    present = draw_presence(len(data), rates, seed) & data.present
    kept = torch.nonzero(present != 0).flatten()
    masked = data.with_presence(present).subset(kept)
    return MaskedSplit(masked, kept, len(data) - kept.shape[0])
