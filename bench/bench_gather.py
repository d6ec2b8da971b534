"""subset_gather forward + backward: kernel vs the torch reference (exact plans)."""

from __future__ import annotations

import pytest
import torch
from conftest import CUDA_PRESENT, NO_CUDA

from mce import ops
from mce.ops.reference import subset_gather_reference

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not CUDA_PRESENT, reason=NO_CUDA))]


@pytest.mark.parametrize("impl", ["kernel", "reference"])
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("num_modalities", "features"), [(3, 128), (4, 256), (8, 64)])
def test_gather_forward_backward(run, impl, device, num_modalities, features):
    num_samples = 128
    present = torch.full((num_samples,), (1 << num_modalities) - 1, device=device)
    rows = ops.exact_plan(present, num_modalities)
    h = torch.randn(num_samples, num_modalities, features, device=device, requires_grad=True)
    grad = torch.randn(rows.shape[0], num_modalities, features, device=device)
    gather = ops.subset_gather if impl == "kernel" else subset_gather_reference

    def step():
        return torch.autograd.grad(gather(h, rows), h, grad)

    run(step)
