"""Public Shapley API: plans, tables, callables, presence helpers."""

from __future__ import annotations

import torch
from oracles import random_game, random_present, table_lookup

from mce.science.shapley import (
    coalition_plan,
    mask_to_presence,
    presence_to_mask,
    shapley_values,
)


def test_table_and_callable_agree(seed):
    generator = torch.Generator().manual_seed(seed)
    present = random_present(generator, 10, 4)
    table = random_game(generator, present, 4)
    from_table = shapley_values(present, table)
    from_callable = shapley_values(present, table_lookup(table), num_modalities=4)
    assert torch.equal(from_table, from_callable)


def test_callable_is_evaluated_once_on_all_rows():
    present = torch.tensor([0b111, 0b011])
    calls = []

    def utility(rows):
        calls.append(rows.shape[0])
        return torch.ones(rows.shape[0])

    phi = shapley_values(present, utility, num_modalities=3)
    assert calls == [7 + 3]
    torch.testing.assert_close(phi.sum(1), torch.ones(2))


def test_presence_round_trip():
    presence = torch.tensor([[1, 0, 1], [0, 1, 1]])
    mask = presence_to_mask(presence)
    assert mask.tolist() == [0b101, 0b110]
    assert torch.equal(mask_to_presence(mask, 3), presence.bool())


def test_plan_properties():
    plan = coalition_plan(torch.tensor([0b11]), 2, method="mc", k=8, seed=1)
    assert plan.method == "mc" and plan.coef is not None
    assert plan.num_rows == plan.rows.shape[0]
    assert torch.equal(plan.samples, plan.rows[:, 0])
