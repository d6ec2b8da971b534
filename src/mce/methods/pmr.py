"""PMR (Fan et al., CVPR 2023, Prototypical Modal Rebalance) as its released code trains it,
on any task's model, with missing modalities.

**Prototypes** (the released ``calculate_prototype``). Before every epoch (so before epoch 0
and after every epoch), in eval mode and without gradients, a pass over a random share
(``pmr_prototype_share``, 10 %) of the training split, drawn from the stream ``(seed, "pmr",
epoch)``, divided between the ranks of a data-parallel run and read in batches as training
reads them (the task's random crops), sums the features of each modality m per class over the
samples that have m; the sums and counts are summed over the ranks, and
``P_new[m, c] = sum / count``. From the second pass on, ``P[m, c] <- (1 - mu) P_new[m, c] +
mu P[m, c]`` (``pmr_momentum``, 0 as the released scripts). A class without a sample of m in
a pass keeps its previous prototype; one that never had a sample of m has none and is left out
of m's prototype classifier (neither a logit nor a target) until it has one.
After ``pmr_modulation_ends`` the prototypes are no longer used and the pass is skipped.

**Features**. Vector tasks: the encoder features h[n, m] (the released code's pooled encoder
features). Dense tasks (:class:`~mce.nn.dense.MultiScaleFeatures`): the bottleneck, one feature
vector per voxel or BEV cell (the most semantic level, the one the fusion reads), with the
target brought to its grid by a majority vote over each cell's voxels (adaptive average
pooling of the one-hot labels; ties go to the lower class, and a cell where unlabelled voxels
are the majority is unlabelled). Targets may be class indices [N], label maps [N, *grid]
(BraTS) or (positive, valid) pairs [N, 2, *grid] (nuScenes: classes 0/1, invalid cells
unlabelled). The number of classes is the training split's largest label + 1.

**Loss** (the released ``train_epoch``)::

    L = L_task + sum_m coef_m L_m

- L_task: the task loss of each sample's prediction from its present modalities (mean over
  the batch).
- L_m: the cross-entropy of the prototype classifier of m, logits ``-||f - P[m, c]||``
  (Euclidean, :func:`torch.cdist`; features not detached, prototypes constants), averaged over
  the samples that have m and a position labelled with a class that has a prototype of m
  (dense: each sample's mean over those positions first).
- s_m: the true-class softmax score of the same classifier, averaged over the same samples
  (the released code sums it over the batch; with modalities missing at different rates a sum
  would rank modalities by how often they are present, so the mean is used).
- coef_m: the released hard switch. With two modalities, rho = s_a / s_v; the weaker one (the
  lower score) gets ``pmr_alpha``, the other 0; equal scores: both 0. With M modalities: every
  modality whose score is below the mean score of the modalities the batch has gets alpha
  (with two, exactly the released switch). Outside the epochs ``pmr_modulation_starts`` to
  ``pmr_modulation_ends`` (0-based, inclusive, as the released code) L = L_task.

In a data-parallel run the sample counts, score sums and loss denominators are those of the
global batch (one all-reduce), so two ranks compute what one process computes.

The paper's prototype entropy regulariser (PER) is not in the released code (its
``main_Proto_PER.py`` is missing from the repository) and is left out here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mce.data.dataset import Batch, MultimodalData
from mce.methods.base import EpochPlan, MethodInputs, MethodSpec, StepResult
from mce.nn.dense import MultiScaleFeatures
from mce.nn.model import MultimodalModel, full_rows
from mce.support.bits import samples_with_modality
from mce.support.seeding import stream

__all__ = [
    "PMRConfig",
    "PMRMethod",
    "prototype_subset",
    "feature_positions",
    "position_labels",
    "modulation_weights",
    "SPEC",
]

EVERY_EPOCH = 1_000_000  # default last modulated epoch: all of them


def _option(default: Any, help: str, **metadata: Any) -> Any:
    return field(default=default, metadata={"help": help, **metadata})


@dataclass(frozen=True)
class PMRConfig:
    """PMR's weight, modulation window, prototype momentum and pass size (the released
    defaults; the released CREMA-D script ends the modulation at epoch 70 of 130).

    Raises:
        ValueError: a negative or non-finite alpha; momentum outside [0, 1); a share outside
            (0, 1]; a negative start or an end before the start.
    """

    pmr_alpha: float = _option(
        1.0, "weight of the weaker modality's prototype cross-entropy (the released alpha)"
    )
    pmr_modulation_starts: int = _option(
        0, "first epoch (0-based) with the prototype loss", minimum=0
    )
    pmr_modulation_ends: int = _option(
        EVERY_EPOCH, "last epoch (0-based, inclusive) with the prototype loss", minimum=0
    )
    pmr_momentum: float = _option(
        0.0, "P <- (1 - mu) P_new + mu P_old from the second prototype pass on (momentum_coef)"
    )
    pmr_prototype_share: float = _option(
        0.1, "share of the training split each prototype pass reads"
    )

    def __post_init__(self) -> None:
        alpha = self.pmr_alpha
        if not _is_number(alpha) or not math.isfinite(alpha) or alpha < 0:
            raise ValueError(f"pmr_alpha must be a finite number >= 0, got {alpha!r}")
        momentum = self.pmr_momentum
        if not _is_number(momentum) or not 0 <= momentum < 1:
            raise ValueError(f"pmr_momentum must be a number in [0, 1), got {momentum!r}")
        share = self.pmr_prototype_share
        if not _is_number(share) or not 0 < share <= 1:
            raise ValueError(f"pmr_prototype_share must be a number in (0, 1], got {share!r}")
        starts, ends = self.pmr_modulation_starts, self.pmr_modulation_ends
        if not _is_int(starts) or starts < 0:
            raise ValueError(f"pmr_modulation_starts must be an int >= 0, got {starts!r}")
        if not _is_int(ends) or ends < starts:
            raise ValueError(
                f"pmr_modulation_ends must be an int >= pmr_modulation_starts ({starts}), "
                f"got {ends!r}"
            )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def prototype_subset(seed: int, epoch: int, size: int, share: float) -> Tensor:
    """The sorted positions [K] int64 of the training samples the pass before ``epoch`` reads:
    the first ``max(1, round(share x size))`` of a permutation drawn from the stream
    ``(seed, "pmr", epoch)``."""
    count = max(1, math.floor(share * size + 0.5))
    order = torch.randperm(size, generator=stream(seed, "pmr", epoch))
    return order[:count].sort().values


def feature_positions(h: Tensor | MultiScaleFeatures) -> tuple[Tensor, tuple[int, ...] | None]:
    """The features PMR prototypes, [N, M, P, C], and their grid: ``h`` [N, M, dim] as one
    position (grid None); a dense model's bottleneck [N, M, C, *grid] with P = prod(grid)."""
    if isinstance(h, MultiScaleFeatures):
        bottleneck = h.bottleneck
        return bottleneck.flatten(3).transpose(2, 3), tuple(bottleneck.shape[3:])
    return h[:, :, None, :], None


