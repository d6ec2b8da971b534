"""Evaluation on every non-empty modality combination and their average (Tables 3-5)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from mce.data.dataset import MultimodalData
from mce.model import MultimodalModel, combination_rows

__all__ = ["combination_name", "evaluate_combinations", "evaluate_unimodal_heads"]


def combination_name(mask: int, modalities: Sequence[str]) -> str:
    return "+".join(name for m, name in enumerate(modalities) if (mask >> m) & 1)


@torch.no_grad()
def evaluate_combinations(
    model: MultimodalModel,
    utility: Callable[[Tensor, Tensor], Tensor],
    data: MultimodalData,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> dict[str, float]:
    """Mean ``utility(outputs, target)`` of the model on ``data`` for each non-empty combination
    C of modalities (each sample given C & its present set; samples where that is empty are
    left out of C), plus ``average``, the unweighted mean over combinations. All combinations of
    a batch run as one batched forward."""
    model.eval()
    combos = list(range(1, 1 << model.num_modalities))
    totals = torch.zeros(len(combos), dtype=torch.float64)
    counts = torch.zeros(len(combos), dtype=torch.float64)
    batches = data.batches(batch_size)
    for batch in tqdm(
        batches,
        total=-(-len(data) // batch_size),
        desc="evaluate",
        disable=not progress,
        leave=False,
    ):
        batch = batch.to(device)
        h = model.encode(batch.inputs, batch.present)
        rows, which = combination_rows(batch.present, combos)
        _, outputs = model.forward_rows(h, rows)
        values = utility(outputs, batch.target[rows[:, 0]]).double().cpu()
        totals.index_add_(0, which.cpu(), values)
        counts.index_add_(0, which.cpu(), torch.ones_like(values))
    scores = {
        combination_name(c, model.modalities): float(totals[i] / counts[i])
        for i, c in enumerate(combos)
        if counts[i] > 0
    }
    scores["average"] = sum(scores.values()) / len(scores)
    return scores


@torch.no_grad()
def evaluate_unimodal_heads(
    model: MultimodalModel,
    utility: Callable[[Tensor, Tensor], Tensor],
    data: MultimodalData,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Mean ``utility`` of each modality's unimodal head (encoder -> head, as L_single trains
    it, Eq. 9) on the samples of ``data`` where that modality is present: the capability of the
    modality's encoder inside the trained model (Fig. 9).

    A method without L_single (the baseline, ablations without it) never trains the heads, so
    their score is that of an untrained head. Modalities present in no sample are left out.

    Returns:
        {modality: mean utility in [0, 1]}.
    """
    model.eval()
    totals = torch.zeros(model.num_modalities, dtype=torch.float64)
    counts = torch.zeros(model.num_modalities, dtype=torch.float64)
    for batch in data.batches(batch_size):
        batch = batch.to(device)
        h = model.encode(batch.inputs, batch.present)
        for m, (index, outputs) in model.unimodal_outputs(h, batch.present).items():
            values = utility(outputs, batch.target[index]).double()
            totals[m] += float(values.sum())
            counts[m] += values.numel()
    return {
        name: float(totals[m] / counts[m])
        for m, name in enumerate(model.modalities)
        if counts[m] > 0
    }
