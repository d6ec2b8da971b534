"""The authors' code's formulas (mce.methods.official), kept apart from the paper's path."""

from __future__ import annotations

import pytest
import torch
from oracles import random_game, random_present, table_lookup

from mce.methods import MCEConfig
from mce.methods.official import (
    official_average_rows,
    official_batch_shapley,
    official_contributions,
)
from mce.science.rce import aux_loss, subset_loss
from mce.science.shapley import coalition_plan, shapley_values


def test_official_formula_hand_computed():
    # V({0}) = 3, V({1}) = 1, V({0, 1}) = 2, L = 2, w(1, 2) = 1/2:
    # phi_0 = 3/2 + (2 - 3)/2 = 1, phi_1 = 1/2 + (2 - 1)/2 = 1.
    plan = coalition_plan(torch.tensor([3, 3, 1]), 2)
    v = torch.tensor([1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    assert official_batch_shapley(plan, v).tolist() == [1.0, 1.0]


def test_official_formula_differs_from_eq5_and_needs_exact_plans(seed):
    generator = torch.Generator().manual_seed(seed)
    present = random_present(generator, 30, 3, probability=0.9)
    table = random_game(generator, present, 3)
    plan = coalition_plan(present, 3)
    official = official_batch_shapley(plan, table_lookup(table)(plan.rows))
    eq5 = shapley_values(present, table).sum(0)
    assert official.shape == (3,)
    assert not torch.allclose(official, eq5, atol=1e-3)  # continuous random games: never equal
    with pytest.raises(ValueError, match="exact plan"):
        official_batch_shapley(coalition_plan(present, 3, method="mc", k=4), torch.zeros(1))


def test_official_contributions_carry_the_batch_values_in_row_0(seed):
    generator = torch.Generator().manual_seed(seed)
    present = random_present(generator, 9, 3)
    table = random_game(generator, present, 3)
    plan = coalition_plan(present, 3)
    v = table_lookup(table)(plan.rows)
    phi = official_contributions(plan, v)
    assert phi.shape == (9, 3) and phi.dtype == torch.float32
    assert torch.equal(phi.sum(0), official_batch_shapley(plan, v))  # what factor B reads
    assert not phi[1:].any()
    with pytest.raises(ValueError, match="exact plan"):
        official_contributions(coalition_plan(present, 3, method="mc", k=4), torch.zeros(1))


def test_official_weighting_is_per_sample_over_proper_subsets():
    # Sample 0 = {0, 1}: 3 rows, proper subsets {0}, {1} with losses 1, 2; sample 1 = {0}: no
    # proper subset. (1 / 3 + 2 / 3) / 2 samples.
    losses = torch.tensor([1.0, 2.0, 50.0, 7.0])
    rows = torch.tensor([[0, 1], [0, 2], [0, 3], [1, 1]])
    present = torch.tensor([3, 1])
    assert official_average_rows(losses, rows, present).item() == pytest.approx(0.5)
    l_sub = subset_loss(losses, rows, present, official_average_rows)
    assert l_sub.item() == pytest.approx(0.5)


def test_official_weighting_of_aux_loss():
    # Sample 0 = {0, 1}: row {0} drops modality 1 (error 3), row {1} drops modality 0 (error 1);
    # sample 1 = {0} drops nothing. (3 / 3 + 1 / 3 + 0) / 2 samples.
    h = torch.tensor([[[1.0, 1.0], [2.0, 4.0]], [[5.0, 5.0], [0.0, 0.0]]])
    present = torch.tensor([0b11, 0b01])
    rows = torch.tensor([[0, 0b01], [0, 0b10], [0, 0b11], [1, 0b01]])
    tokens = torch.zeros(4, 2, 2)
    l_aux = aux_loss(tokens, h, rows, present, torch.ones(2), official_average_rows)
    assert l_aux.item() == pytest.approx((1.0 + 1.0 / 3) / 2)


def test_config_refuses_official_weighting_on_monte_carlo_plans():
    with pytest.raises(ValueError, match="weighting='official' .* needs exact plans"):
        MCEConfig(shapley="mc", weighting="official")
    with pytest.raises(ValueError, match="weighting must be one of"):
        MCEConfig(weighting="other")
    with pytest.raises(ValueError, match="shapley must be one of"):
        MCEConfig(shapley="kernel")
    MCEConfig(shapley="official", weighting="official")  # the authors' code: both, exact rows
