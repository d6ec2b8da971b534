"""Evaluation on every non-empty modality combination and their average (Tables 3-5)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from mce.data.dataset import Batch, MultimodalData
from mce.nn.model import MultimodalModel, combination_rows, run_unimodal
from mce.support import distributed
from mce.training.config import SCORE_ON

__all__ = [
    "CombinationScores",
    "Evaluation",
    "Evaluator",
    "combination_name",
    "combination_outputs",
    "evaluate_combinations",
    "evaluate_unimodal_heads",
    "evaluation_batches",
    "modality_means",
    "scores_complete",
    "with_average",
]


def scores_complete(score_on: str) -> bool:
    """Whether ``score_on`` ("available" or "complete") scores complete samples only.

    Raises:
        ValueError: another value.
    """
    if score_on not in SCORE_ON:
        raise ValueError(f"score_on must be one of {', '.join(SCORE_ON)}, got {score_on!r}")
    return score_on == "complete"


@dataclass(frozen=True)
class Evaluation:
    """What :func:`evaluate_combinations` measured, all values in [0, 1].

    Attributes:
        scores: {combination or "average": mean per-sample utility} (the primary score).
        metrics: {metric: {combination or "average": value}} of the extra split-level metrics.
        samples: {combination: how many samples scored it} (empty where not counted).
    """

    scores: dict[str, float]
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    samples: dict[str, int] = field(default_factory=dict)

    def value(self, metric: str = "") -> float:
        """The average over combinations of ``metric`` ("" : the utility)."""
        return self.metrics[metric]["average"] if metric else self.scores["average"]


def combination_name(mask: int, modalities: Sequence[str]) -> str:
    return "+".join(name for m, name in enumerate(modalities) if (mask >> m) & 1)


class CombinationScores:
    """Per-combination sums of a split's scores, for every non-empty combination of
    ``modalities``: each scored row adds its values (one per column) and a count of 1 to its
    combination. The sums are float64 and, in a data-parallel run, summed over the ranks once,
    on the first read (every rank must read them in the same order).

    Example:
        >>> scores = CombinationScores(model.modalities, ("utility",))
        >>> scores.add(which, utility(outputs, targets)[:, None])
        >>> scores.means()["utility"]  # {combination: mean, ..., "average": mean of those}
    """

    def __init__(self, modalities: Sequence[str], columns: Sequence[str]) -> None:
        self.modalities = tuple(modalities)
        self.columns = tuple(columns)
        self.combinations = list(range(1, 1 << len(self.modalities)))
        self.sums = torch.zeros(len(self.combinations), len(self.columns), dtype=torch.float64)
        self.counts = torch.zeros(len(self.combinations), dtype=torch.float64)
        self._reduced = False

    def add(self, which: Tensor, values: Tensor) -> None:
        """Add rows: ``which`` [R], each row's index into :attr:`combinations`, and ``values``
        [R, len(columns)]."""
        if self._reduced:
            raise RuntimeError("CombinationScores: add after the sums were read")
        which = which.cpu()
        self.sums.index_add_(0, which, values.double().cpu())
        self.counts.index_add_(0, which, torch.ones(len(which), dtype=torch.float64))

    def _reduce(self) -> None:
        if not self._reduced:
            self.sums = distributed.sum_across_ranks(self.sums)
            self.counts = distributed.sum_across_ranks(self.counts)
            self._reduced = True

    def scored(self) -> dict[int, str]:
        """{index: combination name} of the combinations with at least one row."""
        self._reduce()
        return {
            i: combination_name(c, self.modalities)
            for i, c in enumerate(self.combinations)
            if self.counts[i] > 0
        }

    def samples(self) -> dict[str, int]:
        """{combination: rows scored, i.e. samples} of the combinations with at least one."""
        return {name: int(self.counts[i]) for i, name in self.scored().items()}

    def means(self) -> dict[str, dict[str, float]]:
        """{column: {combination: sum / count, "average": mean over the combinations}}."""
        scored = self.scored()
        return {
            column: with_average(
                {name: float(self.sums[i, j] / self.counts[i]) for i, name in scored.items()}
            )
            for j, column in enumerate(self.columns)
        }

    def ratios(self, numerator: str, denominator: str, empty: float = 1.0) -> dict[str, float]:
        """{combination: sum of ``numerator`` / sum of ``denominator`` (``empty`` where that is
        0), "average": mean over the combinations}."""
        scored = self.scored()
        top, bottom = self.columns.index(numerator), self.columns.index(denominator)
        return with_average(
            {
                name: float(self.sums[i, top] / self.sums[i, bottom])
                if self.sums[i, bottom] > 0
                else empty
                for i, name in scored.items()
            }
        )

    def evaluation(self, score: str = "utility") -> Evaluation:
        """The means as an :class:`Evaluation`: column ``score`` as the scores, every other
        column as a metric, and the samples of each combination."""
        table = self.means()
        return Evaluation(table.pop(score), table, self.samples())


def with_average(values: dict[str, float]) -> dict[str, float]:
    """``values`` with "average", their unweighted mean, added."""
    return {**values, "average": sum(values.values()) / len(values)}


def evaluation_batches(
    data: MultimodalData, batch_size: int, device: torch.device | str, progress: bool
) -> Iterator[Batch]:
    """This rank's shard of ``data`` (:func:`mce.support.distributed.shard`) in batches on
    ``device``, with a progress bar."""
    data = distributed.shard(data)
    for batch in tqdm(
        data.batches(batch_size),
        total=-(-len(data) // batch_size),
        desc="evaluate",
        disable=not progress,
        leave=False,
    ):
        yield batch.to(device)


def combination_outputs(
    model: MultimodalModel,
    data: MultimodalData,
    batch_size: int,
    device: torch.device | str,
    progress: bool,
    score_on: str = "available",
) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """(outputs, targets, which) of every row of every combination of this rank's shard of
    ``data``, batch by batch, all combinations of a batch in one forward: ``which`` is each
    row's index into the combinations ``1 .. 2^M - 1`` (:func:`mce.nn.model.combination_rows`;
    ``score_on="complete"``: rows of the samples holding all of the combination only).
    Call it under ``torch.no_grad()`` with the model in eval mode."""
    combinations = list(range(1, 1 << model.num_modalities))
    complete = scores_complete(score_on)
    for batch in evaluation_batches(data, batch_size, device, progress):
        h = model.encode(batch.inputs, batch.present, batch.lengths, batch.context)
        rows, which = combination_rows(batch.present, combinations, complete)
        _, outputs = model.forward_rows(h, rows)
        yield outputs, batch.target[rows[:, 0]], which


@torch.no_grad()
def evaluate_combinations(
    model: MultimodalModel,
    utility: Callable[[Tensor, Tensor], Tensor],
    data: MultimodalData,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    progress: bool = True,
    metrics: Mapping[str, Callable[[Tensor, Tensor], float]] | None = None,
    score_on: str = "available",
) -> Evaluation:
    """Mean ``utility(outputs, target)`` of the model on ``data`` for each non-empty combination
    C of modalities, plus ``average``, the unweighted mean over combinations. All combinations
    of a batch run as one batched forward.

    ``score_on`` says which samples score C: "available" (each sample given C & its present
    set; samples where that is empty are left out of C) or "complete" (only the samples that
    hold every modality of C, given C: the paper's protocol of complete samples with
    modalities dropped). On a split where some samples lack modalities, "available" scores
    the combinations on different sets of samples; ``Evaluation.samples`` counts each.

    Each of ``metrics`` (name -> function of the outputs of every sample of one combination,
    concatenated, and their targets) is computed once per combination over the whole split,
    plus its ``average`` over combinations. To do so the outputs are kept, detached, on the CPU
    (fine for classification; dense outputs would need streaming metrics).

    In a data-parallel run every rank must call it: each scores its contiguous shard of ``data``
    (:func:`mce.support.distributed.shard`), the totals and counts are summed over the ranks
    (float64) and the kept outputs gathered in rank order, i.e. in the split's order, so every rank
    returns what one process computes (the same numbers whenever the float64 sums are exact, e.g.
    for accuracy).

    Returns:
        :class:`Evaluation` with the utility ``scores`` and the ``metrics``.
    """
    model.eval()
    metrics = dict(metrics or {})
    scores = CombinationScores(model.modalities, ("utility",))
    kept: list[tuple[Tensor, Tensor, Tensor]] = []  # (outputs, targets, combination) per batch
    for outputs, targets, which in combination_outputs(
        model, data, batch_size, device, progress, score_on
    ):
        scores.add(which, utility(outputs, targets)[:, None])
        if metrics:
            kept.append((outputs.detach().cpu(), targets.detach().cpu(), which.cpu()))
    if metrics and distributed.is_active():
        kept = [part for parts in distributed.gather_objects(kept) for part in parts]
    evaluation = scores.evaluation()
    return Evaluation(
        evaluation.scores, _split_metrics(metrics, kept, scores.scored()), evaluation.samples
    )


def _split_metrics(
    metrics: Mapping[str, Callable[[Tensor, Tensor], float]],
    kept: list[tuple[Tensor, Tensor, Tensor]],
    scored: Mapping[int, str],
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
        for i, name in scored.items():
            chosen = which == i
            values[name] = float(compute(outputs[chosen], targets[chosen]))
        table[metric] = with_average(values)
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


class Evaluator:
    """How a task's models are scored outside training: every modality combination of a split
    (:meth:`evaluate`), each unimodal head (:meth:`evaluate_heads`), and a unimodal model's
    outputs on whole inputs (:meth:`infer`, the upper-bound utilities).

    The defaults score by the task's utility and metrics, one batch of rows at a time; a task whose
    inputs need more (dense tasks: a sliding window over whole volumes, dataset-level metrics)
    subclasses it and sets ``Task.evaluator``. In a data-parallel run every rank calls
    :meth:`evaluate` with the whole split: it may shard the work
    (:func:`mce.support.distributed.shard`, :func:`~mce.support.distributed.sum_across_ranks`, as
    the defaults and the built-in tasks do) or compute everything on each rank.
    """

    def evaluate(
        self,
        task: Any,
        model: MultimodalModel,
        data: MultimodalData,
        device,
        progress: bool,
        score_on: str = "available",
    ) -> Evaluation:
        """Every non-empty modality combination of ``data`` (:func:`evaluate_combinations`);
        ``score_on``: which samples score a combination ("available" or "complete"). A
        subclass whose ``evaluate`` takes no ``score_on`` is run only with "available"."""
        return evaluate_combinations(
            model,
            task.utility,
            data,
            device=device,
            progress=progress,
            metrics=task.metrics,
            score_on=score_on,
        )

    def evaluate_heads(
        self, task: Any, model: MultimodalModel, data: MultimodalData, device
    ) -> dict[str, float]:
        """{modality: mean utility of its unimodal head} (:func:`evaluate_unimodal_heads`)."""
        return evaluate_unimodal_heads(
            model, task.utility, data, batch_size=min(256, task.inference_batch), device=device
        )

    def infer(
        self,
        model: nn.Module,
        x: Tensor,
        lengths: Tensor | None = None,
        context: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        """A unimodal model's outputs on a batch of one modality's inputs
        (:func:`mce.nn.model.run_unimodal`)."""
        return run_unimodal(model, x, lengths, context)
