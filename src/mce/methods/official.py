"""The authors' code's formulas (byzhaoAI/MCE), for comparison studies only.

The paper's equations are what :class:`~mce.methods.mce.MCEMethod` implements; this module holds
the two places where the authors' code differs, selected by ``MCEConfig(shapley="official")``
and ``MCEConfig(weighting="official")`` (``--shapley official``, ``--weighting official``):

- :func:`official_batch_shapley`: their batch Shapley values (not Eq. 5, not efficient), and
  :func:`official_contributions`, the same values in the per-sample shape factor B reads;
- :func:`official_average_rows`: their per-sample weighting of L_sub and L_aux (not Eqs. 11, 13).

The paper wins where the two differ; these exist to measure the difference (the public
repository byzhaoAI/MCE, emotion_recog/models/mce_model.py).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mce.science.rce import RowTotals
from mce.science.shapley import CoalitionPlan, mask_to_presence
from mce.support.bits import modality_bits, shapley_weight
from mce.support.typing import Phi

__all__ = [
    "official_batch_shapley",
    "official_contributions",
    "official_average_rows",
    "official_row_weights",
]


def official_batch_shapley(plan: CoalitionPlan, v: Tensor) -> Tensor:
    """Batch Shapley values as the authors' code computes them, for comparison studies only.

    This is not Eq. 5 and is not efficient: utilities are summed over the batch per subset first,
    ``V(S) = sum of v over the rows with subset S`` (the samples where S is feasible); with L the
    number of modalities present anywhere in the batch and ``w(s, L) = s! (L - s - 1)! / L!``,
    ``phi_i = V({i}) / L + sum_{K containing i, |K| > 1} w(|K| - 1, L) (V(K) - V({i}))``.

    Args:
        plan: an exact plan (every non-empty subset of each sample's present set).
        v: Tensor[R] per-row utilities.

    Returns:
        Tensor[M] float32 batch values (0 for modalities absent from the batch).

    Raises:
        ValueError: the plan is a Monte Carlo plan.

    Example:
        >>> plan = coalition_plan(torch.tensor([3, 3, 1]), 2)
        >>> official_batch_shapley(plan, torch.tensor([1.0, 0, 1, 1, 1, 1, 1])).tolist()
        [1.0, 1.0]
    """
    if plan.method != "exact":
        raise ValueError(
            f"the authors' formula needs an exact plan (method='exact'), got {plan.method!r}"
        )
    num_modalities = plan.num_modalities
    subsets, inverse = torch.unique(plan.subsets, return_inverse=True)
    values = torch.zeros(subsets.shape[0], dtype=torch.float64, device=v.device)
    values = values.index_add(0, inverse, v.detach().double())  # V(S), (U,)
    anywhere = mask_to_presence(plan.present, num_modalities).any(0)  # (M,)
    players = int(anywhere.sum())
    singles = torch.zeros(num_modalities, dtype=torch.float64, device=v.device)
    bits = modality_bits(num_modalities, v.device)
    is_single = (subsets[:, None] == bits[None, :]).double()  # (U, M)
    singles += (is_single * values[:, None]).sum(0)  # V({i}), (M,)
    members = mask_to_presence(subsets, num_modalities)  # (U, M)
    sizes = members.sum(1).double()  # |K|, (U,)
    weights = shapley_weight(sizes - 1, players)  # w(|K| - 1, L), (U,)
    member = members & (sizes[:, None] > 1)
    marginal = weights[:, None] * (values[:, None] - singles[None, :])  # (U, M)
    phi = (marginal * member).sum(0) + singles / max(players, 1)
    return torch.where(anywhere, phi, 0.0).float()


def official_contributions(plan: CoalitionPlan, v: Tensor) -> Phi:
    """The authors' batch values in the per-sample shape that factor B (Eq. 8) reads.

    Eq. 8 and the step's ``phi/<modality>`` logs only read the batch value
    ``phi_m = sum_n phi[n, m]``. The authors' formula has no per-sample values, so row 0 carries
    :func:`official_batch_shapley` and every other row is 0: the column sums are the authors'
    values exactly (adding zeros rounds nothing). Do not read the rows as per-sample values.

    Args:
        plan: an exact plan. v: Tensor[R] per-row utilities.

    Returns:
        Tensor[N_b, M] float32, nonzero in row 0 only.

    Raises:
        ValueError: the plan is a Monte Carlo plan.
    """
    batch = official_batch_shapley(plan, v)
    phi = torch.zeros(plan.present.shape[0], plan.num_modalities, device=v.device)
    phi[0] = batch
    return phi


def official_average_rows(values: Tensor, rows: Tensor, present: Tensor) -> Tensor:
    """The authors' code's row averaging of L_sub and L_aux (a :data:`~mce.science.rce.RowAverage`).

    Only rows with a proper subset of the sample's present set count (the full set is L_task);
    each is divided by its sample's number of rows (2^|A_n| - 1 for exact plans), summed, and
    divided by the number of samples. Eqs. 11 and 13 instead average per subset
    (:func:`mce.science.rce.average_rows`).

    Args:
        values: Tensor[R] one value per row. rows: Tensor[R, 2] (sample, subset) of an exact
            plan. present: Tensor[N] presence bitmasks.

    Returns:
        Scalar tensor.
    """
    samples, subsets = rows[:, 0], rows[:, 1]
    proper = (subsets != present[samples]).to(values.dtype)
    rows_per_sample = torch.bincount(samples, minlength=present.shape[0]).to(values.dtype)
    return (values * proper / rows_per_sample[samples]).sum() / present.shape[0]


def official_row_weights(rows: Tensor, present: Tensor, totals: RowTotals) -> Tensor:
    """Row weights of :func:`official_average_rows` over the global batch of a data-parallel
    step (a :data:`~mce.science.rce.RowWeights`): ``1 / (rows of the sample x samples of the global
    batch)`` for a proper subset, 0 for a full set."""
    samples, subsets = rows[:, 0], rows[:, 1]
    proper = (subsets != present[samples]).double()
    rows_per_sample = torch.bincount(samples, minlength=present.shape[0]).double()
    return proper / rows_per_sample[samples] / totals.samples
