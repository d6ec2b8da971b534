"""Plain training: the task loss of each sample's prediction from its present modalities."""

from __future__ import annotations

from typing import Any

from mce.data.dataset import Batch
from mce.methods.base import MethodInputs, MethodSpec, StepResult
from mce.model import MultimodalModel, full_rows

__all__ = ["BaselineMethod", "SPEC"]


class BaselineMethod:
    """L = L_task on the full rows (n, A_n), through the same model as MCE.

    Args:
        inputs: what the trainer hands a method; only ``inputs.loss`` is used.
    """

    name = "baseline"

    def __init__(self, inputs: MethodInputs) -> None:
        self.loss_fn = inputs.loss

    def step(self, model: MultimodalModel, batch: Batch, step: int) -> StepResult:
        h = model.encode(batch.inputs, batch.present, batch.lengths, batch.context)
        _, outputs = model.forward_rows(h, full_rows(batch.present))
        loss = self.loss_fn(outputs, batch.target).mean()
        return StepResult(loss, {"loss": loss.item(), "l_task": loss.item()})


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
