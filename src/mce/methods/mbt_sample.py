"""MBT-Sample (Wei et al., CVPR 2024, sample-level modality valuation) on any task's model.

The released code (``sample_level.py``) trains with the plain task loss. After a warm-up of
``warmup`` epochs, before every later epoch it values every training sample's modalities and
resamples the epoch:

1. **Valuation** (no gradients, the whole training split, sharded over the ranks): every
   non-empty subset S of each sample's present set A_n runs through fusion and decoder (one exact
   coalition plan per batch, the encoders once), with the value ``v_n(S) = |S| * utility(prediction
   from S)`` and v(empty) = 0. Exact per-sample Shapley values phi[n, m] follow
   (:func:`mce.science.shapley.plan_shapley`). With two modalities and accuracy as the utility this
   is the released value function (v_all = 2 * correct, v_m = correct, phi_a = (v_a + v_all - v_v) /
   2); with M modalities it is its generalisation with the same scale (phi summing to M for a sample
   every subset predicts correctly), and with Dice or IoU as the utility it values segmentations.
2. **Resampling**: the epoch holds every sample once with all its modalities, plus, for each
   present modality m, ``k[n, m]`` copies of sample n with only m kept, by the released
   thresholds (strict inequalities, as the released code):
   ``k = 1`` for 0.4 < phi < 1, ``k = 2`` for -0.1 < phi < 0.4, ``k = 3`` for phi < -0.1,
   else 0. An absent modality gets phi = 0 and no copies.

``valuation="steps"`` (an option, not the released method) skips the pass: each sample is
valued during its own training step of the previous epoch, from the features that step encodes
anyway (the proper subsets' rows run once more, without gradients), with the weights of that
step rather than of the epoch's end, and in training mode (dropout on). It costs about what
the extra rows cost (the encoders do not run again); a sample no step saw in the previous
epoch keeps its earlier value.

Decisions where the released code (two complete modalities) is silent: a sample with one
present modality m is valued ``phi = utility`` and copied by the same thresholds (its copies
repeat it as it is, weighting samples it gets wrong); the valuation sees training batches as
the trainer does (the task's random crops on BraTS and nuScenes); no loss term is added.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from mce.data.dataset import Batch, MultimodalData
from mce.methods.base import (
    EpochPlan,
    MethodInputs,
    MethodSpec,
    StepResult,
    epoch_batches,
)
from mce.methods.baseline import BaselineMethod
from mce.nn.model import MultimodalModel
from mce.science.shapley import coalition_plan, plan_shapley
from mce.support.bits import popcount, presence_matrix

__all__ = ["MBTSampleConfig", "MBTSampleMethod", "sample_values", "copies_from_values", "SPEC"]


@dataclass(frozen=True)
class MBTSampleConfig:
    """MBT-Sample's warm-up and resampling thresholds (the released defaults).

    Raises:
        ValueError: a negative warm-up, thresholds that are not three finite decreasing
            numbers, or a negative valuation batch size.
    """

    warmup: int = field(
        default=5,
        metadata={
            "help": "epochs of plain task loss before the first valuation (the released warmup)",
            "minimum": 0,
        },
    )
    copy_thresholds: tuple[float, ...] = field(
        default=(1.0, 0.4, -0.1),
        metadata={
            "help": "phi below the first gives 1 copy, below the second 2, below the third 3 "
            "(strict inequalities, as the released code)",
            "items": "thresholds",
        },
    )
    valuation: Literal["pass", "steps"] = field(
        default="pass",
        metadata={
            "help": "pass: a no-grad pass over the training split before every epoch after the "
            "warm-up (released); steps: each sample valued during its own step of the previous "
            "epoch (no extra pass)",
        },
    )
    valuation_batch: int = field(
        default=0,
        metadata={
            "help": "samples per batch of the valuation pass (0: the run's batch size)",
            "minimum": 0,
        },
    )

    def __post_init__(self) -> None:
        if self.valuation not in ("pass", "steps"):
            raise ValueError(f"valuation must be one of pass, steps, got {self.valuation!r}")
        for name in ("warmup", "valuation_batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        values = self.copy_thresholds
        if (
            isinstance(values, str)
            or not hasattr(values, "__len__")
            or len(values) != 3
            or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                for v in values
            )
            or not values[0] > values[1] > values[2]
        ):
            raise ValueError(
                f"copy_thresholds must be three finite decreasing numbers, got {values!r}"
            )
        object.__setattr__(self, "copy_thresholds", tuple(float(v) for v in values))


def sample_values(
    model: MultimodalModel, batch: Batch, utility: Any, num_modalities: int
) -> Tensor:
    """Exact per-sample Shapley values [B, M] of the batch's samples under
    ``v(S) = |S| * utility(prediction from S)`` (no gradients; absent modalities 0)."""
    with torch.no_grad():
        h = model.encode(batch.inputs, batch.present, batch.lengths, batch.context)
        return values_from_features(model, h, batch, utility, num_modalities)


def values_from_features(
    model: MultimodalModel,
    h: Any,
    batch: Batch,
    utility: Any,
    num_modalities: int,
    full_outputs: Tensor | None = None,
) -> Tensor:
    """:func:`sample_values` from the batch's encoder features ``h``; ``full_outputs``: the
    outputs of the full rows (n, A_n), if computed already (their rows are then not rerun)."""
    with torch.no_grad():
        plan = coalition_plan(batch.present, num_modalities, "exact")
        rows, target = plan.rows, batch.target[plan.samples]
        if full_outputs is None:
            outputs = model.forward_rows(h, rows)[1]
            scores = utility(outputs, target).float()
        else:
            full = rows[:, 1] == batch.present[rows[:, 0]]
            scores = torch.empty(rows.shape[0], device=rows.device)
            scores[full] = utility(full_outputs.detach(), batch.target).float()
            proper = ~full
            if bool(proper.any()):
                outputs = model.forward_rows(h, rows[proper])[1]
                scores[proper] = utility(outputs, target[proper]).float()
        return plan_shapley(plan, popcount(plan.subsets).to(scores) * scores)


def copies_from_values(phi: Tensor, present: Tensor, thresholds: tuple[float, ...]) -> Tensor:
    """Extra single-modality copies k[n, m] (int64) from the values phi [N, M] by the released
    thresholds (high, middle, low): 1 for middle < phi < high, 2 for low < phi < middle, 3 for
    phi < low, else 0; 0 where m is absent."""
    high, middle, low = thresholds
    copies = torch.zeros(phi.shape, dtype=torch.int64, device=phi.device)
    copies[(phi > middle) & (phi < high)] = 1
    copies[(phi > low) & (phi < middle)] = 2
    copies[phi < low] = 3
    return copies * presence_matrix(present.to(phi.device), phi.shape[1])


class MBTSampleMethod:
    """Plain task loss over an epoch resampled from per-sample Shapley values (module doc).

    State: the last valuation's values [N_train, M] and copies per modality (the epoch's plan
    itself is checkpointed by the trainer).

    Args:
        inputs: what the trainer hands a method (loss, utility, ranks, augment, batch size).
        config: warm-up and thresholds; default :class:`MBTSampleConfig`.
    """

    name = "mbt-sample"

    def __init__(self, inputs: MethodInputs, config: MBTSampleConfig | None = None) -> None:
        self.config = MBTSampleConfig() if config is None else config
        self.inputs = inputs
        self.plain = BaselineMethod(inputs)
        num_modalities = int(inputs.counts.shape[0])
        self.values = torch.zeros(inputs.dataset_size, num_modalities)
        self.copies = [0] * num_modalities  # extra copies of each modality in this epoch
        # valuation="steps": the values recorded by this epoch's steps, and which samples
        self.recorded = torch.zeros(inputs.dataset_size, num_modalities)
        self.seen = torch.zeros(inputs.dataset_size, dtype=torch.bool)
        self.full_present: Tensor | None = None  # the training split's presence masks

    def step(self, model: MultimodalModel, batch: Batch, step: int) -> StepResult:
        if self.config.valuation == "steps" and self.full_present is not None:
            result = self._step_recording(model, batch)
        else:
            result = self.plain.step(model, batch, step)
        for m, name in enumerate(model.modalities):
            result.logs[f"copies/{name}"] = float(self.copies[m])
        return result

    def _step_recording(self, model: MultimodalModel, batch: Batch) -> StepResult:
        """The plain step, recording the values of the entries that are whole samples."""
        h, outputs, loss = self.plain.task_loss(model, batch)
        assert self.full_present is not None
        index = batch.index.cpu()
        whole = (batch.present.cpu() == self.full_present[index]).nonzero().flatten()
        if whole.numel():
            rows = whole.to(batch.present.device)
            part = Batch({}, batch.target[rows], batch.present[rows], batch.index[rows])
            phi = values_from_features(
                model,
                _take(h, rows),
                part,
                self.inputs.utility,
                model.num_modalities,
                full_outputs=outputs[rows],
            )
            self.recorded[index[whole]] = phi.float().cpu()
            self.seen[index[whole]] = True
        return StepResult(loss, {"loss": loss.item(), "l_task": loss.item()})

    def valuate(self, model: MultimodalModel, train: MultimodalData) -> Tensor:
        """phi [N_train, M] of every training sample (each rank values its share; the table
        is summed over the ranks)."""
        device = next(model.parameters()).device
        table = torch.zeros(len(train), train.num_modalities, dtype=torch.float64, device=device)
        batches = epoch_batches(self.inputs, train, model, self.config.valuation_batch)
        for batch in batches:
            phi = sample_values(model, batch, self.inputs.utility, train.num_modalities)
            table[batch.index] = phi.double()
        return self.inputs.sum_over_ranks(table).float().cpu()

    def begin_epoch(
        self, model: MultimodalModel, train: MultimodalData, epoch: int
    ) -> EpochPlan | None:
        """None in the warm-up; then the valuation and the resampled epoch's plan."""
        self.full_present = train.present.cpu()
        if self.config.valuation == "steps":
            self._gather_recorded()
        if epoch < self.config.warmup:
            self.copies = [0] * train.num_modalities
            return None
        if self.config.valuation == "pass":
            self.values = self.valuate(model, train)
        copies = copies_from_values(self.values, train.present, self.config.copy_thresholds)
        self.copies = copies.sum(0).tolist()
        samples = torch.arange(len(train)).repeat_interleave(copies.sum(1))
        bits = (1 << torch.arange(train.num_modalities)).expand_as(copies)
        kept = bits.repeat_interleave(copies.flatten())
        index = torch.cat([torch.arange(len(train)), samples])
        present = torch.cat([train.present.cpu(), kept])
        return EpochPlan(index, present)

    def _gather_recorded(self) -> None:
        """The values the last epoch's steps recorded (every rank's), over the old ones."""
        packed = torch.cat([self.recorded.double(), self.seen.double()[:, None]], dim=1)
        total = self.inputs.sum_over_ranks(packed)
        seen = total[:, -1] > 0
        self.values[seen] = total[seen, :-1].float()
        self.recorded.zero_()
        self.seen.zero_()

    def state_dict(self) -> dict[str, Any]:
        return {
            "values": self.values.clone(),
            "copies": list(self.copies),
            "recorded": self.recorded.clone(),
            "seen": self.seen.clone(),
            "full_present": None if self.full_present is None else self.full_present.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if tuple(state["values"].shape) != tuple(self.values.shape):
            raise ValueError(
                f"MBT-Sample values of shape {list(state['values'].shape)} cannot be loaded "
                f"into {list(self.values.shape)}"
            )
        self.values = state["values"].clone()
        self.copies = [int(c) for c in state["copies"]]
        if "recorded" in state:
            self.recorded, self.seen = state["recorded"].clone(), state["seen"].clone()
            present = state["full_present"]
            self.full_present = None if present is None else present.clone()


def _take(h: Any, index: Tensor) -> Any:
    """The encoder features of the samples at ``index`` (a tensor, or a dense model's levels)."""
    if isinstance(h, Tensor):
        return h[index]
    return type(h)(tuple(level[index] for level in h.skips), h.bottleneck[index])


def _build(inputs: MethodInputs, options: Any) -> MBTSampleMethod:
    if options is not None and not isinstance(options, MBTSampleConfig):
        raise TypeError(
            f"mbt-sample options must be an MBTSampleConfig, got {type(options).__name__}"
        )
    return MBTSampleMethod(inputs, options)


SPEC = MethodSpec(
    name="mbt-sample",
    summary="MBT-Sample (Wei et al., CVPR 2024): per-sample Shapley valuation after a warm-up, "
    "each epoch resampled with single-modality copies of low-contribution modalities",
    options=MBTSampleConfig,
    build=_build,
    needs_upper_bounds=lambda options: False,
)
