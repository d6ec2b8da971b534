"""Brain-tumour segmentation pieces: Dice + cross-entropy loss, per-row Dice utility, tumour-biased
random crops, sliding-window inference and evaluation over every modality combination.

Labels are the class indices 0..3 of :mod:`mce.data.brats` (background, NCR/NET, edema,
enhancing tumour); scores are Dice over the regions WT, TC and ET (:func:`mce.data.brats.regions`),
with mmFormer's convention that an empty prediction of an empty region scores 1. MONAI does the
sliding window, the crops, the soft Dice loss and the Dice metric.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mce.data.brats import REGIONS, regions
from mce.data.dataset import MultimodalData
from mce.evaluation.combinations import (
    CombinationScores,
    Evaluation,
    evaluation_batches,
    modality_means,
    scores_complete,
)
from mce.nn.model import combination_rows
from mce.support import distributed
from mce.support.optional import require

__all__ = [
    "ET_MIN_VOXELS",
    "SlidingWindow",
    "TumourCrop",
    "content_box",
    "dice_ce_loss",
    "dice_utility",
    "et_post_dice",
    "evaluate_segmentation",
    "evaluate_segmentation_heads",
    "region_dice",
]

ET_MIN_VOXELS = 500
"""ET post-processing (mmFormer, BraTS custom): a predicted ET under this many voxels is erased."""


def _monai() -> ModuleType:  # imported on use: monai is the ``brats`` extra
    for part in ("inferers", "losses", "metrics", "transforms"):
        require(f"monai.{part}", "brats", "the brats task")
    return require("monai", "brats", "the brats task")


def dice_ce_loss(outputs: Tensor, target: Tensor) -> Tensor:
    """Per-sample loss [B]: cross-entropy (mean over voxels) + soft Dice loss (mean over the 4
    classes, background included, as mmFormer). outputs: logits [B, K, D, H, W]; target:
    class indices [B, D, H, W]."""
    monai = _monai()
    target = target.long()
    ce = F.cross_entropy(outputs, target, reduction="none").flatten(1).mean(1)
    dice = monai.losses.DiceLoss(
        include_background=True, to_onehot_y=True, softmax=True, reduction="none"
    )(outputs, target[:, None])
    return ce + dice.flatten(1).mean(1)


def _dice(predicted: Tensor, target: Tensor) -> Tensor:
    """Dice [B, C] of boolean masks [B, C, ...]; empty predicted empty scores 1."""
    return _monai().metrics.compute_dice(
        predicted.float(), target.float(), include_background=True, ignore_empty=False
    )


def region_dice(predicted: Tensor, target: Tensor) -> Tensor:
    """Dice [B, 3] of the regions (WT, TC, ET) of class maps ``predicted`` and ``target``
    [B, D, H, W]; an empty region predicted empty scores 1."""
    return _dice(regions(predicted), regions(target.long()))


def et_post_dice(predicted: Tensor, target: Tensor, min_voxels: int = ET_MIN_VOXELS) -> Tensor:
    """Dice [B] of ET after the customary post-processing: a predicted ET of fewer than
    ``min_voxels`` voxels is erased (mmFormer relabels it), class maps [B, D, H, W]."""
    et = predicted == 3
    et = et & (et.flatten(1).sum(1) >= min_voxels).view(-1, 1, 1, 1)
    return _dice(et[:, None], (target.long() == 3)[:, None])[:, 0]


def dice_utility(outputs: Tensor, target: Tensor) -> Tensor:
    """Per-sample utility [B] in [0, 1]: the mean Dice over WT, TC and ET of the argmax of
    ``outputs`` (logits [B, K, ...]); all rows at once."""
    return region_dice(outputs.argmax(1), target).mean(1)


class TumourCrop:
    """Random crops of size ``roi``, centred on a tumour voxel or a brain voxel with equal odds
    (MONAI ``RandCropByPosNegLabeld``), the same crop for every modality and the label; volumes
    smaller than ``roi`` are zero-padded first. Draws its seed from torch's RNG, so a seeded run
    (and its resume) crops the same way. Inputs come back as float32.
    """

    def __init__(self, roi: Sequence[int], positive: float = 1.0, negative: float = 1.0) -> None:
        self.roi = tuple(int(s) for s in roi)
        self.positive, self.negative = positive, negative

    def __call__(
        self, inputs: Mapping[str, Tensor], target: Tensor
    ) -> tuple[dict[str, Tensor], Tensor]:
        monai = _monai()
        names = list(inputs)
        keys = [*names, "label", "brain"]
        transform = monai.transforms.Compose(
            [
                monai.transforms.SpatialPadd(keys, self.roi),
                monai.transforms.RandCropByPosNegLabeld(
                    keys,
                    label_key="label",
                    spatial_size=self.roi,
                    pos=self.positive,
                    neg=self.negative,
                    num_samples=1,
                    image_key="brain",
                    image_threshold=0.5,
                ),
            ]
        )
        transform.set_random_state(int(torch.randint(0, 2**31 - 1, ())))
        crops: dict[str, list[Tensor]] = {key: [] for key in keys}
        for b in range(target.shape[0]):
            sample = {name: inputs[name][b].float() for name in names}
            brain = torch.stack([x.abs().sum(0) for x in sample.values()]).sum(0) > 0
            sample["label"] = target[b][None]
            sample["brain"] = brain[None].float()
            (cropped,) = transform(sample)
            for key in keys:  # plain tensors: MONAI's MetaTensor slows every later op
                value = cropped[key]
                crops[key].append(value.as_tensor() if hasattr(value, "as_tensor") else value)
        return (
            {name: torch.stack(crops[name]) for name in names},
            torch.stack(crops["label"])[:, 0].to(target.dtype),
        )


def content_box(x: Tensor) -> tuple[slice, slice, slice]:
    """The bounding box of the voxels of x [C, D, H, W] that are non-zero in any channel (for a
    BraTS case: its brain crop; padding and background are zero)."""
    mask = (x != 0).any(0)
    if not bool(mask.any()):
        return (slice(0, 0),) * 3
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = torch.nonzero(mask.any(other))[:, 0]
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return box[0], box[1], box[2]


class SlidingWindow:
    """Whole-volume inference by MONAI's sliding window: windows of ``roi``, ``overlap`` 0.5
    (mmFormer's stride 64 of 128), outputs averaged where windows overlap.

    Called as ``window(predictor, x)`` with x [B, C, D, H, W] and predictor mapping a batch of
    windows [w, C, *roi] to [w, K, *roi]; returns [B, K, D, H, W]. With ``content_only`` the
    windows cover only each sample's :func:`content_box` (the brain, not the padding around
    it), and the voxels outside it get the one-hot background (channel 0).
    """

    def __init__(
        self,
        roi: Sequence[int],
        overlap: float = 0.5,
        windows_per_pass: int = 2,
        content_only: bool = True,
    ) -> None:
        self.roi = tuple(int(s) for s in roi)
        self.overlap, self.windows_per_pass = overlap, windows_per_pass
        self.content_only = content_only

    def _infer(self, predictor: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        return _monai().inferers.sliding_window_inference(
            x.float(),
            self.roi,
            self.windows_per_pass,
            predictor,
            overlap=self.overlap,
            mode="constant",
        )

    def __call__(self, predictor: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        if not self.content_only:
            return self._infer(predictor, x)
        outputs = []
        for sample in x:
            box = content_box(sample)
            if box[0].stop == 0:  # nothing but zeros: all background, nothing to run
                outputs.append(None)
                continue
            inside = self._infer(predictor, sample[(slice(None), *box)][None])[0]
            out = inside.new_zeros(inside.shape[0], *sample.shape[1:])
            out[0] = 1.0
            out[(slice(None), *box)] = inside
            outputs.append(out)
        if all(out is None for out in outputs):
            raise ValueError("every sample's input is all zeros: nothing to segment")
        like = next(out for out in outputs if out is not None)
        background = torch.zeros_like(like)
        background[0] = 1.0
        return torch.stack([background if out is None else out for out in outputs])


def _stack(batch_inputs: Mapping[str, Tensor], modalities: Sequence[str]) -> Tensor:
    return torch.cat([batch_inputs[name].float() for name in modalities], dim=1)


def _combinations_predictor(
    model, present: Tensor, combos: Sequence[int], complete: bool = False
):
    """windows [w, M, *roi] of one sample (presence ``present`` [1]) -> softmax of every
    combination's prediction [w, len(combos) K, *roi] (zeros where C & present is empty, or
    with ``complete`` where present lacks a modality of C)."""

    def predictor(windows: Tensor) -> Tensor:
        count = windows.shape[0]
        inputs = {name: windows[:, m : m + 1] for m, name in enumerate(model.modalities)}
        rows_present = present.expand(count)
        h = model.encode(inputs, rows_present)
        rows, which = combination_rows(rows_present, combos, complete)
        _, logits = model.forward_rows(h, rows)
        probs = logits.float().softmax(1)
        out = probs.new_zeros(count, len(combos), *probs.shape[1:])
        out[rows[:, 0], which] = probs
        return out.flatten(1, 2)

    return predictor


@torch.no_grad()
def evaluate_segmentation(
    model,
    data: MultimodalData,
    window: SlidingWindow,
    device: torch.device | str = "cpu",
    progress: bool = True,
    et_min_voxels: int = ET_MIN_VOXELS,
    score_on: str = "available",
) -> Evaluation:
    """Dice of every non-empty modality combination on whole volumes, and their average.

    Each sample is run once through the sliding window; every window is encoded once and
    decoded for all combinations in one batch of rows (softmax averaged over overlapping
    windows, then argmax). A sample is scored for a combination C when C & its present set is
    not empty (``score_on="available"``) or when it holds all of C (``"complete"``); each
    combination's count is in ``Evaluation.samples``. In a data-parallel run every rank
    scores its shard of ``data`` and the sums are all-reduced (every rank must call it).

    Returns:
        :class:`Evaluation`: ``scores`` = mean over samples of the mean Dice over WT, TC, ET;
        ``metrics`` = ``dice_wt``, ``dice_tc``, ``dice_et`` and ``dice_et_post`` (ET with
        predictions under ``et_min_voxels`` voxels erased), per combination and averaged.
    """
    model.eval()
    columns = ["utility", *(f"dice_{r.lower()}" for r in REGIONS), "dice_et_post"]
    scores = CombinationScores(model.modalities, columns)
    combos = scores.combinations
    complete = scores_complete(score_on)
    for batch in evaluation_batches(data, 1, device, progress):
        present = batch.present
        predictor = _combinations_predictor(model, present, combos, complete)
        stitched = window(predictor, _stack(batch.inputs, model.modalities))
        predicted = stitched.view(len(combos), -1, *stitched.shape[2:]).argmax(1)
        target = batch.target.long().expand(len(combos), *batch.target.shape[1:])
        dice = region_dice(predicted, target).double().cpu()  # (combos, 3)
        post = et_post_dice(predicted, target, et_min_voxels)
        values = torch.cat([dice.mean(1, keepdim=True), dice, post.double().cpu()[:, None]], 1)
        which = combination_rows(present[:1].cpu(), combos, complete)[1]
        scores.add(which, values[which])
    return scores.evaluation("utility")


@torch.no_grad()
def evaluate_segmentation_heads(
    model, data: MultimodalData, window: SlidingWindow, device: torch.device | str = "cpu"
) -> dict[str, float]:
    """Mean Dice utility of each modality's unimodal head on whole volumes (sliding window),
    over the samples where that modality is present (sharded over the ranks of a data-parallel
    run, as :func:`evaluate_segmentation`)."""
    model.eval()
    totals = torch.zeros(model.num_modalities, dtype=torch.float64)
    counts = torch.zeros(model.num_modalities, dtype=torch.float64)
    for batch in distributed.shard(data).batches(1):
        batch = batch.to(device)
        for m, name in enumerate(model.modalities):
            if not (int(batch.present[0]) >> m) & 1:
                continue
            unimodal = nn.Sequential(model.encoders[name], model.heads[name])
            logits = window(unimodal, batch.inputs[name])
            totals[m] += float(dice_utility(logits, batch.target)[0])
            counts[m] += 1
    return modality_means(totals, counts, model.modalities)
