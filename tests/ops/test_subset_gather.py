"""Masked subset gather: forward and backward against the reference, gradcheck, dtypes."""

from __future__ import annotations

import warnings

import pytest
import torch
from oracles import random_present

from mce import ops
from mce.ops.reference import subset_gather_reference


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("features", [1, 7, 130])
def test_forward_and_backward_match_reference(device, seed, dtype, features):
    generator = torch.Generator().manual_seed(seed)
    num_modalities = 5
    present = random_present(generator, 9, num_modalities).to(device)
    rows = ops.exact_plan(present, num_modalities)
    h = torch.randn(9, num_modalities, features, generator=generator).to(device, dtype)
    h.requires_grad_(True)
    out = ops.subset_gather(h, rows)
    expected = subset_gather_reference(h, rows)
    assert out.dtype == dtype
    assert torch.equal(out, expected)
    grad_out = torch.randn(out.shape, generator=generator).to(device, dtype)
    (grad,) = torch.autograd.grad(out, h, grad_out)
    # The kernel sums in float32 and rounds once; the reference sums in float32 too.
    (expected_grad,) = torch.autograd.grad(
        subset_gather_reference(h.float(), rows), h, grad_out.float()
    )
    tolerance = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]
    torch.testing.assert_close(grad.float(), expected_grad.float(), rtol=tolerance, atol=tolerance)


def test_zeroed_slots_are_exact_zeros_even_where_h_is_nan():
    h = torch.full((1, 2, 3), float("nan"))
    h[0, 0] = 1.0
    out = ops.subset_gather(h, torch.tensor([[0, 1]]))
    assert torch.equal(out[0, 0], torch.ones(3))
    assert torch.equal(out[0, 1], torch.zeros(3))


def test_gradcheck_and_gradgradcheck(seed):
    generator = torch.Generator().manual_seed(seed)
    present = random_present(generator, 4, 3)
    rows = ops.exact_plan(present, 3)
    h = torch.randn(4, 3, 2, generator=generator, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the kernels run in float32, not float64
        assert torch.autograd.gradcheck(
            lambda x: ops.subset_gather(x, rows), (h,), eps=1e-2, atol=1e-3, rtol=1e-3
        )
        assert torch.autograd.gradgradcheck(
            lambda x: ops.subset_gather(x, rows), (h,), eps=1e-2, atol=1e-3, rtol=1e-3
        )


def test_backward_of_sample_without_rows_is_zero():
    h = torch.randn(3, 2, 4, requires_grad=True)
    rows = torch.tensor([[0, 1], [2, 3]])
    ops.subset_gather(h, rows).sum().backward()
    assert torch.equal(h.grad[1], torch.zeros(2, 4))
    assert torch.equal(h.grad[0, 1], torch.zeros(4))
    assert torch.equal(h.grad[2], torch.ones(2, 4))
