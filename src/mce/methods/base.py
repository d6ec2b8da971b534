"""The contract every training method implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from torch import Tensor

from mce.data.dataset import Batch
from mce.model import MultimodalModel


@dataclass
class StepResult:
    """The loss to minimise and scalar logs of one training step."""

    loss: Tensor
    logs: dict[str, float] = field(default_factory=dict)


class TrainingMethod(Protocol):
    """batch -> loss + logs. ``step`` is the global step (seeds Monte Carlo plans)."""

    name: str

    def step(self, model: MultimodalModel, batch: Batch, step: int) -> StepResult: ...
