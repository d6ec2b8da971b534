"""Modality Capability Enhancement (Eq. 14): L_task + l_single L_single + l_sub L_sub + l_aux L_aux.

One coalition plan per batch feeds one batched forward; from it come L_task (the rows with
every present modality), L_sub (all rows), the detached utilities for the Shapley values and
factor B, and L_aux (the reconstructed tokens of the dropped modalities).

``shapley`` and ``weighting`` pick, once, from the tables below, a contribution function (plan,
utilities -> the phi that factor B reads) and the row weights of L_sub and L_aux; the step has
no branch on them. Their ``"official"`` values are the authors' code's formulas, kept in
:mod:`mce.methods.official` for comparison studies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, get_args

import torch
from torch import Tensor

from mce.data.dataset import Batch
from mce.methods.base import MethodInputs, MethodSpec, StepResult
from mce.methods.official import official_contributions, official_row_weights
from mce.nn.model import MultimodalModel, full_rows
from mce.science.lce import batch_factor, dataset_factor
from mce.science.rce import (
    RowTotals,
    RowWeights,
    aux_loss,
    single_loss,
    subset_loss,
    subset_row_weights,
)
from mce.science.shapley import (
    CoalitionPlan,
    Method,
    coalition_plan,
    mask_to_presence,
    plan_shapley,
)
from mce.support.typing import Phi, Rows

__all__ = ["ShapleyMode", "Weighting", "Contribution", "MCEConfig", "MCEMethod", "SPEC"]

ShapleyMode = Literal["exact", "mc", "sampled", "official"]
Weighting = Literal["paper", "official"]
Contribution = Callable[[CoalitionPlan, Tensor], Phi]
"""(plan, v Tensor[R] row utilities) -> Tensor[N_b, M] whose column sums are phi_m of Eq. 8."""

MAX_STEP_MODALITIES = 20  # 2^20 float64 entries of per-mask and per-subset sums: 16 MiB a step

# What each option value runs: (plan method, contribution to factor B) and the row weights.
# The "official" entries are the authors' code's formulas (mce.methods.official).
_SHAPLEY: dict[str, tuple[Method, Contribution]] = {
    "exact": ("exact", plan_shapley),  # Eq. 5 on every subset
    "mc": ("mc", plan_shapley),  # Eq. 5 estimated from K permutations per sample
    "sampled": ("sampled", plan_shapley),  # Eq. 5 estimated from row_budget + 1 rows per sample
    "official": ("exact", official_contributions),  # the authors' batch formula, every subset
}
# The row weights average with the global batch's denominators (one process: its batch's).
_WEIGHTING: dict[str, RowWeights] = {
    "paper": subset_row_weights,  # Eqs. 11, 13: per subset, then over subsets
    "official": official_row_weights,  # the authors' per-sample weighting of proper subsets
}


@dataclass(frozen=True)
class MCEConfig:
    """MCE switches and weights; each Table 2 ablation is one combination of the use_* flags.

    Raises:
        ValueError: an unknown ``shapley`` or ``weighting``, a non-positive ``mc_k`` or
            ``row_budget``, or ``weighting="official"`` with ``shapley="mc"`` or ``"sampled"``
            (the authors' weighting divides by the 2^|A_n| - 1 rows of an exact plan).
    """

    # exact Eq. 5; Monte Carlo with mc_k permutations; the full set and row_budget drawn subsets
    # per sample (unbiased); or the authors' code's formula (exact rows)
    shapley: ShapleyMode = field(
        default="exact",
        metadata={
            "help": "exact Shapley values (Eq. 5), Monte Carlo permutations, the full set and "
            "--row-budget sampled subsets per sample (unbiased), or the authors' code's batch "
            "formula (not Eq. 5; for comparison studies)"
        },
    )
    # permutations per sample for Monte Carlo
    mc_k: int = field(
        default=100, metadata={"help": "permutations per sample for --shapley mc", "minimum": 1}
    )
    # proper subsets drawn per sample besides the full set, shapley="sampled"
    row_budget: int = field(
        default=3,
        metadata={
            "help": "proper subsets drawn per sample besides the full set for --shapley sampled",
            "minimum": 1,
        },
    )
    lambda_single: float = field(default=1.0, metadata={"help": "weight of L_single (Eq. 9)"})
    lambda_sub: float = field(default=1.0, metadata={"help": "weight of L_sub (Eq. 11)"})
    lambda_aux: float = field(default=1.0, metadata={"help": "weight of L_aux (Eq. 13)"})
    # dataset factor A (Eq. 3); off: A = 1
    use_a: bool = field(
        default=True,
        metadata={"flag": "--no-a", "help": "drop factor A (A = 1; Table 2 ablation)"},
    )
    # batch factor B (Eq. 8); off: B = 1 and no Shapley values
    use_b: bool = field(
        default=True,
        metadata={
            "flag": "--no-b",
            "help": "drop factor B (B = 1, no Shapley values or unimodal pretraining)",
        },
    )
    use_single: bool = field(
        default=True,
        metadata={"flag": "--no-single", "help": "drop L_single (Table 2 ablation)"},
    )
    use_sub: bool = field(
        default=True, metadata={"flag": "--no-sub", "help": "drop L_sub (Table 2 ablation)"}
    )
    use_aux: bool = field(
        default=True, metadata={"flag": "--no-aux", "help": "drop L_aux (Table 2 ablation)"}
    )
    # row averaging of L_sub, L_aux: Eqs. 11/13 or authors' code
    weighting: Weighting = field(
        default="paper",
        metadata={
            "help": "row averaging of L_sub and L_aux: per subset as Eqs. 11 and 13, or per "
            "sample as the authors' code"
        },
    )
    # v_n(S) from an eval-mode, no-grad forward over the rows (dropout off; skipped when the
    # rows' modules have no dropout or batch norm, the training outputs being the same); False:
    # from the training forward's outputs, with dropout noise in phi (bench/utility_noise.py)
    clean_utility: bool = field(
        default=True,
        metadata={
            "help": "score v_n(S) from the training forward's outputs (with dropout noise) "
            "instead of an eval-mode, no-grad forward over the rows"
        },
    )

    def __post_init__(self) -> None:
        if self.shapley not in _SHAPLEY:
            raise ValueError(
                f"shapley must be one of {get_args(ShapleyMode)}, got {self.shapley!r}"
            )
        if self.weighting not in _WEIGHTING:
            raise ValueError(
                f"weighting must be one of {get_args(Weighting)}, got {self.weighting!r}"
            )
        if self.shapley == "mc" and self.mc_k < 1:
            raise ValueError(f"mc_k must be a positive int, got {self.mc_k!r}")
        if (
            isinstance(self.row_budget, bool)
            or not isinstance(self.row_budget, int)
            or self.row_budget < 1
        ):
            raise ValueError(f"row_budget must be a positive int, got {self.row_budget!r}")
        for name in ("lambda_single", "lambda_sub", "lambda_aux"):
            weight = getattr(self, name)
            if (
                isinstance(weight, bool)
                or not isinstance(weight, (int, float))
                or not (0.0 <= weight < float("inf"))
            ):
                raise ValueError(f"{name} must be a finite number >= 0, got {weight!r}")
        if self.shapley in ("mc", "sampled") and self.weighting == "official":
            raise ValueError(
                "weighting='official' (the authors' code) needs exact plans, "
                f"use it with shapley='exact' or 'official', not {self.shapley!r}"
            )


class MCEMethod:
    """The MCE objective.

    Args:
        inputs: per-sample loss and utility, presence counts (factor A), dataset size, seed, and
            ``upper`` (Tensor[N_train, M], factor B: U_m of a batch is the sum over its samples).
        config: switches and weights; default :class:`MCEConfig`.

    A step sums phi_m, U_m, the samples per presence mask and the rows per subset over the
    ranks (:meth:`MethodInputs.sum_over_ranks`: one all-reduce of 2M + 2^(M+1) floats, the
    identity in one process), takes A and B from those totals, and divides each loss term's
    sum over its own samples or rows by the global batch's count, times the world size. So B
    is that of the global batch on every rank (bit for bit one process's with exact plans
    whenever the float64 sums are exact) and the gradients averaged over the ranks are those
    of the global batch. Monte Carlo and sampled plans draw each rank's permutations from the
    step's seed plus ``rank x 2^40`` (rank 0's are one process's).

    Raises:
        ValueError: ``config.use_b`` without ``inputs.upper``; ``shapley="official"`` in a
            data-parallel run (the authors' batch formula is not a sum over samples).

    Example:
        >>> inputs = MethodInputs(loss, utility, counts, len(train), seed=0, upper=upper)
        >>> result = MCEMethod(inputs, MCEConfig(lambda_sub=2.0)).step(model, batch, step=0)
    """

    name = "mce"

    def __init__(self, inputs: MethodInputs, config: MCEConfig | None = None) -> None:
        config = MCEConfig() if config is None else config
        if config.use_b and inputs.upper is None:
            raise ValueError("factor B needs the unimodal upper bounds (upper)")
        num_modalities = int(inputs.counts.numel())
        if num_modalities > MAX_STEP_MODALITIES:
            raise ValueError(
                f"an MCE step sums its batch statistics over every presence mask and subset "
                f"(2^M entries): {num_modalities} modalities would need "
                f"{2 ** (num_modalities + 4) / 2**30:.1f} GiB a step; at most "
                f"{MAX_STEP_MODALITIES} are supported"
            )
        if config.use_b and config.shapley == "official" and inputs.ranks is not None:
            raise ValueError(
                "--shapley official (the authors' batch formula) depends on the whole batch at "
                "once and cannot be summed over ranks; use exact, mc or sampled, or one process"
            )
        self.inputs, self.config = inputs, config
        # A (Eq. 3) depends on the training split only: once
        self._factor_a = (
            dataset_factor(inputs.counts, inputs.dataset_size) if config.use_a else None
        )
        self.plan_method, self.contributions = _SHAPLEY[config.shapley]
        self.row_weights = _WEIGHTING[config.weighting]

    def _plan_rows(
        self, present: Tensor, num_modalities: int, step: int
    ) -> tuple[CoalitionPlan | None, Rows]:
        cfg = self.config
        if not (cfg.use_sub or cfg.use_aux or cfg.use_b):
            return None, full_rows(present)
        plan = coalition_plan(
            present,
            num_modalities,
            method=self.plan_method,
            k=cfg.mc_k,
            seed=self.inputs.seed * 1_000_003 + step + (self.inputs.rank << 40),
            budget=cfg.row_budget,
        )
        return plan, plan.rows

    def _row_utility(
        self, model: MultimodalModel, h: Tensor, rows: Tensor, outputs: Tensor, target: Tensor
    ) -> Tensor:
        """v_n(S) of every row (Eq. 4): of the training outputs, or (``clean_utility``) of an
        eval-mode forward of the same features and rows, so that dropout adds no noise to phi."""
        if not self.config.clean_utility or _same_in_training(model.row_modules()):
            return self.inputs.utility(outputs.detach(), target)
        modes = [(module, module.training) for module in model.modules()]
        try:
            model.eval()
            with torch.no_grad():
                _, clean = model.forward_rows(h.detach(), rows)
        finally:
            for module, training in modes:
                module.training = training
        return self.inputs.utility(clean, target)

    def _batch_upper(self, batch: Batch) -> Tensor:
        """Tensor[N_b, M]: the frozen unimodal models' utility on each sample of the batch."""
        upper = self.inputs.upper
        if isinstance(upper, Tensor):
            return upper[batch.index.to(upper.device)]
        assert upper is not None
        return upper(batch)

    def _forward(self, model: MultimodalModel, batch: Batch, step: int) -> _Rows:
        """Encode the batch, plan its rows and run them: one forward for every term."""
        present = batch.present
        h = model.encode(batch.inputs, present, batch.lengths, batch.context)
        plan, rows = self._plan_rows(present, model.num_modalities, step)
        tokens, outputs = model.forward_rows(h, rows)
        row_target = batch.target[rows[:, 0]]
        row_losses = self.inputs.loss(outputs, row_target)
        return _Rows(h, plan, rows, tokens, outputs, row_target, row_losses)

    def step(self, model: MultimodalModel, batch: Batch, step: int) -> StepResult:
        """``world_size x`` this rank's share of the global batch's loss (Eq. 14); in one
        process the batch's loss."""
        cfg, inputs = self.config, self.inputs
        present, num_modalities = batch.present, model.num_modalities
        h, plan, rows, tokens, outputs, row_target, row_losses = self._forward(model, batch, step)
        samples, subsets = rows[:, 0], rows[:, 1]

        # this rank's sums, then the global batch's: phi_m, U_m, samples with modality m,
        # samples, and rows per subset
        presence = mask_to_presence(present, num_modalities)
        phi = upper = torch.zeros(num_modalities, dtype=torch.float64, device=present.device)
        if cfg.use_b:
            utility = self._row_utility(model, h, rows, outputs, row_target)
            phi = self.contributions(plan, utility).double().sum(0)
            upper = (self._batch_upper(batch).to(present.device).double() * presence).sum(0)
        local = torch.cat(
            [
                phi,
                upper,
                presence.sum(0).double(),
                torch.tensor([float(present.shape[0])], device=present.device).double(),
                torch.bincount(subsets, minlength=1 << num_modalities).double(),
            ]
        )
        totals = inputs.sum_over_ranks(local)
        phi, upper, with_modality = totals[: 3 * num_modalities].view(3, num_modalities)
        counts = with_modality.long()  # samples of the global batch with modality m present
        rows_of = RowTotals(
            samples=totals[3 * num_modalities], subset_rows=totals[3 * num_modalities + 1 :]
        )

        ones = torch.ones(num_modalities, device=present.device)
        factor_a, factor_b = ones, ones
        if cfg.use_a:
            assert self._factor_a is not None
            factor_a = self._factor_a.to(present.device)
        if cfg.use_b:
            factor_b = batch_factor(upper, phi, counts)
        weights = factor_a * factor_b
        logs: dict[str, float] = {}
        if cfg.use_b:
            statistics = zip(phi.float().tolist(), upper.float().tolist(), factor_b.tolist())
            for name, (phi_m, upper_m, b_m) in zip(model.modalities, statistics):
                logs[f"phi/{name}"], logs[f"U/{name}"], logs[f"B/{name}"] = phi_m, upper_m, b_m
        for name, a_m, count in zip(model.modalities, factor_a.tolist(), counts.tolist()):
            logs[f"A/{name}"] = a_m
            logs[f"count/{name}"] = float(count)  # present in the (global) batch

        # each term: this rank's sum over the global batch's count, times the world size
        world = inputs.world_size
        share = world * present.shape[0] / float(rows_of.samples)  # 1.0 in one process
        full = subsets == present[samples]  # one full row per sample
        l_task = row_losses[full].mean() * share  # its sum / global samples x world
        row_weights = world * self.row_weights(rows, present, rows_of)

        def weighted(values: Tensor, rows: Tensor, present: Tensor) -> Tensor:
            return (values * row_weights.to(values.dtype)).sum()

        loss = l_task
        logs["l_task"] = l_task.item()
        if cfg.use_single:
            unimodal = model.unimodal_outputs(h, present)
            l_single = world * single_loss(unimodal, batch.target, inputs.loss, weights, counts)
            loss = loss + cfg.lambda_single * l_single
            logs["l_single"] = l_single.item()
        if cfg.use_sub:
            l_sub = subset_loss(row_losses, rows, present, weighted)
            loss = loss + cfg.lambda_sub * l_sub
            logs["l_sub"] = l_sub.item()
        if cfg.use_aux:
            l_aux = aux_loss(tokens, model.feature_tokens(h), rows, present, weights, weighted)
            loss = loss + cfg.lambda_aux * l_aux
            logs["l_aux"] = l_aux.item()
        logs["loss"] = loss.item()
        logs["rows"] = float(rows_of.subset_rows.sum())
        return StepResult(loss, logs)


class _Rows(NamedTuple):
    """One step's forward: features, plan, rows and their outputs and task losses."""

    h: Any
    plan: CoalitionPlan | None
    rows: Rows
    tokens: Tensor
    outputs: Tensor
    row_target: Tensor
    row_losses: Tensor


def _same_in_training(modules) -> bool:
    """Whether these modules compute in training what they compute in eval mode: no active
    dropout (``nn.Dropout*`` or attention dropout) and no batch norm. Then the training
    forward's outputs are the clean utilities' and the eval-mode pass is skipped."""
    for root in modules:
        for module in root.modules() if root is not None else ():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                return False
            if isinstance(module, torch.nn.modules.dropout._DropoutNd) and module.p > 0:
                return False
            if isinstance(module, torch.nn.MultiheadAttention) and module.dropout > 0:
                return False
    return True


def _build(inputs: MethodInputs, options: Any) -> MCEMethod:
    if options is not None and not isinstance(options, MCEConfig):
        raise TypeError(f"mce options must be an MCEConfig, got {type(options).__name__}")
    return MCEMethod(inputs, options)


def _needs_upper_bounds(options: Any) -> bool:
    return (MCEConfig() if options is None else options).use_b


SPEC = MethodSpec(
    name="mce",
    summary="Modality Capability Enhancement (Eq. 14): L_task + L_single + L_sub + L_aux, A and B",
    options=MCEConfig,
    build=_build,
    needs_upper_bounds=_needs_upper_bounds,
)
