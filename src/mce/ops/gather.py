"""Masked subset gather and its backward (a segmented sum), with double backward.

Kernels: ``csrc/cpu/subset_gather.cpp`` and ``csrc/cuda/subset_gather.cu``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mce.ops import _checks
from mce.ops._checks import (
    FLOAT_DTYPES,
    check_num_modalities,
    check_same_device,
    check_tensor,
    first,
    launch,
)
from mce.ops.plans import row_offsets

__all__ = ["subset_gather"]


def _gather_kernel_call(h: Tensor, rows: Tensor) -> Tensor:
    num_modalities, features = h.shape[1], h.shape[2]
    out = _checks.allocate(
        f"subset_gather's output for {rows.shape[0]} rows",
        (rows.shape[0], num_modalities, features),
        h.dtype,
        h.device,
        "evaluate fewer rows (a smaller batch, or a Monte Carlo or sampled plan)",
    )
    launch(
        "subset_gather",
        h.device,
        h=h.data_ptr(),
        rows=rows.data_ptr(),
        num_rows=rows.shape[0],
        num_modalities=num_modalities,
        features=features,
        dtype=FLOAT_DTYPES[h.dtype],
        out=out.data_ptr(),
    )
    return out


def _gather_backward_kernel_call(grad: Tensor, rows: Tensor, num_samples: int) -> Tensor:
    num_modalities, features = grad.shape[1], grad.shape[2]
    grad = grad.contiguous()
    grad_h = _checks.allocate(
        f"subset_gather's gradient for {num_samples} samples",
        (num_samples, num_modalities, features),
        grad.dtype,
        grad.device,
    )
    offsets = row_offsets(rows, num_samples)  # held: the kernel reads it through a pointer
    launch(
        "subset_gather_backward",
        grad.device,
        grad_out=grad.data_ptr(),
        rows=rows.data_ptr(),
        row_offsets=offsets.data_ptr(),
        num_samples=num_samples,
        num_modalities=num_modalities,
        features=features,
        dtype=FLOAT_DTYPES[grad.dtype],
        grad_h=grad_h.data_ptr(),
    )
    return grad_h


@torch.library.custom_op("mce::subset_gather", mutates_args=(), device_types=("cpu", "cuda"))
def _subset_gather_op(h: Tensor, rows: Tensor) -> Tensor:
    return _gather_kernel_call(h, rows)


@_subset_gather_op.register_fake
def _(h: Tensor, rows: Tensor) -> Tensor:
    return h.new_empty((rows.shape[0], h.shape[1], h.shape[2]))


@torch.library.custom_op(
    "mce::subset_gather_backward", mutates_args=(), device_types=("cpu", "cuda")
)
def _subset_gather_backward_op(grad: Tensor, rows: Tensor, num_samples: int) -> Tensor:
    return _gather_backward_kernel_call(grad, rows, num_samples)


@_subset_gather_backward_op.register_fake
def _(grad: Tensor, rows: Tensor, num_samples: int) -> Tensor:
    return grad.new_empty((num_samples, grad.shape[1], grad.shape[2]))


def _gather_setup_context(ctx: object, inputs: tuple, output: Tensor) -> None:
    h, rows = inputs
    ctx.save_for_backward(rows)
    ctx.num_samples = h.shape[0]


def _gather_backward(ctx: object, grad: Tensor) -> tuple[Tensor, None]:
    (rows,) = ctx.saved_tensors
    return _subset_gather_backward_op(grad.contiguous(), rows, ctx.num_samples), None


def _gather_backward_setup_context(ctx: object, inputs: tuple, output: Tensor) -> None:
    _, rows, _ = inputs
    ctx.save_for_backward(rows)


def _gather_double_backward(ctx: object, grad: Tensor) -> tuple[Tensor, None, None]:
    (rows,) = ctx.saved_tensors
    return _subset_gather_op(grad.contiguous(), rows), None, None


_subset_gather_op.register_autograd(_gather_backward, setup_context=_gather_setup_context)
_subset_gather_backward_op.register_autograd(
    _gather_double_backward, setup_context=_gather_backward_setup_context
)


def subset_gather(h: Tensor, rows: Tensor) -> Tensor:
    """Per-row features with the modalities outside each row's subset zeroed.

    ``X[r, m] = h[n_r, m] if m in S_r else 0``. The backward sums the rows' gradients back
    into their samples (a segmented reduction, deterministic).

    Args:
        h: Tensor[N, M, F] float32, float16 or bfloat16 per-sample modality features.
        rows: Tensor[R, 2] int64 (sample, subset) grouped by sample in increasing order.

    Returns:
        X: Tensor[R, M, F] of h's dtype.
    """
    check_tensor("h", h, tuple(FLOAT_DTYPES), 3)
    check_tensor("rows", rows, (torch.int64,), 2)
    if rows.shape[1] != 2:
        raise ValueError(f"rows must have shape [R, 2], got {list(rows.shape)}")
    check_same_device("h", h, rows=rows)
    num_samples, num_modalities = h.shape[0], h.shape[1]
    check_num_modalities(num_modalities)
    if rows.shape[0]:
        samples, subsets = rows[:, 0], rows[:, 1]
        bad = (samples < 0) | (samples >= num_samples) | (subsets <= 0)
        bad |= subsets >= (1 << num_modalities)
        if bool(bad.any()):
            r = first(bad)
            raise ValueError(
                f"rows[{r}] = ({int(samples[r])}, {int(subsets[r])}) is not a sample "
                f"in [0, {num_samples}) with a non-empty subset of the {num_modalities} modalities"
            )
        if bool((samples[1:] < samples[:-1]).any()):
            raise ValueError("rows must be grouped by sample in increasing order")
    return _subset_gather_op(h, rows)
