"""Shapley aggregation: per-sample Shapley values from the utilities of a plan's rows.

Kernels: ``csrc/cpu/shapley.cpp`` and ``csrc/cuda/shapley.cu``, which take the same arguments.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mce.ops import _checks
from mce.ops._checks import (
    check_num_modalities,
    check_present_values,
    check_rows_values,
    check_same_device,
    check_tensor,
    first,
    launch,
    ptr,
)
from mce.ops.plans import row_offsets

__all__ = ["shapley_from_rows"]


def _raise_bad_rows(rows: Tensor, v: Tensor, present: Tensor, bad_row: int) -> None:
    """Raise the ValueError naming the first row the kernel may not use (the rare path)."""
    check_rows_values(rows, present)
    not_finite = ~torch.isfinite(v)
    if bool(not_finite.any()):
        raise ValueError(f"v holds NaN or infinite utilities (v[{first(not_finite)}])")
    raise RuntimeError(
        f"shapley_from_rows: the kernel rejected rows[{bad_row}], yet the rows and v pass every "
        "check; please report this as a bug"
    )


@torch.library.custom_op("mce::shapley_from_rows", mutates_args=(), device_types=("cpu", "cuda"))
def _shapley_op(
    rows: Tensor, v: Tensor, present: Tensor, num_modalities: int, coef: Tensor | None
) -> Tensor:
    # The kernels check each row in the pass that aggregates it (validation at the cost of the
    # work, not more) and report the first bad row; the named error is raised here.
    num_rows, num_samples = rows.shape[0], present.shape[0]
    phi = _checks.allocate(
        f"the Shapley values of {num_samples} samples",
        (num_samples, num_modalities),
        torch.float32,
        v.device,
    )
    if num_samples == 0:
        if num_rows:
            _raise_bad_rows(rows, v, present, 0)
        return phi
    offsets = row_offsets(rows, num_samples)  # held: the kernel reads it through a pointer
    first_bad_row = torch.full((1,), num_rows, dtype=torch.int64, device=v.device)
    launch(
        "shapley_from_rows",
        v.device,
        rows=rows.data_ptr(),
        v=v.data_ptr(),
        coef=ptr(coef),
        present=present.data_ptr(),
        row_offsets=offsets.data_ptr(),
        num_rows=num_rows,
        num_samples=num_samples,
        num_modalities=num_modalities,
        phi=phi.data_ptr(),
        first_bad_row=first_bad_row.data_ptr(),
    )
    bad_row = int(first_bad_row)  # waits for the GPU on CUDA
    if bad_row < num_rows:
        _raise_bad_rows(rows, v, present, bad_row)
    return phi


@_shapley_op.register_fake
def _(rows: Tensor, v: Tensor, present: Tensor, num_modalities: int, coef: Tensor | None) -> Tensor:
    return v.new_empty((present.shape[0], num_modalities))


def shapley_from_rows(
    rows: Tensor,
    v: Tensor,
    present: Tensor,
    num_modalities: int,
    coef: Tensor | None = None,
) -> Tensor:
    """Per-sample Shapley values from the utilities of a plan's rows.

    Exact plans (``coef`` None) use Eq. 5 with the sample's own present count a = |A_n|::

        phi[n, m] = sum_{S in rows of n, m in S}      w(|S| - 1, a) v(S)
                  - sum_{S in rows of n, m in A_n\\S} w(|S|, a)     v(S),
        w(s, a) = s! (a - s - 1)! / a!,   v(empty) = 0.

    Monte Carlo plans pass their ``coef``: ``phi[n, m] = sum_r coef[r, m] v[r]``. Modalities
    absent from a sample get exactly 0. Missing rows count as v = 0.

    Args:
        rows: Tensor[R, 2] int64 (sample, subset), grouped by sample in increasing order.
        v: Tensor[R] float32 utilities (detached; no gradient flows through Shapley values).
        present: Tensor[N] int64 presence bitmasks.
        num_modalities: M (1 .. 31).
        coef: Tensor[R, M] float32 Monte Carlo coefficients, or None for exact weights.

    Returns:
        phi: Tensor[N, M] float32.

    Raises:
        ValueError: naming the problem: bad arguments, a row outside its sample's present set or
            out of sample order, a NaN or infinite utility.
    """
    check_num_modalities(num_modalities)
    check_tensor("rows", rows, (torch.int64,), 2)
    check_tensor("v", v, (torch.float32,), 1)
    check_tensor("present", present, (torch.int64,), 1)
    if rows.shape[1] != 2:
        raise ValueError(f"rows must have shape [R, 2], got {list(rows.shape)}")
    if v.shape[0] != rows.shape[0]:
        raise ValueError(
            f"v must have one value per row: {v.shape[0]} values for {rows.shape[0]} rows"
        )
    if coef is not None:
        check_tensor("coef", coef, (torch.float32,), 2)
        if tuple(coef.shape) != (rows.shape[0], num_modalities):
            raise ValueError(
                f"coef must have shape [R, M] = [{rows.shape[0]}, {num_modalities}], "
                f"got {list(coef.shape)}"
            )
    check_same_device("v", v, rows=rows, present=present, coef=coef)
    if v.requires_grad:
        v = v.detach()
    check_present_values(present, num_modalities)
    return _shapley_op(rows, v, present, num_modalities, coef)
