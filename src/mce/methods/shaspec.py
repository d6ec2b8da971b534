"""ShaSpec (Wang et al., CVPR 2023, "Multi-modal Learning with Missing Modality via
Shared-Specific Feature Modelling") on any task's model.

The task's model is adapted once (:func:`adapt_model`, networks in :mod:`mce.nn.shaspec`): a
shared encoder beside the modality-specific ones, one compositional layer
f = shared + W cat(shared, specific) for every modality, a domain classifier over the specific
features, and, in place of the reconstruction module, the substitution of each absent
modality's feature by the shared feature of the row's first present modality (in training and
in evaluation, inside ``forward_rows``). Where every encoder has the same architecture (BraTS)
the shared encoder is one more of them; where the modalities' inputs differ (the digits,
AV-MNIST, IEMOCAP, nuScenes) it is a channel MLP shared by all modalities after per-modality
stems (fresh copies of each modality's encoder). A step's loss is::

    L = L_task + shaspec_shared_weight * L_shared + shaspec_domain_weight * L_domain

- L_task: the task loss of each sample's prediction from its present modalities, the absent
  ones substituted, averaged over the samples.
- L_shared: the mean absolute difference of the shared (bottleneck) features of two present
  modalities of a sample, over channels and positions, averaged over every pair of present
  modalities of every sample of the batch (0 when no sample has two).
- L_domain: the cross-entropy of the domain classifier on each present modality's specific
  global feature (its mean over positions), label the modality's index, averaged over the
  present (sample, modality) pairs.

Departures from the released code (BraTS only, ``train_SS.py``), on purpose: absent modalities
are not encoded (the released code encodes a zeroed volume) and take no part in L_shared and
L_domain (the released code aligns the pairs (0, 1), (1, 2), (2, 3), (3, 0) and classifies all
four modalities, zero inputs included); L_shared averages over the pairs where the released
code sums its four terms; the compositional layer is pointwise (the released one a 3x3x3
convolution); the decoder's skips of absent modalities are zero (mce's skip fusion sums over
the kept modalities), where the released decoder reads the shared encoder's features of the
zeroed volume.

In a data-parallel run the sample, pair and (sample, modality) counts are those of the global
batch (one all-reduce), so two ranks compute what one process computes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from mce.data.dataset import Batch
from mce.methods.base import MethodInputs, MethodSpec, StepResult
from mce.nn.model import MultimodalModel, full_rows
from mce.nn.shaspec import (
    ChannelMLP,
    ComposedHalf,
    SharedSpecificEncoder,
    SharedSubstitution,
    ShaSpecShared,
    fresh_copy,
    same_architecture,
)
from mce.support.bits import presence_matrix, samples_with_modality

__all__ = ["ShaSpecConfig", "ShaSpecMethod", "adapt_model", "SPEC"]

SHARED_ENCODERS = ("auto", "copy", "stems")


@dataclass(frozen=True)
class ShaSpecConfig:
    """ShaSpec's loss weights (the released code's alpha and beta) and its shared encoder.

    Raises:
        ValueError: a weight that is negative, not finite or not a number; an unknown
            ``shaspec_shared_encoder``.
    """

    shaspec_shared_weight: float = field(
        default=0.1,
        metadata={"help": "weight of the L1 alignment of present modalities' shared features"},
    )
    shaspec_domain_weight: float = field(
        default=0.02,
        metadata={"help": "weight of the domain classifier's cross-entropy on specific features"},
    )
    shaspec_shared_encoder: Literal["auto", "copy", "stems"] = field(
        default="auto",
        metadata={
            "help": "copy: one more encoder of the modalities' common architecture; stems: a "
            "shared channel MLP after a fresh copy of each modality's encoder; auto: copy when "
            "every encoder has the same architecture, else stems"
        },
    )

    def __post_init__(self) -> None:
        for name in ("shaspec_shared_weight", "shaspec_domain_weight"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value < 0
            ):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.shaspec_shared_encoder not in SHARED_ENCODERS:
            raise ValueError(
                f"shaspec_shared_encoder must be one of {', '.join(SHARED_ENCODERS)}, "
                f"got {self.shaspec_shared_encoder!r}"
            )


def adapt_model(model: MultimodalModel, options: ShaSpecConfig | None) -> MultimodalModel:
    """The task's model made ShaSpec's, in place (plain and dense models alike).

    The encoders become :class:`~mce.nn.shaspec.SharedSpecificEncoder` (features
    ``[composed; shared]``, so ``model.dim`` doubles), the shared parts are registered once as
    ``model.shaspec``, the reconstruction module becomes
    :class:`~mce.nn.shaspec.SharedSubstitution`, and the fusion and unimodal heads read the
    composed half.

    Args:
        model: a freshly built task model (its reconstruction module, if any, is dropped).
        options: the kind of shared encoder; None: :class:`ShaSpecConfig` defaults.

    Returns:
        ``model``, adapted.

    Raises:
        ValueError: fewer than 2 modalities, a model adapted already, or ``copy`` asked for
            encoders of different architectures.
    """
    config = ShaSpecConfig() if options is None else options
    if any(isinstance(encoder, SharedSpecificEncoder) for encoder in model.encoders.values()):
        raise ValueError("the model's encoders are ShaSpec's already (adapted twice?)")
    if model.num_modalities < 2:
        raise ValueError(f"ShaSpec needs at least 2 modalities, got {model.num_modalities}")
    encoders = [model.encoders[name] for name in model.modalities]
    same = same_architecture(encoders)
    kind = config.shaspec_shared_encoder
    if kind == "copy" and not same:
        raise ValueError(
            "shaspec_shared_encoder='copy' needs encoders of one architecture; "
            f"{', '.join(model.modalities)} differ (use 'stems')"
        )
    stems = kind == "stems" or (kind == "auto" and not same)
    channels = model.dim
    shared = ChannelMLP(channels) if stems else fresh_copy(encoders[0])
    parts = ShaSpecShared(shared, channels, model.num_modalities, stems)
    model.shaspec = parts
    for name, encoder in zip(model.modalities, encoders):
        stem = fresh_copy(encoder) if stems else None
        model.encoders[name] = SharedSpecificEncoder(encoder, parts, stem)
        model.heads[name] = ComposedHalf(model.heads[name], channels, dim=1)
    model.fusion = ComposedHalf(model.fusion, channels, dim=2)
    model.reconstruction = SharedSubstitution(channels)
    model.dim = 2 * channels
    if hasattr(model, "channels"):  # the dense model's widths per level: the bottleneck's
        model.channels = (*model.channels[:-1], 2 * channels)
    return model


def _parts(model: MultimodalModel) -> tuple[list[SharedSpecificEncoder], ShaSpecShared]:
    encoders = [model.encoders[name] for name in model.modalities]
    parts = getattr(model, "shaspec", None)
    if not all(isinstance(e, SharedSpecificEncoder) for e in encoders) or not isinstance(
        parts, ShaSpecShared
    ):
        raise ValueError(
            "the shaspec method needs a model built by mce.methods.shaspec.adapt_model "
            "(shared and specific encoders)"
        )
    return encoders, parts  # type: ignore[return-value]


class ShaSpecMethod:
    """The ShaSpec objective (see the module doc) on a model made by :func:`adapt_model`.

    Args:
        inputs: what the trainer hands a method; ``inputs.loss`` and, in a data-parallel run,
            ``inputs.ranks`` are used.
        config: the loss weights; default :class:`ShaSpecConfig`.

    Example:
        >>> model = adapt_model(task.build_model(), ShaSpecConfig())
        >>> result = ShaSpecMethod(inputs).step(model, batch, step=0)
    """

    name = "shaspec"

    def __init__(self, inputs: MethodInputs, config: ShaSpecConfig | None = None) -> None:
        self.config = ShaSpecConfig() if config is None else config
        self.loss_fn, self.inputs = inputs.loss, inputs

    def step(self, model: MultimodalModel, batch: Batch, step: int) -> StepResult:
        cfg, present = self.config, batch.present
        encoders, parts = _parts(model)
        for encoder in encoders:
            encoder.last_specific = None
        h = model.encode(batch.inputs, present, batch.lengths, batch.context)
        _, outputs = model.forward_rows(h, full_rows(present))  # absent ones substituted
        task_losses = self.loss_fn(outputs, batch.target)

        # L_shared: every pair of present modalities of each sample
        features = model.feature_tokens(h)  # (N, M, 2 C P): [composed; shared], channel-major
        shared = features[:, :, features.shape[2] // 2 :]
        kept = presence_matrix(present, model.num_modalities)
        align, pairs = shared.new_zeros(()), 0
        for i in range(model.num_modalities):
            for j in range(i + 1, model.num_modalities):
                both = torch.nonzero(kept[:, i] & kept[:, j]).flatten()
                if both.numel():
                    difference = shared[both, i] - shared[both, j]
                    align = align + difference.abs().mean(1).sum()
                    pairs += both.numel()

        # L_domain: the specific global feature of every present (sample, modality)
        logits, labels = [], []
        for m, encoder in enumerate(encoders):
            index = samples_with_modality(present, m)
            if not index.numel():
                continue
            specific = encoder.last_specific
            assert specific is not None and specific.shape[0] == index.numel()
            logits.append(parts.domain(specific))
            labels.append(torch.full_like(index, m))
        domain_logits, domain_labels = torch.cat(logits), torch.cat(labels)
        domain = F.cross_entropy(domain_logits, domain_labels, reduction="sum")
        correct = (domain_logits.argmax(1) == domain_labels).sum()

        # the global batch's counts (one all-reduce, the identity in one process): each loss
        # is this rank's sum over the global count, times the number of ranks
        local = torch.tensor(
            [present.shape[0], pairs, domain_labels.numel()],
            dtype=torch.float64,
            device=present.device,
        )
        local = torch.cat([local, correct.double()[None]])
        total, num_pairs, instances, num_correct = self.inputs.sum_over_ranks(local).tolist()
        world = self.inputs.world_size
        l_task = world * task_losses.sum() / total
        l_shared = world * align / num_pairs if num_pairs else align
        l_domain = world * domain / instances
        loss = l_task + cfg.shaspec_shared_weight * l_shared + cfg.shaspec_domain_weight * l_domain
        logs = {
            "l_task": l_task.item(),
            "l_shared": l_shared.item(),
            "l_domain": l_domain.item(),
            "domain_acc": num_correct / instances,  # from global sums: the same on every rank
            "loss": loss.item(),
        }
        return StepResult(loss, logs)


def _build(inputs: MethodInputs, options: Any) -> ShaSpecMethod:
    if options is not None and not isinstance(options, ShaSpecConfig):
        raise TypeError(f"shaspec options must be a ShaSpecConfig, got {type(options).__name__}")
    return ShaSpecMethod(inputs, options)


SPEC = MethodSpec(
    name="shaspec",
    summary="ShaSpec (Wang et al., CVPR 2023): shared and specific encoders, absent modalities "
    "replaced by a present one's shared feature, shared-feature alignment and a domain classifier",
    options=ShaSpecConfig,
    build=_build,
    needs_upper_bounds=lambda options: False,
    adapt_model=adapt_model,
)
