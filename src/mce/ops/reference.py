"""Pure-torch references of every mce kernel, and a brute-force Shapley oracle.

These are the specifications the kernels are tested against, written for clarity: vectorised
torch where that stays readable, Python loops only in the brute-force oracle. They take the same
arguments as :mod:`mce.ops` and do no validation.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from torch import Tensor

from mce.support.bits import popcount, presence_matrix, shapley_weight

__all__ = [
    "exact_plan_reference",
    "lce_factors_reference",
    "mc_plan_reference",
    "philox4x32_10",
    "shapley_brute_force",
    "shapley_from_rows_reference",
    "shapley_weight",
    "subset_gather_reference",
]

_MASK32 = 0xFFFFFFFF


def _deposit_bits(k: Tensor, present: Tensor, num_modalities: int) -> Tensor:
    """Deposit the low bits of k into the set bits of present (broadcasting)."""
    out = torch.zeros(
        torch.broadcast_shapes(k.shape, present.shape), dtype=torch.int64, device=k.device
    )
    for m in range(num_modalities):
        is_present = (present >> m) & 1
        rank = popcount(present & ((1 << m) - 1))
        out |= (((k >> rank) & 1) & is_present) << m
    return out


def exact_plan_reference(present: Tensor, num_modalities: int) -> Tensor:
    """Rows (n, S) of every non-empty subset of each present set, subsets increasing."""
    if present.numel() == 0:
        return torch.empty((0, 2), dtype=torch.int64, device=present.device)
    sizes = popcount(present)
    largest = int(sizes.max())
    ranks = torch.arange(1, 1 << largest, device=present.device)  # [2^amax - 1]
    subsets = _deposit_bits(ranks[None, :], present[:, None], num_modalities)
    keep = ranks[None, :] < (1 << sizes)[:, None]
    samples = torch.arange(present.shape[0], device=present.device)[:, None].expand_as(subsets)
    return torch.stack([samples[keep], subsets[keep]], dim=1)


def _mulhilo32(a: int, b: Tensor) -> tuple[Tensor, Tensor]:
    """(low, high) 32-bit halves of a * b for a constant a and uint32 values b in int64."""
    a_lo, a_hi = a & 0xFFFF, a >> 16
    b_lo, b_hi = b & 0xFFFF, b >> 16
    p0, p1, p2, p3 = a_lo * b_lo, a_lo * b_hi, a_hi * b_lo, a_hi * b_hi
    mid = (p0 >> 16) + (p1 & 0xFFFF) + (p2 & 0xFFFF)
    low = ((mid & 0xFFFF) << 16) | (p0 & 0xFFFF)
    high = (p3 + (p1 >> 16) + (p2 >> 16) + (mid >> 16)) & _MASK32
    return low, high


def philox4x32_10(counter: list[Tensor], key: tuple[int, int]) -> list[Tensor]:
    """Philox4x32-10 on four uint32 counter words held in int64 tensors."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for _ in range(10):
        lo0, hi0 = _mulhilo32(0xD2511F53, c0)
        lo1, hi1 = _mulhilo32(0xCD9E8D57, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0, k1 = (k0 + 0x9E3779B9) & _MASK32, (k1 + 0xBB67AE85) & _MASK32
    return [c0, c1, c2, c3]


def _permutations(present: Tensor, k: int, seed: int) -> tuple[Tensor, Tensor]:
    """members[N, K, amax]: K Fisher-Yates shuffles of each sample's present modalities."""
    device = present.device
    num_samples = present.shape[0]
    sizes = popcount(present)
    largest = int(sizes.max())
    ascending = []  # ascending[n, i] = index of the i-th present modality (or 0 as padding)
    rest = present.clone()
    for _ in range(largest):
        lowest = rest & -rest
        ascending.append(torch.where(rest != 0, popcount(lowest - 1), torch.zeros_like(rest)))
        rest = rest & (rest - 1)
    members = torch.stack(ascending, dim=1)[:, None, :].repeat(1, k, 1)  # [N, K, amax]
    unsigned_seed = seed & 0xFFFFFFFFFFFFFFFF
    key = (unsigned_seed & _MASK32, unsigned_seed >> 32)
    n = torch.arange(num_samples, device=device)[:, None].expand(num_samples, k)
    perm = torch.arange(k, device=device)[None, :].expand(num_samples, k)
    a = sizes[:, None].expand(num_samples, k)
    for i in range(largest - 1, 0, -1):
        active = i <= a - 1
        t = (a - 1 - i).clamp(min=0)
        lanes = philox4x32_10([perm, t >> 2, n & _MASK32, n >> 32], key)
        draw = torch.gather(torch.stack(lanes, dim=-1), -1, (t & 3)[..., None])[..., 0]
        j = (draw * (i + 1)) >> 32
        at_i = members[:, :, i].clone()
        at_j = torch.gather(members, 2, j[..., None])[..., 0]
        swapped = members.clone()
        swapped[:, :, i] = at_j
        swapped.scatter_(2, j[..., None], at_i[..., None])
        members = torch.where(active[..., None], swapped, members)
    return members, sizes


def mc_plan_reference(
    present: Tensor, num_modalities: int, k: int, seed: int
) -> tuple[Tensor, Tensor]:
    """Monte Carlo plan with the kernels' Philox permutations: rows and coef (counts / K)."""
    device = present.device
    if present.numel() == 0:
        return (
            torch.empty((0, 2), dtype=torch.int64, device=device),
            torch.empty((0, num_modalities), dtype=torch.float32, device=device),
        )
    members, sizes = _permutations(present, k, seed)
    largest = members.shape[2]
    coalitions = torch.cumsum(1 << members, dim=2)  # members are distinct: sum == OR
    position = torch.arange(largest, device=device)
    valid = (position[None, None, :] < sizes[:, None, None]).expand_as(members)
    has_next = (position[None, None, :] + 1 < sizes[:, None, None]).expand_as(members)
    next_member = torch.roll(members, shifts=-1, dims=2)
    samples = torch.arange(present.shape[0], device=device)[:, None, None].expand_as(members)
    keys = (samples << 32) | coalitions
    unique_keys, inverse = torch.unique(keys[valid], sorted=True, return_inverse=True)
    counts = torch.zeros((unique_keys.shape[0], num_modalities), dtype=torch.float32, device=device)
    counts.index_put_(
        (inverse, members[valid]), torch.ones_like(inverse, dtype=torch.float32), accumulate=True
    )
    next_valid = has_next[valid]
    counts.index_put_(
        (inverse[next_valid], next_member[valid][next_valid]),
        -torch.ones_like(inverse[next_valid], dtype=torch.float32),
        accumulate=True,
    )
    rows = torch.stack([unique_keys >> 32, unique_keys & _MASK32], dim=1)
    return rows, counts / k


def shapley_from_rows_reference(
    rows: Tensor, v: Tensor, present: Tensor, num_modalities: int, coef: Tensor | None = None
) -> Tensor:
    """phi[n, m] = sum_r coef[r, m] v[r], with Eq. 5 weights when coef is None."""
    samples, subsets = rows[:, 0], rows[:, 1]
    sample_present = present[samples]
    in_subset = presence_matrix(subsets, num_modalities)
    in_present = presence_matrix(sample_present, num_modalities)
    if coef is None:
        a = popcount(sample_present)[:, None]
        s = popcount(subsets)[:, None]
        joined = shapley_weight(s - 1, a)
        left_out = torch.where(s < a, shapley_weight(s.clamp(max=a - 1), a), 0.0)
        coef = torch.where(in_subset, joined, torch.where(in_present, -left_out, 0.0))
    coef = torch.where(in_present, coef.double(), 0.0)
    phi = torch.zeros((present.shape[0], num_modalities), dtype=torch.float64, device=v.device)
    phi.index_add_(0, samples, coef * v.double()[:, None])
    return phi.float()


def shapley_brute_force(
    present: list[int], utility: Callable[[int, int], float], num_modalities: int
) -> list[list[float]]:
    """Eq. 5 straight from its definition: a Python loop over samples, modalities and subsets.

    ``utility(n, subset_mask)`` is v_n(S); v_n(empty) = 0 whatever it returns.
    """
    phi = []
    for n, mask in enumerate(present):
        members = [m for m in range(num_modalities) if (mask >> m) & 1]
        a = len(members)

        def value(subset: tuple[int, ...], n: int = n) -> float:
            return 0.0 if not subset else utility(n, sum(1 << m for m in subset))

        row = [0.0] * num_modalities
        weights = shapley_weight(torch.arange(a), a).tolist()
        for m in members:
            others = [x for x in members if x != m]
            for size, weight in enumerate(weights):
                for subset in itertools.combinations(others, size):
                    with_m = tuple(sorted(subset + (m,)))
                    row[m] += weight * (value(with_m) - value(subset))
        phi.append(row)
    return phi


def subset_gather_reference(h: Tensor, rows: Tensor) -> Tensor:
    """X[r, m] = h[n_r, m] if m in S_r else 0 (differentiable through torch indexing)."""
    keep = presence_matrix(rows[:, 1], h.shape[1])  # [R, M]
    gathered = h[rows[:, 0]]
    return torch.where(keep[:, :, None], gathered, torch.zeros((), dtype=h.dtype, device=h.device))


def lce_factors_reference(
    dataset_counts: Tensor, dataset_size: int, batch_present: Tensor, upper: Tensor, phi: Tensor
) -> tuple[Tensor, Tensor]:
    """A = (N / counts) / mean; B = max(U - sum_n phi, 0) / batch count (0 when absent)."""
    num_modalities = dataset_counts.shape[0]
    raw_a = dataset_size / dataset_counts.double()
    factor_a = raw_a / raw_a.mean()
    batch_counts = presence_matrix(batch_present, num_modalities).sum(0).double()
    gap = (upper.double() - phi.double().sum(0)).clamp(min=0)
    factor_b = torch.where(batch_counts > 0, gap / batch_counts.clamp(min=1), 0.0)
    return factor_a.float(), factor_b.float()
