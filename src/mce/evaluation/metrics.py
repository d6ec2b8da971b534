"""Split-level metrics: values computed over every sample of a split at once (per modality
combination), unlike a task's per-sample utility, whose mean is the primary score.

A metric is a function ``(outputs, targets) -> float in [0, 1]`` where ``outputs`` are the model's
outputs for every sample of one modality combination, concatenated along the first dimension (for
classification: logits [N, classes]), and ``targets`` their targets [N]. A task lists its metrics in
:attr:`mce.tasks.Task.metrics`; :func:`mce.evaluation.combinations.evaluate_combinations` computes
them for each combination and their average over the combinations.

Example:
    >>> import torch
    >>> logits = torch.tensor([[2.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    >>> macro_recall(logits, torch.tensor([0, 1, 1]))  # recall 1 on class 0, 1/2 on class 1
    0.75
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["CLASSIFICATION_METRICS", "Metric", "macro_f1", "macro_recall"]

Metric = Callable[[Tensor, Tensor], float]
"""(outputs of every sample of one combination, targets) -> value in [0, 1]."""


def _labels(outputs: Tensor, targets: Tensor) -> tuple[list[int], list[int], list[int]]:
    """Targets, predictions (argmax of the outputs' last dimension) and the classes present in
    either, sorted, as Python lists for scikit-learn."""
    predictions = outputs.detach().argmax(dim=-1).reshape(-1).cpu()
    truth = targets.detach().reshape(-1).cpu()
    if predictions.shape != truth.shape:
        raise ValueError(
            f"{predictions.numel()} predictions for {truth.numel()} targets: outputs must be "
            "[N, classes] and targets [N]"
        )
    classes = torch.unique(torch.cat([truth, predictions])).tolist()
    return truth.tolist(), predictions.tolist(), classes


def macro_recall(outputs: Tensor, targets: Tensor) -> float:
    """Unweighted average recall (UAR): the mean over classes of each class's recall.

    Args:
        outputs: logits or scores [N, classes]; the prediction is their argmax.
        targets: class indices [N].

    Returns:
        The mean recall over the classes present in the targets or the predictions (a class
        only predicted has recall 0), in [0, 1]; 0 for an empty split.
    """
    from sklearn.metrics import recall_score

    truth, predictions, classes = _labels(outputs, targets)
    if not classes:
        return 0.0
    return float(recall_score(truth, predictions, labels=classes, average="macro", zero_division=0))


def macro_f1(outputs: Tensor, targets: Tensor) -> float:
    """Macro-F1: the unweighted mean over classes of each class's F1 score.

    Args:
        outputs: logits or scores [N, classes]; the prediction is their argmax.
        targets: class indices [N].

    Returns:
        The mean F1 over the classes present in the targets or the predictions (0 for a class
        with no true positive), in [0, 1]; 0 for an empty split.
    """
    from sklearn.metrics import f1_score

    truth, predictions, classes = _labels(outputs, targets)
    if not classes:
        return 0.0
    return float(f1_score(truth, predictions, labels=classes, average="macro", zero_division=0))


CLASSIFICATION_METRICS: dict[str, Metric] = {"uar": macro_recall, "f1": macro_f1}
"""The extra metrics of emotion recognition (IEMOCAP): UAR and macro-F1."""
