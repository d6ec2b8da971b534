"""PASSION (Shi et al., ACM MM 2024) as its released code trains it, on any task's model.

Every step runs, in one :meth:`~mce.nn.model.MultimodalModel.forward_rows_features` call, the full
row (n, A_n) of each sample and a single-modality row (n, {m}) for each of its present
modalities m (fusion and decoder see m alone; every path masks its own modality). Per pair
(n, m):

- ``sep[n, m]``: the task loss of m's unimodal head (mmFormer's ``decoder_sep``);
- ``kl[n, m] = T^2 KL(softmax(z_full / T) || softmax(z_m / T))``, the full row the detached
  teacher, summed over classes and averaged over all cells of a dense output ("pixel-wise
  self-distillation"); a one-channel (sigmoid) output is the distribution (1 - s, s);
- ``proto[n, m]`` and ``dist[n, m]``: prototype self-distillation on the decoder's last features
  ("semantic-wise"): the mean squared and the mean absolute difference between the m row's and
  the (detached) full row's cosine maps to class prototypes. Dense outputs: per sample, the
  ground-truth-masked mean feature of each class present as its prototype, a cosine per cell
  (:func:`dense_prototype_terms`, the released ``prototype_passion_loss``). Classification, which
  has no cells: per modality m, the class means of the global batch's samples with m as the
  prototypes (without gradient), a cosine per class (:func:`batch_prototype_terms`).

With ``w_m = N / count_m`` (training split), the per-step gate
``rp[m] = sum_n mask[n, m] (dist[n, m] / mean_{m' in A_n} dist[n, m'] - 1) > 0`` (global batch:
the modalities further than average from the fused semantics) and the per-modality weights beta,
the loss of a batch of B samples is::

    L = (1 / B) sum_n [ fuse_n + sum_{m in A_n} ( rp_m beta_m w_m sep[n, m]
                          + self_distill_weight beta_m w_m kl[n, m]
                          + prototype_distill_weight rp_m w_m proto[n, m] ) ]

with ``fuse_n`` the task loss of the full row (logged as ``l_task``; the three per-modality
sums, with beta, w and the gate but without the two distillation weights, as ``l_sep``,
``l_kl`` and ``l_prototype``).

The released code trains at batch 1 and sums the terms of its one sample; averaging over the
batch's B samples (not over the samples with m: ``w_m`` already does that normalisation) gives
the same per-sample weights at any batch size, so an epoch's gradient sums are those of batch 1.

Before every epoch e >= 1, beta follows the previous epoch's preference distances
(:class:`PreferenceWeights`): ``d_m = (sum over the epoch's pairs (n, m) of dist) / count_m``,
``rp = (mean(d) - d) / mean(d)``, ``beta <- clamp(beta - eta rp, 0.1, 4)``, then rescaled to norm
sqrt(M) (2 for BraTS' four modalities, as released; sqrt(M) keeps beta = 1 a fixed point for
any M), with eta grown by ``beta_lr_growth`` after epochs 0, 100, 200, ...

Left out or changed, on purpose: the deep-supervision terms (``prm`` and the KL on the
multi-scale outputs) need multi-scale decoder outputs that mce's decoders do not produce; the
released single-modality T2 path masks its bottleneck with T1's mask (not copied); the KL is the
exact KL (the released ``temp_kl_loss`` clamps probabilities at 0.005 and its mean also divides
by the number of classes); dense prototypes use the classes present in each sample (the
released code, at batch 1, the classes of its one sample; its batch variant's "present in every
sample of the batch" would tie a sample's term to its batch-mates); on a target with a
visibility channel (nuScenes) prototypes and cosine maps cover the visible cells only; the
warm-up branch (``region_fusion_start_epoch``, 0 in the released scripts) is not offered.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mce.data.dataset import Batch, MultimodalData
from mce.methods.base import EpochPlan, MethodInputs, MethodSpec, StepResult
from mce.nn.model import MultimodalModel
from mce.support.bits import presence_matrix

__all__ = [
    "SPEC",
    "PASSIONConfig",
    "PASSIONMethod",
    "PreferenceWeights",
    "batch_prototype_terms",
    "class_maps",
    "dense_prototype_terms",
    "distillation_kl",
    "preference_gate",
]

log = logging.getLogger("mce.train")

BETA_BOUNDS = (0.1, 4.0)  # the released clamp of beta before rescaling
COSINE_EPS = 1e-8


@dataclass(frozen=True)
class PASSIONConfig:
    """PASSION's distillation weights and beta schedule (the released defaults).

    Raises:
        ValueError: a temperature that is not a finite number > 0, a negative or non-finite
            weight or step size, a growth factor <= 0, or a growth period that is not a
            positive int.
    """

    distill_temperature: float = field(
        default=4.0,
        metadata={"help": "temperature T of the pixel-wise self-distillation (the code's temp)"},
    )
    self_distill_weight: float = field(
        default=0.5, metadata={"help": "weight of the beta-weighted self-distillation KL terms"}
    )
    prototype_distill_weight: float = field(
        default=0.1, metadata={"help": "weight of the gated prototype self-distillation terms"}
    )
    beta_lr: float = field(
        default=0.01, metadata={"help": "initial step size eta of the per-epoch beta update"}
    )
    beta_lr_growth: float = field(
        default=1.5,
        metadata={"help": "factor eta grows by after every beta_lr_growth_every epochs"},
    )
    beta_lr_growth_every: int = field(
        default=100,
        metadata={
            "help": "epochs between growths of eta (after epochs 0, 100, 200, ... as released)",
            "minimum": 1,
        },
    )

    def __post_init__(self) -> None:
        _check_number("distill_temperature", self.distill_temperature, strict=True)
        for name in ("self_distill_weight", "prototype_distill_weight", "beta_lr"):
            _check_number(name, getattr(self, name))
        _check_number("beta_lr_growth", self.beta_lr_growth, strict=True)
        every = self.beta_lr_growth_every
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"beta_lr_growth_every must be a positive int, got {every!r}")


def _check_number(name: str, value: Any, strict: bool = False) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
        or (strict and value == 0)
    ):
        bound = "> 0" if strict else ">= 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")


# ---------------------------------------------------------------------------------------------
# per-pair terms
# ---------------------------------------------------------------------------------------------


def class_maps(outputs: Tensor, target: Tensor) -> tuple[Tensor, Tensor, int]:
    """Class labels, where they are valid, and the number of classes, from a task's outputs
    and target (methods never see the task itself).

    Args:
        outputs: Tensor[B, K] or Tensor[B, K, *grid] logits; K = 1: a sigmoid output.
        target: class indices of the output's shape less its class dimension (Tensor[B] or
            Tensor[B, *grid]; 0/1 for K = 1), or, for K = 1, Tensor[B, 1 or 2, *grid]: the 0/1
            label, then an optional visibility mask (nuScenes' target).

    Returns:
        labels Tensor[B, *grid] int64, valid Tensor[B, *grid] bool and the number of classes
        (K, or 2 for a sigmoid output).

    Raises:
        ValueError: the target has another layout.
    """
    grid = outputs.shape[2:]
    binary = outputs.shape[1] == 1
    if target.shape == (outputs.shape[0], *grid):
        labels = (target > 0.5).long() if binary else target.long()
        return labels, torch.ones_like(labels, dtype=torch.bool), max(outputs.shape[1], 2)
    layered = target.dim() == outputs.dim() and target.shape[2:] == grid
    if binary and layered and target.shape[1] in (1, 2):
        labels = (target[:, 0] > 0.5).long()
        if target.shape[1] == 2:
            return labels, target[:, 1] > 0.5, 2
        return labels, torch.ones_like(labels, dtype=torch.bool), 2
    raise ValueError(
        f"passion needs class labels: a target of shape {[outputs.shape[0], *grid]} (class "
        f"indices) for outputs of shape {list(outputs.shape)}, got {list(target.shape)}"
    )


def _log_probs(logits: Tensor, temperature: float) -> Tensor:
    """log softmax(z / T) over dim 1; a one-channel logit z is the pair (0, z)."""
    if logits.shape[1] == 1:
        logits = torch.cat([torch.zeros_like(logits), logits], 1)
    return F.log_softmax(logits / temperature, dim=1)


def distillation_kl(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """Per-row ``T^2 KL(softmax(teacher / T) || softmax(student / T))`` [R], summed over the
    classes (dim 1) and averaged over the cells of dense outputs; the teacher is detached.

    Example:
        >>> distillation_kl(torch.zeros(1, 3), torch.zeros(1, 3), 4.0)
        tensor([0.])
    """
    log_s = _log_probs(student, temperature)
    log_t = _log_probs(teacher.detach(), temperature)
    kl = (log_t.exp() * (log_t - log_s)).sum(1)
    return temperature**2 * kl.flatten(1).mean(1) if kl.dim() > 1 else temperature**2 * kl


def _cosine(x: Tensor, y: Tensor) -> Tensor:
    """Cosine over the last dimension (``F.cosine_similarity``'s eps semantics)."""
    norms = (x.norm(dim=-1) * y.norm(dim=-1)).clamp(min=COSINE_EPS)
    return (x * y).sum(-1) / norms


def _masked_means(diff: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """(sum w diff^2 / sum w, sum w |diff| / sum w) over all but the first dimension."""
    total = weights.flatten(1).sum(1)
    scale = torch.where(total > 0, 1.0 / total.clamp(min=1), 0.0)
    squared = (weights * diff.pow(2)).flatten(1).sum(1) * scale
    absolute = (weights * diff.abs()).flatten(1).sum(1) * scale
    return squared, absolute


def dense_prototype_terms(
    features: Tensor,
    teacher: Tensor,
    samples: Tensor,
    labels: Tensor,
    valid: Tensor,
    num_classes: int,
) -> tuple[Tensor, Tensor]:
    """Prototype self-distillation of dense features, per (sample, modality) pair.

    For pair p of sample n = samples[p] and each class c present in n's valid cells: the
    prototype of c is the mean of the features over n's cells of class c, computed from the
    pair's own features (its single-modality row) and from the full row's (``teacher``,
    detached); each gives a cosine map over the cells. ``proto[p]`` is the mean over those
    classes and the valid cells of the squared difference of the two maps, ``dist[p]`` the mean
    absolute difference (``prototype_passion_loss``).

    Args:
        features: Tensor[P, C, *grid], each pair's single-modality decoder features.
        teacher: Tensor[N, C, *grid], the full rows' decoder features.
        samples: Tensor[P] int64, each pair's sample.
        labels, valid: Tensor[N, *grid] (:func:`class_maps`).
        num_classes: classes of ``labels``.

    Returns:
        proto, dist: Tensor[P] each (0 for a sample without valid cells).
    """
    teacher = teacher.detach()
    onehot = F.one_hot(labels.flatten(1), num_classes).transpose(1, 2)  # (N, K, V)
    onehot = (onehot * valid.flatten(1)[:, None]).to(features.dtype)
    counts = onehot.sum(2)  # (N, K)
    present = (counts > 0).to(features.dtype)

    def maps(values: Tensor, members: Tensor) -> Tensor:  # (R, C, V) -> cosine maps (R, K, V)
        sums = torch.einsum("rcv,rkv->rkc", values, onehot[members])
        prototypes = sums / counts[members].clamp(min=1)[..., None]
        dots = torch.einsum("rcv,rkc->rkv", values, prototypes)
        norms = values.norm(dim=1)[:, None] * prototypes.norm(dim=2)[..., None]
        return dots / norms.clamp(min=COSINE_EPS)

    student_maps = maps(features.flatten(2), samples)
    teacher_maps = maps(teacher.flatten(2), torch.arange(teacher.shape[0], device=samples.device))
    weights = present[samples][..., None] * valid.flatten(1)[samples][:, None].to(features.dtype)
    return _masked_means(student_maps - teacher_maps[samples], weights)


def batch_prototype_terms(
    features: Tensor,
    teacher: Tensor,
    samples: Tensor,
    modality: Tensor,
    labels: Tensor,
    num_modalities: int,
    num_classes: int,
    sum_over_ranks: Any = None,
) -> tuple[Tensor, Tensor]:
    """Prototype self-distillation of vector features (classification), per pair: the analogue
    of :func:`dense_prototype_terms` with the batch's samples in place of a volume's cells.

    For modality m, the prototypes of class c are the means over the (global) batch's samples of
    class c with m present of their m-row features and of their full-row features; a pair
    (n, m) compares its m-row feature's cosines to m's prototypes of the classes among those
    samples with its full-row feature's cosines to the full-row prototypes: ``proto`` the mean
    squared, ``dist`` the mean absolute difference over the classes. The prototypes are batch
    statistics without gradient (summed over the ranks in a data-parallel run), so a pair's
    gradient reaches its own features only.

    Args:
        features: Tensor[P, F], each pair's single-modality decoder features.
        teacher: Tensor[N, F], the full rows' decoder features.
        samples, modality: Tensor[P] int64, each pair's sample and modality.
        labels: Tensor[N] int64 class indices.
        num_modalities, num_classes: M and K.
        sum_over_ranks: tensor -> its sum over the ranks (:meth:`MethodInputs.sum_over_ranks`);
            None: one process.

    Returns:
        proto, dist: Tensor[P] each.
    """
    teacher = teacher.detach()
    dim = features.shape[1]
    slot = modality * num_classes + labels[samples]  # (P,): (m, c) of each pair
    size = num_modalities * num_classes
    counts = torch.zeros(size, dtype=torch.float64, device=features.device)
    counts = counts.index_add(0, slot, torch.ones_like(slot, dtype=torch.float64))
    own = features.detach().double()
    sums = torch.zeros(2, size, dim, dtype=torch.float64, device=features.device)
    sums[0].index_add_(0, slot, own)
    sums[1].index_add_(0, slot, teacher[samples].double())
    packed = torch.cat([counts, sums.flatten()])
    if sum_over_ranks is not None:
        packed = sum_over_ranks(packed)
    counts, sums = packed[:size], packed[size:].view(2, size, dim)
    prototypes = (sums / counts.clamp(min=1)[None, :, None]).to(features.dtype)
    prototypes = prototypes.view(2, num_modalities, num_classes, dim)[:, modality]  # (2, P, K, F)
    student = _cosine(features[:, None], prototypes[0])  # (P, K)
    full = _cosine(teacher[samples][:, None], prototypes[1])
    present = (counts.view(num_modalities, num_classes) > 0)[modality].to(features.dtype)
    return _masked_means(student - full, present)


def preference_gate(
    dist: Tensor, samples: Tensor, modality: Tensor, shape: tuple[int, int]
) -> Tensor:
    """This batch's share of ``rp_iter`` [M] float64: over the pairs (n, m), the sum of
    ``dist[n, m] / mean_{m' in A_n} dist[n, m'] - 1`` (0 for a sample whose mean is 0).

    Args:
        dist: Tensor[P] the pairs' distances. samples, modality: Tensor[P] int64.
        shape: (N, M).
    """
    num_samples, num_modalities = shape
    dist = dist.detach().double()
    totals = torch.zeros(num_samples, dtype=torch.float64, device=dist.device)
    totals = totals.index_add(0, samples, dist)
    sizes = torch.bincount(samples, minlength=num_samples).double()
    mean = (totals / sizes.clamp(min=1))[samples]
    ratio = torch.where(mean > 0, dist / torch.where(mean > 0, mean, 1.0) - 1, 0.0)
    return torch.zeros(num_modalities, dtype=torch.float64, device=dist.device).index_add(
        0, modality, ratio
    )


# ---------------------------------------------------------------------------------------------
# the per-modality weights beta
# ---------------------------------------------------------------------------------------------


class PreferenceWeights:
    """The released per-modality weights beta and their per-epoch update.

    State: beta (starts at 1 each), the step size eta, and the current epoch's sums of the
    pairs' distances per modality (float64, over the ranks). :meth:`update`, before epoch e >= 1
    from epoch e - 1's sums:

    1. eta <- eta * growth when (e - 1) % growth_every == 0 (after epoch 0 too, as released);
    2. d_m = sums_m / count_m (modalities absent from the training split are left out);
    3. rp_m = (mean(d) - d_m) / mean(d) (0 when the mean is 0);
    4. beta <- clamp(beta - eta rp, 0.1, 4), then beta <- sqrt(M) beta / ||beta||_2;
    5. the sums restart at 0.

    A modality further than average from the fused semantics (rp < 0) gains weight.

    Example:
        >>> weights = PreferenceWeights(torch.tensor([10, 10]), PASSIONConfig())
        >>> weights.add([1.0, 3.0])
        >>> weights.update(1)  # d = (0.1, 0.3); rp = (0.5, -0.5); eta 0.015
        [0.9924..., 1.0074...]
    """

    def __init__(self, counts: Tensor, config: PASSIONConfig) -> None:
        self.config = config
        self.counts = [int(c) for c in counts.tolist()]
        self.beta = [1.0] * len(self.counts)
        self.eta = config.beta_lr
        self.sums = [0.0] * len(self.counts)

    def add(self, sums: list[float]) -> None:
        """Add one step's distance sums per modality (the global batch's)."""
        self.sums = [total + value for total, value in zip(self.sums, sums)]

    def update(self, epoch: int) -> list[float]:
        """The update before ``epoch`` (>= 1) from the previous epoch's sums; returns beta."""
        cfg, previous = self.config, epoch - 1
        if previous % cfg.beta_lr_growth_every == 0:
            self.eta *= cfg.beta_lr_growth
        kept = [m for m, count in enumerate(self.counts) if count > 0]
        d = {m: self.sums[m] / self.counts[m] for m in kept}
        mean = sum(d.values()) / len(kept) if kept else 0.0
        low, high = BETA_BOUNDS
        beta = list(self.beta)
        for m in kept:
            advantage = (mean - d[m]) / mean if mean > 0 else 0.0
            beta[m] = min(high, max(low, beta[m] - self.eta * advantage))
        norm = math.sqrt(sum(b * b for b in beta))
        self.beta = [math.sqrt(len(beta)) * b / norm for b in beta]
        self.sums = [0.0] * len(self.counts)
        return list(self.beta)

    def state_dict(self) -> dict[str, Any]:
        return {"beta": list(self.beta), "eta": self.eta, "sums": list(self.sums)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s values.

        Raises:
            ValueError: the state is for another number of modalities.
        """
        if len(state["beta"]) != len(self.beta) or len(state["sums"]) != len(self.beta):
            raise ValueError(
                f"passion weights of {len(state['beta'])} modalities cannot be loaded into "
                f"{len(self.beta)}"
            )
        self.beta = [float(b) for b in state["beta"]]
        self.sums = [float(s) for s in state["sums"]]
        self.eta = float(state["eta"])


# ---------------------------------------------------------------------------------------------
# the method
# ---------------------------------------------------------------------------------------------


def _passion_rows(present: Tensor, num_modalities: int) -> tuple[Tensor, Tensor, Tensor]:
    """Rows [R, 2] grouped by sample: each sample's full row (n, A_n), then (n, {m}) for each
    present m in increasing order; which rows are full ones (Tensor[R] bool); the modality of
    each single-modality row (Tensor[R - N] int64)."""
    num_samples, device = present.shape[0], present.device
    column = torch.arange(-1, num_modalities, device=device).expand(num_samples, -1)  # (N, 1+M)
    subsets = torch.where(column < 0, present[:, None], 1 << column.clamp(min=0))
    keep = torch.cat([present[:, None] > 0, presence_matrix(present, num_modalities)], 1)
    samples = torch.arange(num_samples, device=device)[:, None].expand_as(subsets)
    rows = torch.stack([samples[keep], subsets[keep]], 1)
    which = column[keep]
    return rows, which < 0, which[which >= 0]


class PASSIONMethod:
    """The PASSION objective (see the module doc) on the task's model as built.

    Args:
        inputs: what the trainer hands a method (loss, counts, dataset size, ranks).
        config: weights and beta schedule; default :class:`PASSIONConfig`.

    Example:
        >>> method = PASSIONMethod(inputs)
        >>> result = method.step(model, batch, step=0)
    """

    name = "passion"

    def __init__(self, inputs: MethodInputs, config: PASSIONConfig | None = None) -> None:
        self.config = PASSIONConfig() if config is None else config
        self.inputs, self.loss_fn = inputs, inputs.loss
        counts = inputs.counts.double()
        # w_m = N / count_m (the released iters_per_epoch / modal_num at batch 1)
        self.modal_weight = torch.where(counts > 0, inputs.dataset_size / counts.clamp(min=1), 0.0)
        self.weights = PreferenceWeights(inputs.counts, self.config)

    def begin_epoch(
        self, model: MultimodalModel, train: MultimodalData, epoch: int
    ) -> EpochPlan | None:
        """Before epoch ``epoch`` >= 1, beta from the previous epoch's distances; the plain
        epoch always."""
        if epoch >= 1:
            beta = self.weights.update(epoch)
            log.info(
                "passion epoch %d: beta %s (eta %g)",
                epoch,
                ", ".join(f"{name}={b:.4f}" for name, b in zip(model.modalities, beta)),
                self.weights.eta,
            )
        return None

    def step(self, model: MultimodalModel, batch: Batch, step: int) -> StepResult:
        cfg, present, target = self.config, batch.present, batch.target
        num_samples, num_modalities = present.shape[0], model.num_modalities
        device = present.device
        h = model.encode(batch.inputs, present, batch.lengths, batch.context)
        rows, is_full, modality = _passion_rows(present, num_modalities)
        _, features, outputs = model.forward_rows_features(h, rows)
        full_out, single_out = outputs[is_full], outputs[~is_full]
        teacher, single_features = features[is_full], features[~is_full]
        samples = rows[~is_full, 0]  # the pairs (n, m): samples[p], modality[p]

        fuse = self.loss_fn(full_out, target)
        kl = distillation_kl(single_out, full_out[samples], cfg.distill_temperature)
        labels, valid, num_classes = class_maps(full_out, target)
        if full_out.dim() > 2:
            proto, dist = dense_prototype_terms(
                single_features, teacher, samples, labels, valid, num_classes
            )
        else:
            proto, dist = batch_prototype_terms(
                single_features,
                teacher,
                samples,
                modality,
                labels,
                num_modalities,
                num_classes,
                None if self.inputs.ranks is None else self.inputs.sum_over_ranks,
            )
        pair = torch.full((num_samples, num_modalities), -1, dtype=torch.int64, device=device)
        pair[samples, modality] = torch.arange(samples.numel(), device=device)
        # at least float32: under bf16 autocast kl is bfloat16 and the head losses float32
        sep = kl.new_zeros(samples.numel(), dtype=torch.promote_types(kl.dtype, torch.float32))
        for m, (index, head_out) in model.unimodal_outputs(h, present).items():
            loss = self.loss_fn(head_out, target[index]).to(sep.dtype)
            sep = sep.index_put((pair[index, m],), loss)

        # the global batch's size, gate and distance sums (one all-reduce; identity in one
        # process): every rank gates and accumulates alike
        gate_share = preference_gate(dist, samples, modality, (num_samples, num_modalities))
        dist_share = torch.zeros(num_modalities, dtype=torch.float64, device=device)
        dist_share = dist_share.index_add(0, modality, dist.detach().double())
        pair_counts = torch.bincount(modality, minlength=num_modalities).double()
        local = torch.cat(
            [gate_share, dist_share, pair_counts, gate_share.new_tensor([num_samples])]
        )
        stats = self.inputs.sum_over_ranks(local).tolist()
        rp_iter, dist_sums, counts = (
            stats[k * num_modalities : (k + 1) * num_modalities] for k in range(3)
        )
        total, world = stats[-1], self.inputs.world_size
        self.weights.add(dist_sums)

        gate = torch.tensor([float(r > 0) for r in rp_iter], device=device)
        beta = torch.tensor(self.weights.beta, device=device)
        weight = self.modal_weight.to(device=device, dtype=torch.float32)
        scale = world / total
        l_task = scale * fuse.sum()
        l_sep = scale * ((gate * beta * weight)[modality] * sep).sum()
        l_kl = scale * ((beta * weight)[modality] * kl).sum()
        l_proto = scale * ((gate * weight)[modality] * proto).sum()
        loss = (
            l_task + l_sep + cfg.self_distill_weight * l_kl + cfg.prototype_distill_weight * l_proto
        )

        logs = {
            "l_task": l_task.item(),
            "l_sep": l_sep.item(),
            "l_kl": l_kl.item(),
            "l_prototype": l_proto.item(),
        }
        for m, name in enumerate(model.modalities):  # global-batch statistics: alike on every rank
            logs[f"beta/{name}"] = self.weights.beta[m]
            logs[f"gate/{name}"] = float(gate[m])
            logs[f"dist/{name}"] = dist_sums[m] / counts[m] if counts[m] else float("nan")
        logs["beta_lr"] = self.weights.eta
        logs["loss"] = loss.item()
        return StepResult(loss, logs)

    def state_dict(self) -> dict[str, Any]:
        """beta, eta and the current epoch's distance sums."""
        return {"preference_weights": self.weights.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.weights.load_state_dict(state["preference_weights"])


def _build(inputs: MethodInputs, options: Any) -> PASSIONMethod:
    if options is not None and not isinstance(options, PASSIONConfig):
        raise TypeError(f"passion options must be a PASSIONConfig, got {type(options).__name__}")
    return PASSIONMethod(inputs, options)


SPEC = MethodSpec(
    name="passion",
    summary="PASSION (Shi et al., ACM MM 2024): single-modality rows distilled from the full "
    "row (pixel-wise KL, class prototypes), preference-gated unimodal losses, per-epoch beta",
    options=PASSIONConfig,
    build=_build,
    needs_upper_bounds=lambda options: False,
)
