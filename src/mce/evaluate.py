"""Evaluation on every non-empty modality combination and their average (Tables 3-5)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from tqdm.auto import tqdm

from mce import distributed
from mce.data.dataset import MultimodalData
from mce.model import MultimodalModel, combination_rows

__all__ = [
    "Evaluation",
    "combination_name",
    "evaluate_combinations",
    "evaluate_unimodal_heads",
    "modality_means",
]


@dataclass(frozen=True)
class Evaluation:
    """What :func:`evaluate_combinations` measured, all values in [0, 1].

    Attributes:
        scores: {combination or "average": mean per-sample utility} (the primary score).
        metrics: {metric: {combination or "average": value}} of the extra split-level metrics.
    """

    scores: dict[str, float]
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)

    def value(self, metric: str = "") -> float:
        """The average over combinations of ``metric`` ("" : the utility)."""
        return self.metrics[metric]["average"] if metric else self.scores["average"]


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
    metrics: Mapping[str, Callable[[Tensor, Tensor], float]] | None = None,
) -> Evaluation:
    """Mean ``utility(outputs, target)`` of the model on ``data`` for each non-empty combination
    C of modalities (each sample given C & its present set; samples where that is empty are
    left out of C), plus ``average``, the unweighted mean over combinations. All combinations of
    a batch run as one batched forward.

    Each of ``metrics`` (name -> function of the outputs of every sample of one combination,
    concatenated, and their targets) is computed once per combination over the whole split,
    plus its ``average`` over combinations. To do so the outputs are kept, detached, on the CPU
    (fine for classification; dense outputs would need streaming metrics).

    In a data-parallel run every rank must call it: each scores its contiguous shard of
    ``data`` (:func:`mce.distributed.shard`), the totals and counts are summed over the ranks
    (float64) and the kept outputs gathered in rank order, i.e. in the split's order, so every
    rank returns what one process computes (the same numbers whenever the float64 sums are
    exact, e.g. for accuracy).

    Returns:
        :class:`Evaluation` with the utility ``scores`` and the ``metrics``.
    """
    model.eval()
    metrics = dict(metrics or {})
    combos = list(range(1, 1 << model.num_modalities))
    totals = torch.zeros(len(combos), dtype=torch.float64)
    counts = torch.zeros(len(combos), dtype=torch.float64)
    kept: list[tuple[Tensor, Tensor, Tensor]] = []  # (outputs, targets, combination) per batch
    data = distributed.shard(data)
    batches = data.batches(batch_size)
    for batch in tqdm(
        batches,
        total=-(-len(data) // batch_size),
        desc="evaluate",
        disable=not progress,
        leave=False,
    ):
        batch = batch.to(device)
        h = model.encode(batch.inputs, batch.present, batch.lengths, batch.context)
        rows, which = combination_rows(batch.present, combos)
        _, outputs = model.forward_rows(h, rows)
        targets = batch.target[rows[:, 0]]
        values = utility(outputs, targets).double().cpu()
        totals.index_add_(0, which.cpu(), values)
        counts.index_add_(0, which.cpu(), torch.ones_like(values))
        if metrics:
            kept.append((outputs.detach().cpu(), targets.detach().cpu(), which.cpu()))
    if distributed.is_active():
        totals = distributed.sum_across_ranks(totals)
        counts = distributed.sum_across_ranks(counts)
        if metrics:
            kept = [part for parts in distributed.gather_objects(kept) for part in parts]
    names = {i: combination_name(c, model.modalities) for i, c in enumerate(combos)}
    scored = [i for i in range(len(combos)) if counts[i] > 0]
    scores = {names[i]: float(totals[i] / counts[i]) for i in scored}
    scores["average"] = sum(scores.values()) / len(scores)
    return Evaluation(scores, _split_metrics(metrics, kept, names, scored))


def _split_metrics(
    metrics: Mapping[str, Callable[[Tensor, Tensor], float]],
    kept: list[tuple[Tensor, Tensor, Tensor]],
    names: Mapping[int, str],
    scored: Sequence[int],
) -> dict[str, dict[str, float]]:
    """{metric: {combination: value, "average": mean}} from the kept outputs of every batch."""
    if not metrics or not kept:
        return {}
    outputs = torch.cat([o for o, _, _ in kept])
    targets = torch.cat([t for _, t, _ in kept])
    which = torch.cat([w for _, _, w in kept])
    table: dict[str, dict[str, float]] = {}
    for metric, compute in metrics.items():
        values = {}
        for i in scored:
            chosen = which == i
            values[names[i]] = float(compute(outputs[chosen], targets[chosen]))
        values["average"] = sum(values.values()) / len(values)
        table[metric] = values
    return table


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
    Sharded over the ranks of a data-parallel run as :func:`evaluate_combinations`.

    Returns:
        {modality: mean utility in [0, 1]}.
    """
    model.eval()
    totals = torch.zeros(model.num_modalities, dtype=torch.float64)
    counts = torch.zeros(model.num_modalities, dtype=torch.float64)
    for batch in distributed.shard(data).batches(batch_size):
        batch = batch.to(device)
        h = model.encode(batch.inputs, batch.present, batch.lengths, batch.context)
        for m, (index, outputs) in model.unimodal_outputs(h, batch.present).items():
            values = utility(outputs, batch.target[index]).double()
            totals[m] += float(values.sum())
            counts[m] += values.numel()
    return modality_means(totals, counts, model.modalities)


def modality_means(
    totals: Tensor, counts: Tensor, modalities: Sequence[str]
) -> dict[str, float]:
    """{modality: total / count} of per-modality sums (float64, summed over the ranks of a
    data-parallel run first); modalities with no sample are left out."""
    totals = distributed.sum_across_ranks(totals)
    counts = distributed.sum_across_ranks(counts)
    return {name: float(totals[m] / counts[m]) for m, name in enumerate(modalities) if counts[m] > 0}