def position_labels(target: Tensor, grid: tuple[int, ...] | None, num_classes: int) -> Tensor:
    """The class of each feature position, [N, P] int64, -1 where unlabelled.

    Args:
        target: class indices [N] (grid None); or a label map [N, *full] or a (positive,
            valid) pair [N, 2, *full] of a dense task.
        grid: the features' grid; a target of another size is brought to it by a majority vote
            (see the module doc).
        num_classes: labels outside [0, num_classes) are unlabelled.

    Raises:
        ValueError: a target of another shape.
    """
    if grid is None:
        if target.dim() != 1:
            raise ValueError(
                f"pmr needs class-index targets [N] on a vector task, got {list(target.shape)}"
            )
        labels = target.long()[:, None]
        return torch.where((labels >= 0) & (labels < num_classes), labels, -1)
    spatial = target.dim() - 1
    if spatial == len(grid):
        labels = target.long()
    elif spatial == len(grid) + 1 and target.shape[1] == 2:
        labels = torch.where(target[:, 1] > 0.5, (target[:, 0] > 0.5).long(), -1)
    else:
        raise ValueError(
            f"pmr needs label maps [N, *grid] or (positive, valid) pairs [N, 2, *grid] on a "
            f"dense task with a {len(grid)}-d grid, got a target of shape {list(target.shape)}"
        )
    labels = torch.where((labels >= 0) & (labels < num_classes), labels, num_classes)
    if tuple(labels.shape[1:]) != tuple(grid):
        pools = (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d)
        pool = pools[len(grid) - 1]
        votes = F.one_hot(labels, num_classes + 1).movedim(-1, 1).float()
        labels = pool(votes, grid).argmax(1)
    labels = labels.flatten(1)
    return torch.where(labels < num_classes, labels, -1)


