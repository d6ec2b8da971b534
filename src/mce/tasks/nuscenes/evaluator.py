"""nuScenes evaluation: Simple-BEV's dataset-level IoU for every modality combination."""

from __future__ import annotations

import torch

from mce.data.dataset import MultimodalData
from mce.evaluation.combinations import (
    CombinationScores,
    Evaluation,
    Evaluator,
    combination_outputs,
)
from mce.tasks.nuscenes.loss import intersection_union, iou_utility

__all__ = ["BevEvaluator", "evaluate_bev"]


@torch.no_grad()
def evaluate_bev(
    model,
    data: MultimodalData,
    device: torch.device | str = "cpu",
    progress: bool = True,
    score_on: str = "available",
) -> Evaluation:
    """Dataset-level IoU (sum of intersections / sum of unions over the split, Simple-BEV's
    protocol) for every non-empty combination, all combinations of a batch in one forward;
    ``metrics["sample_iou"]``: the mean per-sample IoU (the utility); ``score_on``: which
    samples score a combination (:func:`mce.evaluation.combinations.evaluate_combinations`). In a
    data-parallel run every rank scores its shard of ``data`` and the sums are all-reduced
    (every rank must call it)."""
    model.eval()
    scores = CombinationScores(model.modalities, ("intersection", "union", "sample_iou"))
    rows = combination_outputs(model, data, 1, device, progress, score_on)
    for outputs, target, which in rows:
        intersection, union = intersection_union(outputs, target)
        sample_iou = iou_utility(outputs, target).double()
        scores.add(which, torch.stack([intersection, union, sample_iou], 1))
    return Evaluation(
        scores.ratios("intersection", "union", empty=1.0),
        {"sample_iou": scores.means()["sample_iou"]},
        scores.samples(),
    )


class BevEvaluator(Evaluator):
    """The nuScenes task's scores: dataset-level IoU (:func:`evaluate_bev`); heads and
    upper-bound inference as the default."""

    def evaluate(
        self,
        task,
        model,
        data: MultimodalData,
        device,
        progress: bool,
        score_on: str = "available",
    ) -> Evaluation:
        return evaluate_bev(model, data, device, progress, score_on)
