"""Representation Capability Enhancement losses (Eqs. 9, 11, 13), from one plan's outputs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from mce.support.bits import presence_matrix

__all__ = [
    "RowAverage",
    "RowTotals",
    "RowWeights",
    "average_rows",
    "subset_row_weights",
    "per_subset_mean",
    "single_loss",
    "subset_loss",
    "aux_loss",
]

RowAverage = Callable[[Tensor, Tensor, Tensor], Tensor]
"""(values Tensor[R], rows Tensor[R, 2], present Tensor[N]) -> scalar: how L_sub and L_aux
average per-row values over a plan's rows. :func:`average_rows` is the paper's; the authors'
code's lives in :mod:`mce.methods.official`."""


@dataclass(frozen=True)
class RowTotals:
    """Counts of a global batch whose slices several ranks hold (in one process, the batch).

    Attributes:
        samples: scalar float64, samples in the global batch.
        subset_rows: Tensor[2^M] float64, the plan's rows with subset S (index S) over the
            global batch.
    """

    samples: Tensor
    subset_rows: Tensor


RowWeights = Callable[[Tensor, Tensor, RowTotals], Tensor]
"""(rows Tensor[R, 2], present Tensor[N], totals) -> Tensor[R] weights w_r such that a
rank's share of a :data:`RowAverage` over the global batch is ``sum_r w_r values_r`` over its
own rows: the row averaging with the global batch's denominators (in one process, the
average itself)."""


def subset_row_weights(rows: Tensor, present: Tensor, totals: RowTotals) -> Tensor:
    """Row weights of :func:`average_rows` over the global batch (a :data:`RowWeights`):
    ``1 / (|S_batch| |N_S|)`` for a row with subset S, with the distinct subsets and their row
    counts taken over the global batch."""
    distinct = (totals.subset_rows > 0).sum()
    return 1.0 / (totals.subset_rows[rows[:, 1]] * distinct)


def per_subset_mean(values: Tensor, subsets: Tensor) -> Tensor:
    """Mean over the distinct subsets S of the mean of ``values`` over the rows with S.

    This is the averaging of Eqs. 11 and 13: (1 / |S_batch|) sum_S (1 / |N_S|) sum_{n in N_S}.
    """
    unique, inverse = torch.unique(subsets, return_inverse=True)
    sums = torch.zeros(unique.shape[0], dtype=values.dtype, device=values.device)
    sums = sums.index_add(0, inverse, values)
    counts = torch.bincount(inverse, minlength=unique.shape[0]).to(values.dtype)
    return (sums / counts).mean()


def average_rows(values: Tensor, rows: Tensor, present: Tensor) -> Tensor:
    """Average per-row values over a plan's rows as Eqs. 11 and 13 do (a :data:`RowAverage`).

    Args:
        values: Tensor[R] one value per row. rows: Tensor[R, 2] (sample, subset).
        present: Tensor[N] presence bitmasks (unused by the paper's averaging; part of the
            :data:`RowAverage` contract).

    Returns:
        Scalar: the mean over the distinct subsets of the mean over their rows.
    """
    return per_subset_mean(values, rows[:, 1])


def subset_loss(
    row_losses: Tensor, rows: Tensor, present: Tensor, average: RowAverage = average_rows
) -> Tensor:
    """L_sub (Eq. 11): task losses of the planned rows, averaged per subset, then over subsets.

    Args:
        row_losses: Tensor[R] task loss of each row. rows: Tensor[R, 2]. present: Tensor[N].
        average: the row averaging; default :func:`average_rows` (Eq. 11).
    """
    return average(row_losses, rows, present)


def aux_loss(
    tokens: Tensor,
    h: Tensor,
    rows: Tensor,
    present: Tensor,
    weights: Tensor,
    average: RowAverage = average_rows,
) -> Tensor:
    """L_aux (Eq. 13): L1 error of the reconstructed tokens of each row's dropped modalities.

    For row (n, S) the dropped modalities are A_n \\ S; modality m's error
    ``mean_f |tokens[r, m, f] - h[n, m, f]|`` is weighted by ``weights[m]`` (A_m B_m) and
    averaged over the dropped modalities, then rows are averaged per subset and over subsets.
    The targets h are detached: the reconstruction chases the features, not the reverse.

    Args:
        tokens: Tensor[R, M, F] reconstruction outputs. h: Tensor[N, M, F] encoder features.
        rows: Tensor[R, 2]. present: Tensor[N] bitmasks. weights: Tensor[M].
        average: the row averaging; default :func:`average_rows` (Eq. 13).
    """
    samples, subsets = rows[:, 0], rows[:, 1]
    num_modalities = h.shape[1]
    dropped = presence_matrix(present[samples] & ~subsets, num_modalities).to(tokens.dtype)
    errors = (tokens - h[samples].detach()).abs().mean(dim=2)  # (R, M)
    per_row = (errors * dropped * weights[None, :]).sum(1) / dropped.sum(1).clamp(min=1.0)
    return average(per_row, rows, present)


def single_loss(
    unimodal: dict[int, tuple[Tensor, Tensor]],
    target: Tensor,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    weights: Tensor,
    counts: Tensor | None = None,
) -> Tensor:
    """L_single (Eq. 9): sum over modalities of weights[m] times the mean loss of its head over
    the samples where it is present.

    ``counts`` (Tensor[M]): divide each head's loss sum by the samples with m in the global
    batch instead, giving this rank's share of the global L_single (in one process, the batch's
    own counts: the mean).
    """
    total = weights.new_zeros(())
    for m, (index, outputs) in unimodal.items():
        losses = loss_fn(outputs, target[index])
        mean = losses.mean() if counts is None else losses.sum() / counts[m].to(losses.dtype)
        total = total + weights[m] * mean
    return total
