"""The task contract."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from mce.config import HyperParameters
from mce.data.dataset import MultimodalData
from mce.model import MultimodalModel


def classification_loss(outputs: Tensor, target: Tensor) -> Tensor:
    """Per-sample cross-entropy [B]."""
    return F.cross_entropy(outputs, target, reduction="none")


def classification_utility(outputs: Tensor, target: Tensor) -> Tensor:
    """Per-sample accuracy in {0, 1} [B] (the utility of Eq. 4 for classification)."""
    return (outputs.argmax(dim=-1) == target).to(torch.float32)


@dataclass(frozen=True)
class Task:
    """What a data set brings: its data, its model, its loss, utility and hyper-parameters.

    A user's own data set is a ``Task`` too (see ``examples/own_data.py``): the command line
    loads it with ``--task package.module:ATTRIBUTE``.

    Attributes:
        name: task name on the command line and in reports.
        modalities: modality names; their order defines the presence bits.
        load: data_dir (None for data that needs no folder) -> (train, test) splits; a
            sample's ``present`` bitmask says which modalities it has before masking.
        build_model: () -> a fresh MultimodalModel (seeded by the caller).
        loss: (outputs, target) -> per-sample loss [B].
        utility: (outputs, target) -> per-sample utility in [0, 1] [B] (the v of Eq. 4).
        metric_name: what the utility measures, for reports.
        hparams: the task's hyper-parameters (its Table 1 row).
        needs_data_dir: whether ``--data-dir`` is required.
    """

    name: str
    modalities: tuple[str, ...]
    load: Callable[[Path | None], tuple[MultimodalData, MultimodalData]]
    build_model: Callable[[], MultimodalModel]
    loss: Callable[[Tensor, Tensor], Tensor] = classification_loss
    utility: Callable[[Tensor, Tensor], Tensor] = classification_utility
    metric_name: str = "accuracy"
    hparams: HyperParameters = field(default_factory=HyperParameters)
    needs_data_dir: bool = False
