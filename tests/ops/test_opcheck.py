"""torch.library.opcheck on every mce op (schema, fake kernel, autograd registration)."""

from __future__ import annotations

import torch

from mce import ops


def _sample_inputs(device):
    present = torch.tensor([0b0111, 0b0001, 0b1010], device=device)
    rows = ops.exact_plan(present, 4)
    v = torch.rand(rows.shape[0], device=device)
    return present, rows, v


def test_opcheck_plans(device):
    present, rows, _ = _sample_inputs(device)
    counts = (1 << ops.popcount(present)) - 1
    offsets = torch.zeros(4, dtype=torch.int64, device=device)
    offsets[1:] = torch.cumsum(counts, 0)
    torch.library.opcheck(torch.ops.mce.exact_plan.default, (present, offsets, rows.shape[0]))
    torch.library.opcheck(torch.ops.mce.mc_plan.default, (present, 4, 5, 11))


def test_opcheck_shapley(device):
    present, rows, v = _sample_inputs(device)
    torch.library.opcheck(torch.ops.mce.shapley_from_rows.default, (rows, v, present, 4, None))
    rows_mc, coef = ops.mc_plan(present, 4, 8, 3)
    v_mc = torch.rand(rows_mc.shape[0], device=device)
    torch.library.opcheck(
        torch.ops.mce.shapley_from_rows.default, (rows_mc, v_mc, present, 4, coef)
    )


def test_opcheck_subset_gather(device):
    present, rows, _ = _sample_inputs(device)
    h = torch.randn(3, 4, 5, device=device, requires_grad=True)
    torch.library.opcheck(torch.ops.mce.subset_gather.default, (h, rows))
    grad = torch.randn(rows.shape[0], 4, 5, device=device, requires_grad=True)
    torch.library.opcheck(torch.ops.mce.subset_gather_backward.default, (grad, rows, 3))


def test_opcheck_lce(device):
    present, _, _ = _sample_inputs(device)
    args = (
        torch.tensor([3, 4, 2, 9], device=device),
        10,
        present,
        torch.rand(4, device=device),
        torch.rand(3, 4, device=device),
    )
    torch.library.opcheck(torch.ops.mce.lce_factors.default, args)
