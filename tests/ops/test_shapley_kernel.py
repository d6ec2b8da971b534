"""Shapley aggregation: brute-force oracle (Eq. 5), axioms, reference, Monte Carlo behaviour."""

from __future__ import annotations

import pytest
import torch
from oracles import random_game, random_present, table_lookup

from mce import ops
from mce.ops.reference import shapley_brute_force, shapley_from_rows_reference
from mce.science.shapley import coalition_plan, plan_shapley, shapley_values


@pytest.mark.parametrize("num_modalities", range(1, 9))
def test_exact_matches_brute_force_oracle(seed, num_modalities):
    generator = torch.Generator().manual_seed(seed)
    present = random_present(generator, 11, num_modalities)
    table = random_game(generator, present, num_modalities)
    phi = shapley_values(present, table)
    oracle = shapley_brute_force(present.tolist(), lambda n, s: float(table[n, s]), num_modalities)
    torch.testing.assert_close(phi, torch.tensor(oracle), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["exact", "mc"])
def test_kernel_matches_reference(device, seed, method):
    generator = torch.Generator().manual_seed(seed)
    num_modalities = 9
    present = random_present(generator, 37, num_modalities).to(device)
    plan = coalition_plan(present, num_modalities, method=method, k=23, seed=seed)
    v = torch.rand(plan.num_rows, generator=generator).to(device)
    phi = plan_shapley(plan, v)
    expected = shapley_from_rows_reference(
        plan.rows.cpu(),
        v.cpu(),
        present.cpu(),
        num_modalities,
        None if plan.coef is None else plan.coef.cpu(),
    )
    torch.testing.assert_close(phi.cpu(), expected, rtol=1e-5, atol=1e-6)


def test_kernel_matches_reference_on_arbitrary_coefficients(device, seed):
    generator = torch.Generator().manual_seed(seed)
    present = random_present(generator, 19, 5).to(device)
    rows = ops.exact_plan(present, 5)
    v = torch.randn(rows.shape[0], generator=generator).to(device)
    coef = torch.randn(rows.shape[0], 5, generator=generator).to(device)
    phi = ops.shapley_from_rows(rows, v, present, 5, coef)
    expected = shapley_from_rows_reference(rows.cpu(), v.cpu(), present.cpu(), 5, coef.cpu())
    torch.testing.assert_close(phi.cpu(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("num_modalities", [1, 3, 6, 10])
def test_efficiency_and_absent_modalities(seed, num_modalities):
    generator = torch.Generator().manual_seed(seed)
    present = random_present(generator, 17, num_modalities)
    table = random_game(generator, present, num_modalities)
    phi = shapley_values(present, table)
    grand = table[torch.arange(present.shape[0]), present]
    torch.testing.assert_close(phi.sum(1), grand, rtol=1e-5, atol=1e-5)
    absent = ~((present[:, None] >> torch.arange(num_modalities)) & 1).bool()
    assert (phi[absent] == 0).all(), "absent modalities must get exactly 0"


def test_symmetry(seed):
    # v depends on modalities 0 and 1 only through how many of them are in S: they are symmetric.
    generator = torch.Generator().manual_seed(seed)
    present = torch.full((5,), 0b1111)
    by_count = torch.rand(5, 3, 4, generator=generator)  # [n, |S & {0,1}|, S >> 2]
    subsets = torch.arange(16)
    pair = (subsets & 1) + ((subsets >> 1) & 1)
    table = by_count[:, pair, subsets >> 2]
    table[:, 0] = 0.0
    phi = shapley_values(present, table)
    torch.testing.assert_close(phi[:, 0], phi[:, 1], rtol=1e-5, atol=1e-6)


def test_dummy_modality_gets_zero(seed):
    generator = torch.Generator().manual_seed(seed)
    num_modalities = 5
    present = random_present(generator, 9, num_modalities) | 0b00100
    table = random_game(generator, present, num_modalities)
    subsets = torch.arange(32)
    table = table[:, subsets & ~0b00100]  # v(S + 2) = v(S): modality 2 is a dummy
    phi = shapley_values(present, table)
    torch.testing.assert_close(phi[:, 2], torch.zeros(9), atol=1e-6, rtol=0)


def test_additive_game_gives_each_modality_its_own_value(seed):
    generator = torch.Generator().manual_seed(seed)
    weights = torch.rand(6, 4, generator=generator)
    present = random_present(generator, 6, 4)
    subsets = torch.arange(16)
    bits = ((subsets[:, None] >> torch.arange(4)) & 1).float()  # [16, 4]
    table = weights @ bits.T
    phi = shapley_values(present, table)
    expected = weights * ((present[:, None] >> torch.arange(4)) & 1)
    torch.testing.assert_close(phi, expected, rtol=1e-5, atol=1e-6)


def test_monte_carlo_error_shrinks_as_k_grows(seed):
    generator = torch.Generator().manual_seed(seed)
    num_modalities = 6
    present = random_present(generator, 24, num_modalities, probability=0.8)
    table = random_game(generator, present, num_modalities)
    exact = shapley_values(present, table)
    errors = {}
    for k in (4, 64, 1024):
        estimates = [
            shapley_values(present, table, method="mc", k=k, seed=seed + r) for r in range(4)
        ]
        errors[k] = torch.stack([(e - exact).pow(2).mean() for e in estimates]).mean().item()
    assert errors[64] < errors[4] / 4
    assert errors[1024] < errors[64] / 4


def test_monte_carlo_is_exact_for_efficiency(seed):
    # Every permutation telescopes to v(A_n): the MC estimate is efficient for any K.
    generator = torch.Generator().manual_seed(seed)
    present = random_present(generator, 15, 7)
    table = random_game(generator, present, 7)
    phi = shapley_values(present, table_lookup(table), 7, method="mc", k=3, seed=seed)
    torch.testing.assert_close(phi.sum(1), table[torch.arange(15), present], rtol=1e-5, atol=1e-5)


def test_monte_carlo_equals_exact_when_every_order_is_seen():
    # With 2 modalities and both orders sampled, the permutation estimate is the exact value
    # weighted by the share of each order; K large makes it close.
    present = torch.tensor([0b11])
    table = torch.tensor([[0.0, 0.2, 0.5, 1.0]])
    phi = shapley_values(present, table, method="mc", k=20000, seed=3)
    torch.testing.assert_close(phi, shapley_values(present, table), atol=0.01, rtol=0)
