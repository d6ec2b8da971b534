"""Test helpers: random presence masks and random cooperative games with known structure."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch


def random_present(
    generator: torch.Generator, num_samples: int, num_modalities: int, probability: float = 0.6
) -> torch.Tensor:
    """Random presence bitmasks with every sample holding at least one modality."""
    presence = torch.rand(num_samples, num_modalities, generator=generator) < probability
    forced = torch.randint(0, num_modalities, (num_samples,), generator=generator)
    presence[torch.arange(num_samples), forced] = True
    bits = 1 << torch.arange(num_modalities, dtype=torch.int64)
    return (presence.to(torch.int64) * bits).sum(1)


def random_game(
    generator: torch.Generator, present: torch.Tensor, num_modalities: int
) -> torch.Tensor:
    """A random utility table [N, 2^M] in [0, 1] with v(empty) = 0."""
    table = torch.rand(present.shape[0], 1 << num_modalities, generator=generator)
    table[:, 0] = 0.0
    return table


def table_lookup(table: torch.Tensor):
    """utility(rows) reading v_n(S) from a table."""
    return lambda rows: table[rows[:, 0], rows[:, 1]]


def random_digit_inputs(generator: torch.Generator, num_samples: int) -> dict[str, torch.Tensor]:
    """Inputs shaped like the bundled digits task: 8x8 images and 13x16 MFCC maps."""
    return {
        "image": torch.rand(num_samples, 1, 8, 8, generator=generator),
        "audio": torch.randn(num_samples, 1, 13, 16, generator=generator),
    }


def shapley_by_permutations(
    present: list[int], utility: Callable[[int, int], float], num_modalities: int
) -> list[list[float]]:
    """Per-sample Shapley values (Eq. 5) as m's marginal contribution averaged over every order
    in which sample n's modalities can join: no subset weights, so independent of the weighted
    sum in mce.ops.reference. ``utility(n, subset_mask)`` is v_n(S); v_n(empty) = 0."""
    phi = []
    for n, mask in enumerate(present):
        members = [m for m in range(num_modalities) if (mask >> m) & 1]
        row = [0.0] * num_modalities
        for order in itertools.permutations(members):
            coalition, before = 0, 0.0
            for m in order:
                coalition |= 1 << m
                after = utility(n, coalition)
                row[m] += (after - before) / math.factorial(len(members))
                before = after
        phi.append(row)
    return phi
