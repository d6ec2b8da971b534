"""LCE factors: kernel against the reference and against hand-computed values."""

from __future__ import annotations

import pytest
import torch
from oracles import random_present

from mce import ops
from mce.ops.reference import lce_factors_reference
from mce.science.lce import dataset_factor, lce_factors, presence_counts


def test_matches_reference(device, seed):
    generator = torch.Generator().manual_seed(seed)
    num_modalities = 7
    present = random_present(generator, 29, num_modalities, probability=0.3)
    counts = torch.randint(1, 500, (num_modalities,), generator=generator)
    upper = torch.rand(num_modalities, generator=generator) * 29
    phi = torch.rand(29, num_modalities, generator=generator)
    args = (counts.to(device), 500, present.to(device), upper.to(device), phi.to(device))
    a, b = ops.lce_factors(*args)
    expected_a, expected_b = lce_factors_reference(counts, 500, present, upper, phi)
    torch.testing.assert_close(a.cpu(), expected_a)
    torch.testing.assert_close(b.cpu(), expected_b)


def test_hand_computed_values():
    # Table 6 style: U_A = 91 correct of 101 present, phi_A = 23.67 -> B_A = 0.667.
    present = torch.tensor([0b001] * 101 + [0b010] * 27)
    phi = torch.zeros(128, 3)
    phi[:101, 0] = 23.67 / 101
    phi[101:, 1] = 30.0 / 27  # phi above U: B masked to 0
    upper = torch.tensor([91.0, 20.0, 5.0])
    counts = torch.tensor([80, 50, 20])
    factors = lce_factors(counts, 100, present, upper, phi)
    torch.testing.assert_close(factors.b, torch.tensor([(91 - 23.67) / 101, 0.0, 0.0]))
    raw = torch.tensor([100 / 80, 100 / 50, 100 / 20])
    torch.testing.assert_close(factors.a, raw / raw.mean())
    torch.testing.assert_close(factors.weight, factors.a * factors.b)


def test_dataset_factor_and_counts():
    present = torch.tensor([0b01, 0b11, 0b11, 0b01])
    counts = presence_counts(present, 2)
    assert counts.tolist() == [4, 2]
    a = dataset_factor(counts, 4)
    torch.testing.assert_close(a, torch.tensor([1.0, 2.0]) / 1.5)


def test_batch_factor_refuses_non_finite_totals():
    from mce.science.lce import batch_factor

    counts = torch.tensor([2.0, 3.0])
    for upper, phi in (
        (torch.tensor([float("nan"), 1.0]), torch.zeros(2)),
        (torch.ones(2), torch.tensor([0.0, float("inf")], dtype=torch.float64)),
    ):
        with pytest.raises(ValueError, match="upper and phi must be finite"):
            batch_factor(upper, phi, counts)
