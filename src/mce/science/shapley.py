"""Coalition plans and per-sample Shapley values of modalities (Eqs. 4-5 of the MCE paper).

Every consumer of modality subsets (L_sub, L_aux, the Shapley utilities) uses the same rows
(n, S): a :class:`CoalitionPlan`. Exact plans hold every non-empty subset of each sample's present
set (sum_n 2^|A_n| - 1 rows); Monte Carlo plans hold the distinct prefix coalitions of K random
permutations per sample (at most K |A_n| rows) with coefficients; sampled plans hold each
sample's full set and ``budget`` uniformly drawn proper subsets (at most budget + 1 rows per
sample, every subset with exact coefficients where 2^|A_n| - 2 <= budget) with importance
weighted coefficients (:mod:`mce.science.sampling`). Shapley values are linear in the utilities,
``phi[n, m] = sum_r coef[r, m] v(S_r)``, so one aggregation serves them all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from mce import ops
from mce.science.sampling import sampled_plan
from mce.support.bits import MAX_MODALITIES, presence_matrix, present_masks, shapley_weight
from mce.support.typing import Coef, Phi, PresentMask, Rows

__all__ = [
    "shapley_weight",
    "CoalitionPlan",
    "coalition_plan",
    "plan_shapley",
    "presence_to_mask",
    "mask_to_presence",
    "shapley_values",
]

Method = Literal["exact", "mc", "sampled"]
UtilityFn = Callable[[Rows], Tensor]


@dataclass(frozen=True)
class CoalitionPlan:
    """The rows (sample, subset) a step evaluates, and how they combine into Shapley values.

    Attributes:
        rows: Tensor[R, 2] int64, grouped by sample, subsets increasing within a sample.
        present: Tensor[N] int64 presence bitmasks the plan was made from.
        num_modalities: M.
        method: "exact", "mc" or "sampled".
        coef: Tensor[R, M] float32 Shapley coefficients of "mc" and "sampled" plans; None for
            exact plans.
    """

    rows: Rows
    present: PresentMask
    num_modalities: int
    method: Method
    coef: Coef | None = None

    @property
    def num_rows(self) -> int:
        return self.rows.shape[0]

    @property
    def samples(self) -> Tensor:
        """Tensor[R] sample index of each row."""
        return self.rows[:, 0]

    @property
    def subsets(self) -> Tensor:
        """Tensor[R] subset bitmask of each row."""
        return self.rows[:, 1]


def presence_to_mask(presence: Tensor) -> PresentMask:
    """Tensor[N, M] of booleans (or 0/1) -> Tensor[N] int64 bitmasks (M <= 31), checked.

    The validating face of :func:`mce.support.bits.present_masks`.
    """
    if presence.dim() != 2:
        raise ValueError(f"presence must have shape [N, M], got {list(presence.shape)}")
    if presence.shape[1] > MAX_MODALITIES:
        raise ValueError(
            f"at most {MAX_MODALITIES} modalities are supported, got {presence.shape[1]}"
        )
    if presence.dtype != torch.bool:
        if presence.is_floating_point() and not bool(torch.isfinite(presence).all()):
            raise ValueError("presence holds NaN or infinite values")
        if not bool(((presence == 0) | (presence == 1)).all()):
            raise ValueError("presence must hold only 0/1 (or booleans)")
        presence = presence != 0
    return present_masks(presence)


def mask_to_presence(present: PresentMask, num_modalities: int) -> Tensor:
    """Tensor[N] int64 bitmasks -> Tensor[N, M] booleans
    (:func:`mce.support.bits.presence_matrix`)."""
    return presence_matrix(present, num_modalities)


def coalition_plan(
    present: PresentMask,
    num_modalities: int,
    method: Method = "exact",
    k: int = 100,
    seed: int = 0,
    max_rows: int = ops.DEFAULT_MAX_ROWS,
    budget: int = 3,
) -> CoalitionPlan:
    """Plan the rows (n, S) to evaluate for a batch.

    Args:
        present: Tensor[N] int64 presence bitmasks (every sample with at least one modality).
        num_modalities: M (1 .. 31).
        method: "exact" (all non-empty subsets, Eq. 5), "mc" (K permutations per sample) or
            "sampled" (the full set and ``budget`` drawn proper subsets per sample).
        k: permutations per sample for "mc".
        seed: seed of "mc" and "sampled"; identical plans on CPU and CUDA.
        max_rows: the exact plan refuses to exceed this many rows (suggesting "mc"), the
            "sampled" plan this many candidate rows (N x (budget + 1) at most).
        budget: proper subsets drawn per sample besides the full set, for "sampled" (>= 1).

    Example:
        >>> plan = coalition_plan(torch.tensor([0b011, 0b101]), 3)
        >>> plan.rows.tolist()
        [[0, 1], [0, 2], [0, 3], [1, 1], [1, 4], [1, 5]]
    """
    if method == "exact":
        rows = ops.exact_plan(present, num_modalities, max_rows=max_rows)
        return CoalitionPlan(rows, present, num_modalities, "exact")
    if method == "mc":
        rows, coef = ops.mc_plan(present, num_modalities, k, seed)
        return CoalitionPlan(rows, present, num_modalities, "mc", coef)
    if method == "sampled":
        rows, coef = sampled_plan(present, num_modalities, budget, seed, max_rows=max_rows)
        return CoalitionPlan(rows, present, num_modalities, "sampled", coef)
    raise ValueError(
        f"method must be 'exact' or 'mc' (permutations) or 'sampled' (row budget), got {method!r}"
    )


def plan_shapley(plan: CoalitionPlan, v: Tensor) -> Phi:
    """Per-sample Shapley values from utilities v[r] = v_{n_r}(S_r) of a plan's rows.

    Exact plans apply Eq. 5 with the sample's own present count a = |A_n|:
    ``phi[n, m] = sum_{S subset A_n \\ {m}} |S|! (a - |S| - 1)! / a! [v_n(S + m) - v_n(S)]``;
    Monte Carlo and sampled plans their estimate ``sum_r coef[r, m] v[r]``. v(empty) = 0.
    The batch value of Eq. 5 is ``phi.sum(0)``.

    Returns:
        Tensor[N, M] float32; absent modalities get 0.
    """
    return ops.shapley_from_rows(
        plan.rows, v.detach().float().contiguous(), plan.present, plan.num_modalities, plan.coef
    )


def _table_utility(table: Tensor, present: PresentMask) -> tuple[int, UtilityFn]:
    if table.dim() != 2 or table.shape[0] != present.shape[0]:
        raise ValueError(
            f"a utility table must have shape [N, 2^M] with N = {present.shape[0]}, "
            f"got {list(table.shape)}"
        )
    columns = table.shape[1]
    num_modalities = columns.bit_length() - 1
    if columns < 2 or columns != 1 << num_modalities:
        raise ValueError(f"a utility table needs 2^M columns (one per subset), got {columns}")
    # Only what is read is checked: column 0 here, the plan's entries as they are looked up
    # (checking all N 2^M entries would cost ten times the Shapley values themselves).
    empty = table[:, 0]
    if not bool(torch.isfinite(empty).all()):
        n = int(torch.nonzero(~torch.isfinite(empty))[0, 0])
        raise ValueError(f"the utility table holds NaN or infinite values (table[{n}, 0])")
    if bool((empty != 0).any()):
        raise ValueError("the utility of the empty subset (column 0) must be 0")

    def lookup(rows: Rows) -> Tensor:
        values = table[rows[:, 0], rows[:, 1]]
        # One fused reduction: the sum is finite when every value is (or it overflowed).
        if not bool(torch.isfinite(values.sum())):
            bad = ~torch.isfinite(values)
            if bool(bad.any()):
                n, subset = rows[int(torch.nonzero(bad)[0, 0])].tolist()
                raise ValueError(
                    f"the utility table holds NaN or infinite values (table[{n}, {subset}])"
                )
        return values

    return num_modalities, lookup


def shapley_values(
    present: PresentMask,
    utility: Tensor | UtilityFn,
    num_modalities: int | None = None,
    method: Method = "exact",
    k: int = 100,
    seed: int = 0,
    budget: int = 3,
) -> Phi:
    """Per-sample Shapley values of the modalities (Eq. 5, or an unbiased estimate of it).

    Args:
        present: Tensor[N] int64 presence bitmasks.
        utility: either a table Tensor[N, 2^M] with ``utility[n, S] = v_n(S)`` (column 0, the
            empty set, must be 0), or a callable ``utility(rows) -> Tensor[R]`` evaluated once,
            in one batch, on the plan's rows ``rows[r] = (n, S)``.
        num_modalities: M; inferred from a table, required with a callable.
        method: "exact", "mc" or "sampled".
        k: permutations per sample for "mc".
        seed: seed of "mc" and "sampled".
        budget: proper subsets drawn per sample besides the full set, for "sampled".

    Returns:
        Tensor[N, M] float32; ``phi.sum(1) == v_n(A_n)`` (efficiency) for exact and sampled
        plans.

    Example:
        >>> present = torch.tensor([0b11])
        >>> table = torch.tensor([[0.0, 1.0, 0.0, 1.0]])  # modality 0 alone decides
        >>> shapley_values(present, table).tolist()
        [[1.0, 0.0]]
    """
    if isinstance(utility, Tensor):
        table_modalities, utility = _table_utility(utility, present)
        if num_modalities is not None and num_modalities != table_modalities:
            raise ValueError(
                f"num_modalities={num_modalities} disagrees with the table's "
                f"{table_modalities} modalities"
            )
        num_modalities = table_modalities
    elif num_modalities is None:
        raise ValueError("num_modalities is required when utility is a callable")
    plan = coalition_plan(present, num_modalities, method=method, k=k, seed=seed, budget=budget)
    v = utility(plan.rows)
    if not isinstance(v, Tensor) or tuple(v.shape) != (plan.num_rows,):
        shape = list(v.shape) if isinstance(v, Tensor) else type(v).__name__
        raise ValueError(f"utility(rows) must return a Tensor[{plan.num_rows}], got {shape}")
    return plan_shapley(plan, v)

