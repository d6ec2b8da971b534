"""Modality Capability Enhancement (Eq. 14): L_task + l_single L_single + l_sub L_sub + l_aux L_aux.

One coalition plan per batch feeds one batched forward; from it come L_task (the rows with
every present modality), L_sub (all rows), the detached utilities for the Shapley values and
factor B, and L_aux (the reconstructed tokens of the dropped modalities).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from mce.data.dataset import Batch
from mce.lce import dataset_factor, lce_factors
from mce.methods.base import StepResult
from mce.model import MultimodalModel, full_rows
from mce.rce import Weighting, aux_loss, single_loss, subset_loss
from mce.shapley import (
    CoalitionPlan,
    coalition_plan,
    mask_to_presence,
    official_batch_shapley,
    plan_shapley,
)
from mce.tasks.base import Task


@dataclass(frozen=True)
class MCEConfig:
    """MCE switches and weights; each Table 2 ablation is one combination of the use_* flags."""

    # exact Eq. 5; Monte Carlo with mc_k permutations; or the authors' code's formula (exact rows)
    shapley: Literal["exact", "mc", "official"] = "exact"
    mc_k: int = 100  # permutations per sample for Monte Carlo
    lambda_single: float = 1.0  # weight of L_single (Eq. 9)
    lambda_sub: float = 1.0  # weight of L_sub (Eq. 11)
    lambda_aux: float = 1.0  # weight of L_aux (Eq. 13)
    use_a: bool = True  # dataset factor A (Eq. 3); off: A = 1
    use_b: bool = True  # batch factor B (Eq. 8); off: B = 1 and no Shapley values
    use_single: bool = True  # L_single term
    use_sub: bool = True  # L_sub term
    use_aux: bool = True  # L_aux term
    weighting: Weighting = "paper"  # row averaging of L_sub, L_aux: Eqs. 11/13 or authors' code


class MCEMethod:
    """The MCE objective.

    Args:
        task: the task (loss, utility).
        config: switches and weights.
        counts: Tensor[M] presence counts of the training split (factor A).
        dataset_size: samples of the training split.
        upper: Tensor[N_train, M] utility of the frozen unimodal model of m on each training
            sample (0 where m is absent); U_m of a batch is the sum over its samples.
        seed: run seed (Monte Carlo plans use seed and step).
    """

    name = "mce"

    def __init__(
        self,
        task: Task,
        config: MCEConfig,
        counts: Tensor,
        dataset_size: int,
        upper: Tensor | None,
        seed: int,
    ) -> None:
        if config.use_b and upper is None:
            raise ValueError("factor B needs the unimodal upper bounds (upper)")
        if upper is not None:
            expected = (dataset_size, counts.shape[0])
            if tuple(upper.shape) != expected:
                shape = list(upper.shape)
                raise ValueError(
                    f"upper must have shape [N_train, M] = {list(expected)}, got {shape}"
                )
            if not bool(((upper >= 0) & (upper <= 1)).all()):
                raise ValueError(
                    "upper must hold per-sample utilities in [0, 1] (found NaN or out of range)"
                )
        self.task, self.config, self.counts = task, config, counts
        self.dataset_size, self.upper, self.seed = dataset_size, upper, seed

    def _plan_rows(self, present: Tensor, num_modalities: int, step: int):
        cfg = self.config
        if not (cfg.use_sub or cfg.use_aux or cfg.use_b):
            return None, full_rows(present)
        plan = coalition_plan(
            present,
            num_modalities,
            method="mc" if cfg.shapley == "mc" else "exact",
            k=cfg.mc_k,
            seed=self.seed * 1_000_003 + step,
        )
        return plan, plan.rows

    def _shapley(self, plan: CoalitionPlan, v: Tensor) -> Tensor:
        """Per-sample Shapley values [N, M]; the authors' batch values sit in row 0."""
        if self.config.shapley != "official":
            return plan_shapley(plan, v)
        phi = torch.zeros(plan.present.shape[0], plan.num_modalities, device=v.device)
        phi[0] = official_batch_shapley(plan, v)
        return phi

    def step(self, model: MultimodalModel, batch: Batch, step: int) -> StepResult:
        cfg, task = self.config, self.task
        present, num_modalities = batch.present, model.num_modalities
        h = model.encode(batch.inputs, present)
        plan, rows = self._plan_rows(present, num_modalities, step)
        tokens, outputs = model.forward_rows(h, rows)
        samples, subsets = rows[:, 0], rows[:, 1]
        row_target = batch.target[samples]
        row_losses = task.loss(outputs, row_target)
        full = subsets == present[samples]  # one full row per sample
        l_task = row_losses[full].mean()
        logs: dict[str, float] = {}

        ones = torch.ones(num_modalities, device=present.device)
        factor_a, factor_b = ones, ones
        if cfg.use_b:
            phi = self._shapley(plan, task.utility(outputs.detach(), row_target))
            presence = mask_to_presence(present, num_modalities).to(torch.float32)
            upper = (
                self.upper[batch.index.to(self.upper.device)].to(presence.device) * presence
            ).sum(0)
            factors = lce_factors(
                self.counts.to(present.device), self.dataset_size, present, upper.contiguous(), phi
            )
            factor_b = factors.b
            factor_a = factors.a if cfg.use_a else ones
            for m, name in enumerate(model.modalities):
                logs[f"phi/{name}"] = float(phi[:, m].sum())
                logs[f"U/{name}"] = float(upper[m])
                logs[f"B/{name}"] = float(factor_b[m])
        elif cfg.use_a:
            factor_a = dataset_factor(self.counts.to(present.device), self.dataset_size)
        weights = factor_a * factor_b
        for m, name in enumerate(model.modalities):
            logs[f"A/{name}"] = float(factor_a[m])

        loss = l_task
        logs["l_task"] = l_task.item()
        if cfg.use_single:
            l_single = single_loss(
                model.unimodal_outputs(h, present), batch.target, task.loss, weights
            )
            loss = loss + cfg.lambda_single * l_single
            logs["l_single"] = l_single.item()
        if cfg.use_sub:
            l_sub = subset_loss(row_losses, rows, present, cfg.weighting)
            loss = loss + cfg.lambda_sub * l_sub
            logs["l_sub"] = l_sub.item()
        if cfg.use_aux:
            l_aux = aux_loss(tokens, h, rows, present, weights, cfg.weighting)
            loss = loss + cfg.lambda_aux * l_aux
            logs["l_aux"] = l_aux.item()
        logs["loss"] = loss.item()
        logs["rows"] = float(rows.shape[0])
        return StepResult(loss, logs)
