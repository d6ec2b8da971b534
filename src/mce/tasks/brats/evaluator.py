"""BraTS inference and evaluation on whole volumes, by a sliding window of the training crop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from mce.data.dataset import MultimodalData
from mce.evaluation.combinations import Evaluation, Evaluator
from mce.tasks.brats.segmentation import (
    SlidingWindow,
    evaluate_segmentation,
    evaluate_segmentation_heads,
)

__all__ = ["BratsEvaluator"]


@dataclass(frozen=True)
class BratsEvaluator(Evaluator):
    """Inference and evaluation over whole volumes (``window``: mmFormer's sliding window of
    the training crop)."""

    window: SlidingWindow

    def infer(self, model: Callable[[Tensor], Tensor], x: Tensor, lengths=None, context=None):
        """The outputs of ``model`` on whole volumes x [B, C, D, H, W]."""
        return self.window(model, x)

    def evaluate(
        self,
        task,
        model,
        data: MultimodalData,
        device: torch.device | str,
        progress: bool,
        score_on: str = "available",
    ) -> Evaluation:
        """Dice of every modality combination
        (:func:`mce.tasks.brats.segmentation.evaluate_segmentation`)."""
        return evaluate_segmentation(
            model, data, self.window, device=device, progress=progress, score_on=score_on
        )

    def evaluate_heads(
        self, task, model, data: MultimodalData, device: torch.device | str
    ) -> dict[str, float]:
        """Dice of each modality's unimodal head
        (:func:`mce.tasks.brats.segmentation.evaluate_segmentation_heads`)."""
        return evaluate_segmentation_heads(model, data, self.window, device=device)