def modulation_weights(scores: list[float | None], alpha: float) -> list[float]:
    """The hard switch: alpha for each modality whose score is below the mean score of the
    modalities with one (None: no sample), else 0. With two scores: alpha for the lower one,
    none when they are equal (the released rule on rho = s_a / s_v).

    Example:
        >>> modulation_weights([0.3, 0.5], 2.0)
        [2.0, 0.0]
        >>> modulation_weights([0.2, 0.3, 0.7, None], 1.0)
        [1.0, 1.0, 0.0, 0.0]
    """
    known = [s for s in scores if s is not None]
    if not known:
        return [0.0] * len(scores)
    mean = sum(known) / len(known)
    return [alpha if s is not None and s < mean else 0.0 for s in scores]


class PMRMethod:
    """The PMR objective (module doc) with its epoch pass.

    State: the current epoch, the prototypes [M, K, C] and which of them exist [M, K] (None
    before the first pass).

    Args:
        inputs: what the trainer hands a method (loss, seed, ranks, batch size, augment).
        config: default :class:`PMRConfig`.

    Example:
        >>> method = PMRMethod(inputs)
        >>> method.begin_epoch(model.eval(), train, epoch=0)  # under torch.no_grad()
        >>> result = method.step(model.train(), batch, step=0)
    """

    name = "pmr"

    def __init__(self, inputs: MethodInputs, config: PMRConfig | None = None) -> None:
        self.config = PMRConfig() if config is None else config
        self.inputs = inputs
        self.num_modalities = int(inputs.counts.shape[0])
        self.epoch = 0
        self.prototypes: Tensor | None = None  # [M, K, C] float32
        self.known: Tensor | None = None  # [M, K] bool

    def modulated(self) -> bool:
        """Whether the current epoch is in the modulation window and prototypes exist."""
        cfg = self.config
        window = cfg.pmr_modulation_starts <= self.epoch <= cfg.pmr_modulation_ends
        return window and self.prototypes is not None

    # ----------------------------------------------------------------------------------------
    # the epoch pass
    # ----------------------------------------------------------------------------------------

    def begin_epoch(
        self, model: MultimodalModel, train: MultimodalData, epoch: int
    ) -> EpochPlan | None:
        """The prototype pass before ``epoch`` (skipped past the modulation window); the
        epoch itself is plain (None)."""
        self.epoch = epoch
        if epoch <= self.config.pmr_modulation_ends:
            self.update_prototypes(*self.class_sums(model, train, epoch))
        return None

    def class_sums(
        self, model: MultimodalModel, train: MultimodalData, epoch: int
    ) -> tuple[Tensor, Tensor]:
        """Per-modality class feature sums [M, K, C] and counts [M, K] (float64, on the
        model's device) over the pass's samples, summed over the ranks."""
        inputs = self.inputs
        device = next(model.parameters()).device
        num_classes = self._num_classes(train)
        modalities, channels = self.num_modalities, model.dim
        sums = torch.zeros(modalities, num_classes, channels, dtype=torch.float64, device=device)
        counts = torch.zeros(modalities, num_classes, dtype=torch.float64, device=device)
        subset = prototype_subset(inputs.seed, epoch, len(train), self.config.pmr_prototype_share)
        for batch in train.batches(inputs.batch_size or 64, inputs.shard(subset)):
            if inputs.augment is not None:
                batch = inputs.augment(batch)
            batch = batch.to(device)
            h = model.encode(batch.inputs, batch.present, batch.lengths, batch.context)
            features, grid = feature_positions(h)
            labels = position_labels(batch.target, grid, num_classes)
            for m in range(modalities):
                index = samples_with_modality(batch.present, m)
                y = labels[index].flatten()
                keep = y >= 0
                f = features[index, m].reshape(-1, channels)[keep].double()
                members = F.one_hot(y[keep], num_classes).double()  # (positions, K)
                sums[m] += members.T @ f  # a product, not atomic adds: the same on a GPU
                counts[m] += members.sum(0)
        total = inputs.sum_over_ranks(torch.cat([sums.flatten(), counts.flatten()]))
        return total[: sums.numel()].view_as(sums), total[sums.numel() :].view_as(counts)

    def _num_classes(self, train: MultimodalData) -> int:
        if self.prototypes is not None:
            return self.prototypes.shape[1]
        return int(train.target.max()) + 1

    def update_prototypes(self, sums: Tensor, counts: Tensor) -> None:
        """Prototypes from a pass's class sums [M, K, C] and counts [M, K]: the new mean
        where a class has samples, blended with the previous prototype by the momentum when
        there is one; a class without samples keeps its previous prototype (or has none)."""
        seen = counts > 0
        new = sums / counts.clamp(min=1)[..., None]
        if self.prototypes is None or self.known is None:
            old = torch.zeros_like(new)
            known = torch.zeros_like(seen)
        else:
            old = self.prototypes.to(new)
            known = self.known.to(seen.device)
        mu = self.config.pmr_momentum
        blended = torch.where(known[..., None], (1 - mu) * new + mu * old, new)
        prototypes = torch.where(seen[..., None], blended, old)
        self.prototypes, self.known = prototypes.float(), seen | known

    # ----------------------------------------------------------------------------------------
    # the step
    # ----------------------------------------------------------------------------------------

    def step(self, model: MultimodalModel, batch: Batch, step: int) -> StepResult:
        present, names = batch.present, model.modalities
        h = model.encode(batch.inputs, present, batch.lengths, batch.context)
        _, outputs = model.forward_rows(h, full_rows(present))
        task_losses = self.inputs.loss(outputs, batch.target)

        # per modality: this rank's sums of the per-sample cross-entropy (with gradients)
        # and true-class score, and its number of samples
        ce_sums: list[Tensor] = []
        score_sums: list[Tensor] = []
        sizes: list[int] = []
        if self.modulated():
            ce_sums, score_sums, sizes = self._prototype_terms(h, batch)
        zero = task_losses.new_zeros(())
        local = [float(task_losses.shape[0]), *map(float, sizes)]
        local_stats = torch.tensor(local, dtype=torch.float64, device=present.device)
        packed = torch.cat([local_stats, *(s.detach().double()[None] for s in score_sums)])
        stats = self.inputs.sum_over_ranks(packed).tolist()
        world, total = self.inputs.world_size, stats[0]
        counts, score_totals = stats[1 : 1 + len(sizes)], stats[1 + len(sizes) :]
        scores: list[float | None] = [None] * self.num_modalities
        for m, (count, score) in enumerate(zip(counts, score_totals)):
            scores[m] = score / count if count > 0 else None
        coef = modulation_weights(scores, self.config.pmr_alpha)

        l_task = world * task_losses.sum() / total
        terms: list[Tensor | None] = [None] * self.num_modalities
        for m, count in enumerate(counts):
            if count > 0:
                terms[m] = world * ce_sums[m] / count
        l_proto = zero
        for weight, term in zip(coef, terms):
            if weight > 0 and term is not None:
                l_proto = l_proto + weight * term
        loss = l_task + l_proto

        logs = {"l_task": l_task.item(), "l_proto": l_proto.item()}
        for m, name in enumerate(names):
            score, term = scores[m], terms[m]
            logs[f"score/{name}"] = math.nan if score is None else score  # global, every rank
            logs[f"coef/{name}"] = coef[m]
            logs[f"l_proto/{name}"] = math.nan if term is None else term.item()
        logs["loss"] = loss.item()
        return StepResult(loss, logs)

    def _prototype_terms(
        self, h: Tensor | MultiScaleFeatures, batch: Batch
    ) -> tuple[list[Tensor], list[Tensor], list[int]]:
        """Per modality: the sum over this rank's samples with m (and a labelled position
        whose class has a prototype) of the prototype cross-entropy and of the true-class
        score (each a mean over the sample's positions), and the number of those samples."""
        assert self.prototypes is not None and self.known is not None
        features, grid = feature_positions(h)
        device = features.device
        prototypes = self.prototypes.to(device=device, dtype=features.dtype)
        known = self.known.to(device)
        num_classes = prototypes.shape[1]
        labels = position_labels(batch.target.to(device), grid, num_classes)
        ce_sums, score_sums, sizes = [], [], []
        for m in range(self.num_modalities):
            index = samples_with_modality(batch.present, m)
            y = labels[index]
            valid = (y >= 0) & known[m][y.clamp(min=0)]
            keep = valid.any(1)
            index, y, valid = index[keep], y[keep], valid[keep]
            if not index.numel():
                ce_sums.append(features.new_zeros(()))
                score_sums.append(features.new_zeros(()))
                sizes.append(0)
                continue
            f = features[index, m]  # (n, P, C)
            centres = prototypes[m].expand(f.shape[0], -1, -1)  # (n, K, C)
            distances = torch.cdist(f, centres, compute_mode="donot_use_mm_for_euclid_dist")
            logits = (-distances).masked_fill(~known[m], -math.inf)  # (n, P, K)
            true = logits.log_softmax(-1).gather(-1, y.clamp(min=0)[..., None])[..., 0]
            true = torch.where(valid, true, 0.0)
            positions = valid.sum(1)
            ce_sums.append(-(true.sum(1) / positions).sum())
            score = torch.where(valid, true.detach().exp(), 0.0).sum(1) / positions
            score_sums.append(score.sum())
            sizes.append(index.numel())
        return ce_sums, score_sums, sizes

    # ----------------------------------------------------------------------------------------
    # state
    # ----------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The epoch, the prototypes and which exist (None before the first pass)."""
        return {
            "epoch": self.epoch,
            "prototypes": None if self.prototypes is None else self.prototypes.cpu().clone(),
            "known": None if self.known is None else self.known.cpu().clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s values.

        Raises:
            ValueError: prototypes of another number of modalities.
        """
        prototypes = state["prototypes"]
        if prototypes is not None and prototypes.shape[0] != self.num_modalities:
            raise ValueError(
                f"PMR prototypes of {prototypes.shape[0]} modalities cannot be loaded into "
                f"{self.num_modalities}"
            )
        self.epoch = int(state["epoch"])
        self.prototypes = None if prototypes is None else prototypes.clone()
        self.known = None if state["known"] is None else state["known"].clone().bool()


def _build(inputs: MethodInputs, options: Any) -> PMRMethod:
    if options is not None and not isinstance(options, PMRConfig):
        raise TypeError(f"pmr options must be a PMRConfig, got {type(options).__name__}")
    return PMRMethod(inputs, options)


SPEC = MethodSpec(
    name="pmr",
    summary="PMR (Fan et al., CVPR 2023): per-modality class prototypes from a pass before "
    "every epoch; the weaker modalities' prototype cross-entropy added to the task loss",
    options=PMRConfig,
    build=_build,
    needs_upper_bounds=lambda options: False,
)
