"""Plain training: the task loss of each sample's prediction from its present modalities."""

from __future__ import annotations

from mce.data.dataset import Batch
from mce.methods.base import StepResult
from mce.model import MultimodalModel, full_rows
from mce.tasks.base import Task


class BaselineMethod:
    """L = L_task on the full rows (n, A_n), through the same model as MCE."""

    name = "baseline"

    def __init__(self, task: Task) -> None:
        self.task = task

    def step(self, model: MultimodalModel, batch: Batch, step: int) -> StepResult:
        h = model.encode(batch.inputs, batch.present)
        _, outputs = model.forward_rows(h, full_rows(batch.present))
        loss = self.task.loss(outputs, batch.target).mean()
        return StepResult(loss, {"loss": loss.item(), "l_task": loss.item()})
