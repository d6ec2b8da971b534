"""Row-budget coalition plans: at most ``budget + 1`` rows per sample, unbiased Shapley values.

A sample whose 2^a - 2 proper non-empty subsets fit in the budget (a = |A_n|) gets every
non-empty subset with the exact Eq. 5 coefficients. Any other sample gets its full set A_n with
its exact coefficient 1/a and ``budget`` proper non-empty subsets drawn uniformly with
replacement, each weighted by (2^a - 2) / budget (importance weighting of a uniform draw).
With Shapley values linear in the utilities, ``phi[n, m] = sum_T c_m(T) v(T)``,

    c_m(T) = w(|T| - 1, a) if m in T,   -w(|T|, a) if m in A_n \\ T,   0 otherwise,

the estimate is unbiased, and since ``sum_m c_m(T) = 0`` for every proper T, every draw keeps
efficiency: ``sum_m phi[n, m] = v_n(A_n)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mce.ops._checks import check_num_modalities, check_present_values, check_tensor
from mce.ops.plans import DEFAULT_MAX_ROWS
from mce.support.bits import popcount, presence_matrix

__all__ = ["sampled_plan"]

_MASK32 = 0xFFFFFFFF


def _deposit(ranks: Tensor, present: Tensor, num_modalities: int) -> Tensor:
    """Deposit the low bits of ``ranks`` [N, L] into the set bits of ``present`` [N, 1]."""
    out = torch.zeros_like(ranks)
    for m in range(num_modalities):
        is_present = (present >> m) & 1
        position = popcount(present & ((1 << m) - 1))  # rank of bit m among the present bits
        out |= (((ranks >> position) & 1) & is_present) << m
    return out


def _weight_table(num_modalities: int, device: torch.device) -> Tensor:
    """Tensor[M + 1, M + 1] float64: ``table[a, s] = w(s, a) = 1 / (a C(a - 1, s))`` for
    s < a, else 0 (the kernels' exact-binomial form, so exact rows get the kernels' weights)."""
    size = num_modalities + 1
    table = [
        [1.0 / (a * math.comb(a - 1, s)) if s < a else 0.0 for s in range(size)]
        for a in range(size)
    ]
    return torch.tensor(table, dtype=torch.float64, device=device)


def sampled_plan(
    present: Tensor,
    num_modalities: int,
    budget: int,
    seed: int,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> tuple[Tensor, Tensor]:
    """Coalition plan of at most ``budget + 1`` rows per sample, with Shapley coefficients.

    Args:
        present: Tensor[N] int64 presence bitmasks (every sample with at least one modality).
        num_modalities: M (1 .. 31).
        budget: proper subsets drawn per sample besides its full set (>= 1); samples with
            2^|A_n| - 2 <= budget get every subset and exact coefficients instead.
        seed: any integer in [-2^63, 2^63); the draw comes from a CPU ``torch.Generator`` seeded
            with it, so the same seed gives the same plan on every device.
        max_rows: refuse plans with more candidate rows than this (N x (budget + 1) at most).

    Returns:
        rows Tensor[R, 2] int64 grouped by sample, subsets increasing within a sample (repeated
        draws merged into one row), and coef Tensor[R, M] float32 with
        ``phi[n, m] = sum_r coef[r, m] v(S_r)``; both on the device of ``present``.

    Raises:
        ValueError: naming the problem: a bad budget, seed, num_modalities or ``present``, or
            candidate rows beyond ``max_rows`` or the device's memory (naming rows and bytes).

    Example:
        >>> rows, coef = sampled_plan(torch.tensor([0b011]), 2, budget=3, seed=0)
        >>> rows.tolist(), coef.tolist()
        ([[0, 1], [0, 2], [0, 3]], [[0.5, -0.5], [-0.5, 0.5], [0.5, 0.5]])
    """
    if isinstance(budget, bool) or not isinstance(budget, int) or not 1 <= budget < 2**31:
        raise ValueError(
            f"budget (proper subsets drawn per sample) must be a positive int below 2^31, "
            f"got {budget!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or not -(2**63) <= seed < 2**63:
        raise ValueError(f"seed must be an int in [-2^63, 2^63), got {seed!r}")
    check_num_modalities(num_modalities)
    check_tensor("present", present, (torch.int64,), 1)
    check_present_values(present, num_modalities)
    device = present.device
    num_samples = present.shape[0]
    if num_samples == 0:
        return (
            torch.empty((0, 2), dtype=torch.int64, device=device),
            torch.empty((0, num_modalities), dtype=torch.float32, device=device),
        )

    sizes = popcount(present)  # a = |A_n|
    full = (1 << sizes) - 1  # rank of A_n among its non-empty subsets
    width = min(budget + 1, int(full.max()))
    candidates = num_samples * width
    # about six 8-byte temporaries a candidate: draws, ranks (drawn and chosen), subsets, keys
    what = (
        f"the row-budget plan of {num_samples} samples x {width} candidate rows (about "
        f"{candidates * _CANDIDATE_BYTES} bytes of temporaries)"
    )
    if candidates > max_rows:
        raise ValueError(f"{what} exceeds max_rows={max_rows}; {_SMALLER}")
    try:
        return _sampled_rows(present, num_modalities, budget, seed, sizes, full, width)
    except RuntimeError as error:
        if not _out_of_memory(error):
            raise
        raise ValueError(f"{what} could not be allocated on {device}; {_SMALLER}") from error


_CANDIDATE_BYTES = 48
_SMALLER = "use a smaller budget or batch"


def _out_of_memory(error: RuntimeError) -> bool:
    """Whether ``error`` is a failed allocation (CUDA's OutOfMemoryError, or the CPU
    allocator's "can't allocate memory")."""
    message = str(error).lower()
    return isinstance(error, torch.OutOfMemoryError) or (
        "allocate" in message and "memory" in message
    )


def _sampled_rows(
    present: Tensor,
    num_modalities: int,
    budget: int,
    seed: int,
    sizes: Tensor,
    full: Tensor,
    width: int,
) -> tuple[Tensor, Tensor]:
    """The plan of :func:`sampled_plan` (arguments checked; ``sizes`` = |A_n|, ``full`` = the
    rank of A_n, ``width`` = candidate rows per sample)."""
    device = present.device
    num_samples = present.shape[0]
    proper = full - 1  # 2^a - 2 proper non-empty subsets
    exact = proper <= budget
    # Candidate ranks [N, L]: 1 .. 2^a - 1 for exact samples; the full set, then the draws.
    exact_ranks = torch.arange(1, width + 1, device=device)[None, :].expand(num_samples, width)
    ranks = exact_ranks
    valid = exact_ranks <= full[:, None]
    if not bool(exact.all()):  # width == budget + 1: room for the full set and the draws
        generator = torch.Generator().manual_seed(seed & 0xFFFFFFFFFFFFFFFF)
        uniform = torch.rand((num_samples, budget), generator=generator, dtype=torch.float64)
        draws = (uniform.to(device) * proper[:, None]).floor().to(torch.int64)
        draws = torch.minimum(draws, (proper[:, None] - 1).clamp(min=0))  # j in [0, 2^a - 2)
        sampled_ranks = torch.cat([full[:, None], draws + 1], dim=1)
        ranks = torch.where(exact[:, None], exact_ranks, sampled_ranks)
        valid = valid | ~exact[:, None]
    subsets = _deposit(ranks, present[:, None], num_modalities)
    samples = torch.arange(num_samples, device=device)[:, None].expand_as(subsets)
    keys = (samples[valid] << 32) | subsets[valid]
    keys, counts = torch.unique(keys, sorted=True, return_counts=True)
    row_samples, row_subsets = keys >> 32, keys & _MASK32
    rows = torch.stack([row_samples, row_subsets], dim=1)

    # coef = factor * c_m(T): factor 1 for exact rows and full sets, draws * (2^a - 2) / budget.
    row_present = present[row_samples]
    row_sizes = sizes[row_samples]
    subset_sizes = popcount(row_subsets)
    weights = _weight_table(num_modalities, device)
    joined = weights[row_sizes, subset_sizes - 1][:, None]
    left_out = weights[row_sizes, subset_sizes][:, None]  # w(a, a) = 0 for the full set
    in_subset = presence_matrix(row_subsets, num_modalities)
    in_present = presence_matrix(row_present, num_modalities)
    base = torch.where(in_subset, joined, torch.where(in_present, -left_out, 0.0))
    drawn = ~exact[row_samples] & (row_subsets != row_present)
    factor = torch.where(
        drawn, counts.to(torch.float64) * proper[row_samples].to(torch.float64) / budget, 1.0
    )
    coef = (base * factor[:, None]).to(torch.float32)
    return rows, coef
