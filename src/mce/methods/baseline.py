"""Plain training: the task loss of each sample's prediction from its present modalities."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from mce.data.dataset import Batch
from mce.methods.base import MethodInputs, MethodSpec, StepResult
from mce.nn.model import MultimodalModel, full_rows

__all__ = ["BaselineMethod", "SPEC"]


class BaselineMethod:
    """L = L_task on the full rows (n, A_n), through the same model as MCE.

    In a data-parallel run (``inputs.ranks``) the mean is over the global batch: a rank's loss
    is ``world_size x`` its loss sum over the global batch's sample count (one all-reduce).

    Args:
        inputs: what the trainer hands a method; only ``inputs.loss`` and ``inputs.ranks`` are
            used.
    """

    name = "baseline"

    def __init__(self, inputs: MethodInputs) -> None:
        self.loss_fn = inputs.loss
        self.inputs = inputs

    def step(self, model: MultimodalModel, batch: Batch, step: int) -> StepResult:
        _, _, loss = self.task_loss(model, batch)
        return StepResult(loss, {"loss": loss.item(), "l_task": loss.item()})

    def task_loss(self, model: MultimodalModel, batch: Batch) -> tuple[Any, Tensor, Tensor]:
        """The batch's encoder features, the full rows' outputs and L_task (over the global
        batch in a data-parallel run)."""
        h = model.encode(batch.inputs, batch.present, batch.lengths, batch.context)
        _, outputs = model.forward_rows(h, full_rows(batch.present))
        losses = self.loss_fn(outputs, batch.target)
        ranks = self.inputs.ranks
        if ranks is None:
            return h, outputs, losses.mean()
        count = self.inputs.sum_over_ranks(torch.tensor([losses.shape[0]], dtype=torch.float64))
        return h, outputs, ranks.world_size * losses.sum() / count.to(losses)[0]


def _build(inputs: MethodInputs, options: Any) -> BaselineMethod:
    if options is not None:
        raise ValueError(f"the baseline method takes no options, got {options!r}")
    return BaselineMethod(inputs)


SPEC = MethodSpec(
    name="baseline",
    summary="the task loss on each sample's present modalities only",
    options=None,
    build=_build,
    needs_upper_bounds=lambda options: False,
)
