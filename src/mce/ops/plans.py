"""Coalition plans: the rows (sample, subset) a step evaluates. Kernels: ``csrc/*/plans.*``.

Also the row offsets of a plan (where each sample's rows start), which the Shapley aggregation
and the ``subset_gather`` backward use.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mce.ops import _checks
from mce.ops._checks import (
    check_num_modalities,
    check_present_values,
    check_tensor,
    exclusive_cumsum,
    launch,
)
from mce.support.bits import MAX_MODALITIES, popcount

__all__ = ["DEFAULT_MAX_ROWS", "exact_plan", "exact_plan_size", "mc_plan", "row_offsets"]

DEFAULT_MAX_ROWS = 1 << 26
"""Row budget of an exact plan (64 Mi rows: 1 GiB of rows before any forward pass)."""

_ROW_BYTES = 16
"""Bytes of one plan row (two int64)."""

_USE_MONTE_CARLO = (
    "use Monte Carlo (method='mc', k permutations) instead, which needs at most k * |A_n| rows "
    "per sample"
)


def row_offsets(rows: Tensor, num_samples: int) -> Tensor:
    """Tensor[N + 1] int64: ``offsets[n]`` = first row whose sample is >= n (binary search).

    For rows grouped by sample, sample n's rows are ``rows[offsets[n] : offsets[n + 1]]`` and
    ``offsets[N] = R``. For any rows the offsets are non-decreasing within [0, R], so a kernel
    reading them stays in bounds; whether the rows really are grouped is for it to check.
    No validation: ``rows`` is a checked, contiguous Tensor[R, 2] int64.
    """
    offsets = _checks.allocate(
        f"the row offsets of {num_samples} samples", (num_samples + 1,), torch.int64, rows.device
    )
    launch(
        "row_offsets",
        rows.device,
        rows=rows.data_ptr(),
        num_rows=rows.shape[0],
        num_samples=num_samples,
        row_offsets=offsets.data_ptr(),
    )
    return offsets


# --------------------------------------------------------------------------------------------
# exact_plan
# --------------------------------------------------------------------------------------------


def exact_plan_size(present: Tensor, num_modalities: int = MAX_MODALITIES) -> int:
    """Rows of the exact plan of ``present``: sum over samples of 2^|A_n| - 1.

    Raises:
        ValueError: on a bad mask (0, negative or with bits at or above ``num_modalities``), as
            :func:`exact_plan` does.
    """
    check_num_modalities(num_modalities)
    check_tensor("present", present, (torch.int64,), 1)
    check_present_values(present, num_modalities)
    return int(((1 << popcount(present)) - 1).sum())


@torch.library.custom_op("mce::exact_plan", mutates_args=(), device_types=("cpu", "cuda"))
def _exact_plan_op(present: Tensor, row_offsets: Tensor, num_rows: int) -> Tensor:
    rows = _checks.allocate(
        f"the exact plan of {num_rows} rows",
        (num_rows, 2),
        torch.int64,
        present.device,
        _USE_MONTE_CARLO,
    )
    if num_rows:
        launch(
            "exact_plan",
            present.device,
            present=present.data_ptr(),
            row_offsets=row_offsets.data_ptr(),
            num_samples=present.shape[0],
            num_rows=num_rows,
            rows=rows.data_ptr(),
        )
    return rows


@_exact_plan_op.register_fake
def _(present: Tensor, row_offsets: Tensor, num_rows: int) -> Tensor:
    return present.new_empty((num_rows, 2))


def exact_plan(present: Tensor, num_modalities: int, max_rows: int = DEFAULT_MAX_ROWS) -> Tensor:
    """Rows (n, S) of every non-empty subset S of each sample's present set A_n.

    Rows are grouped by sample, subsets in increasing bitmask order within a sample.

    Args:
        present: Tensor[N] int64 bitmask of the modalities present in each sample.
        num_modalities: M, the number of modalities (1 .. 31).
        max_rows: refuse plans with more rows than this.

    Returns:
        Tensor[R, 2] int64 with R = sum_n (2^|A_n| - 1).

    Raises:
        ValueError: on a bad mask, or when the plan would exceed ``max_rows`` or cannot be
            allocated (naming its rows and bytes, and suggesting Monte Carlo).
    """
    check_num_modalities(num_modalities)
    check_tensor("present", present, (torch.int64,), 1)
    check_present_values(present, num_modalities)
    counts = (1 << popcount(present)) - 1
    num_rows = int(counts.sum()) if present.numel() else 0
    if num_rows > max_rows:
        raise ValueError(
            f"the exact plan needs {num_rows} rows ({num_rows * _ROW_BYTES} bytes; sum over "
            f"samples of 2^|A_n| - 1), more than max_rows={max_rows}; {_USE_MONTE_CARLO}"
        )
    return _exact_plan_op(present, exclusive_cumsum(counts), num_rows)


# --------------------------------------------------------------------------------------------
# mc_plan
# --------------------------------------------------------------------------------------------


def _mc_plan_impl(present: Tensor, num_modalities: int, k: int, seed: int) -> tuple[Tensor, Tensor]:
    device = present.device
    scratch_offsets = exclusive_cumsum(popcount(present) * k)
    prefixes = int(scratch_offsets[-1])
    smaller = "use fewer permutations (k) or a smaller batch"
    # Twice the prefix entries: the second half is the kernel's sorting space.
    scratch = _checks.allocate(
        f"the Monte Carlo plan's scratch for {prefixes} prefix coalitions (k={k} permutations "
        "x |A_n| per sample)",
        (2 * prefixes,),
        torch.int64,
        device,
        smaller,
    )
    distinct = _checks.allocate(
        f"the coalition counts of {present.shape[0]} samples", present.shape, torch.int64, device
    )
    launch(
        "mc_plan_prepare",
        device,
        present=present.data_ptr(),
        scratch_offsets=scratch_offsets.data_ptr(),
        num_samples=present.shape[0],
        num_permutations=k,
        seed=seed & 0xFFFFFFFFFFFFFFFF,
        scratch=scratch.data_ptr(),
        distinct=distinct.data_ptr(),
    )
    offsets = exclusive_cumsum(distinct)
    num_rows = int(offsets[-1])
    what = f"the Monte Carlo plan of {num_rows} rows"
    rows = _checks.allocate(what, (num_rows, 2), torch.int64, device, smaller)
    coef = _checks.allocate(what, (num_rows, num_modalities), torch.float32, device, smaller)
    launch(
        "mc_plan_emit",
        device,
        scratch=scratch.data_ptr(),
        scratch_offsets=scratch_offsets.data_ptr(),
        row_offsets=offsets.data_ptr(),
        num_samples=present.shape[0],
        num_permutations=k,
        num_modalities=num_modalities,
        rows=rows.data_ptr(),
        coef=coef.data_ptr(),
    )
    return rows, coef


@torch.library.custom_op("mce::mc_plan", mutates_args=(), device_types=("cpu", "cuda"))
def _mc_plan_op(present: Tensor, num_modalities: int, k: int, seed: int) -> tuple[Tensor, Tensor]:
    return _mc_plan_impl(present, num_modalities, k, seed)


@_mc_plan_op.register_fake
def _(present: Tensor, num_modalities: int, k: int, seed: int) -> tuple[Tensor, Tensor]:
    num_rows = torch.library.get_ctx().new_dynamic_size()
    return (
        present.new_empty((num_rows, 2)),
        present.new_empty((num_rows, num_modalities), dtype=torch.float32),
    )


def mc_plan(present: Tensor, num_modalities: int, k: int, seed: int) -> tuple[Tensor, Tensor]:
    """Monte Carlo coalition plan: K random permutations of each sample's present set.

    Every distinct prefix coalition of the K permutations of sample n becomes one row, and
    ``coef[r, m]`` counts how often m joined coalition S_r minus how often m was the next to
    join it, divided by K; hence the permutation estimate of the Shapley value is
    ``phi[n, m] = sum_r coef[r, m] * v(S_r)`` (v(empty) = 0). Permutations come from a Philox
    counter-based generator keyed by ``seed``, so the CPU and CUDA plans are identical.

    Args:
        present: Tensor[N] int64 presence bitmasks.
        num_modalities: M (1 .. 31).
        k: permutations per sample (>= 1).
        seed: any integer; the same seed gives the same plan on every device.

    Returns:
        rows Tensor[R, 2] int64 grouped by sample (subsets increasing), coef Tensor[R, M] float32.
    """
    check_num_modalities(num_modalities)
    check_tensor("present", present, (torch.int64,), 1)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < 2**31:
        raise ValueError(f"k (permutations per sample) must be an int in [1, 2^31), got {k!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not -(2**63) <= seed < 2**63:
        raise ValueError(f"seed must be an int in [-2^63, 2^63), got {seed!r}")
    check_present_values(present, num_modalities)
    return _mc_plan_op(present, num_modalities, k, seed)
