"""Segmentation pieces against hand-written references: region Dice, the per-row utility and
loss, tumour crops, the sliding window, and the batched evaluation over combinations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mce.data.brats import regions
from mce.data.dataset import MultimodalData
from mce.evaluation.combinations import combination_name
from mce.nn.model import full_rows
from mce.tasks.brats import build_model
from mce.tasks.brats.segmentation import (
    SlidingWindow,
    TumourCrop,
    content_box,
    dice_ce_loss,
    dice_utility,
    et_post_dice,
    evaluate_segmentation,
    region_dice,
)


def numpy_dice(pred: np.ndarray, true: np.ndarray) -> float:
    """mmFormer's Dice with its convention: empty predicted empty = 1."""
    if not pred.any() and not true.any():
        return 1.0
    return 2.0 * np.logical_and(pred, true).sum() / (pred.sum() + true.sum())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_region_dice_matches_numpy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (5, 7, 6, 3)
    true = rng.choice(4, size=shape, p=[0.7, 0.1, 0.1, 0.1]).astype(np.int64)
    pred = np.where(rng.random(shape) < 0.3, rng.integers(0, 4, size=shape), true)
    pred[0] = 0  # nothing predicted
    true[1] = 0  # nothing to find
    pred[1] = 0  # ... and nothing predicted: every region scores 1
    got = region_dice(torch.from_numpy(pred), torch.from_numpy(true)).numpy()
    expected = np.array(
        [
            [numpy_dice(p, t) for p, t in zip(regions(pred[b]), regions(true[b]))]
            for b in range(shape[0])
        ]
    )
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert (got[1] == 1).all()


def test_utility_and_loss_are_per_sample() -> None:
    generator = torch.Generator().manual_seed(7)
    logits = torch.randn(4, 4, 6, 5, 7, generator=generator, requires_grad=True)
    target = torch.randint(0, 4, (4, 6, 5, 7), generator=generator)
    utility = dice_utility(logits, target)
    loss = dice_ce_loss(logits, target)
    assert utility.shape == (4,) and loss.shape == (4,)
    for b in range(4):
        one = slice(b, b + 1)
        assert torch.allclose(utility[b], dice_utility(logits[one], target[one])[0])
        assert torch.allclose(loss[b], dice_ce_loss(logits[one], target[one])[0], atol=1e-6)
        assert utility[b] == region_dice(logits[b : b + 1].argmax(1), target[one]).mean()
    loss.sum().backward()
    assert torch.isfinite(logits.grad).all()
    perfect = torch.nn.functional.one_hot(target, 4).permute(0, 4, 1, 2, 3).float() * 50
    assert torch.allclose(dice_utility(perfect, target), torch.ones(4))
    assert float(dice_ce_loss(perfect, target).max()) < 1e-3


def _coordinates(shape: tuple[int, int, int]) -> torch.Tensor:
    d, h, w = shape
    z, y, x = torch.meshgrid(torch.arange(d), torch.arange(h), torch.arange(w), indexing="ij")
    return (z * 10_000 + y * 100 + x + 1).float()


def test_crop_is_the_same_for_every_modality_and_the_label() -> None:
    shape = (20, 18, 12)
    coords = _coordinates(shape)
    label = torch.zeros(2, *shape, dtype=torch.uint8)
    label[:, 12:15, 3:6, 2:5] = 3
    inputs = {
        "a": coords[None, None].repeat(2, 1, 1, 1, 1),
        "b": -coords[None, None].repeat(2, 1, 1, 1, 1),
    }
    crop = TumourCrop((8, 8, 8))
    torch.manual_seed(0)
    out, target = crop(inputs, label)
    torch.manual_seed(0)
    again, _ = crop(inputs, label)
    assert type(out["a"]) is torch.Tensor and out["a"].dtype == torch.float32
    assert tuple(out["a"].shape) == (2, 1, 8, 8, 8) and tuple(target.shape) == (2, 8, 8, 8)
    assert torch.equal(out["a"], again["a"])
    assert torch.equal(out["a"], -out["b"])
    for b in range(2):
        first = int(out["a"][b, 0, 0, 0, 0]) - 1
        z, y, x = first // 10_000, first // 100 % 100, first % 100
        window = (slice(z, z + 8), slice(y, y + 8), slice(x, x + 8))
        assert torch.equal(out["a"][b, 0], coords[window])
        assert torch.equal(target[b], label[b][window])


def test_crop_pads_small_volumes_and_favours_tumour() -> None:
    shape = (6, 30, 30)
    label = torch.zeros(1, *shape, dtype=torch.uint8)
    label[0, 2:4, 25:28, 25:28] = 2
    inputs = {"a": torch.ones(1, 1, *shape)}
    crop = TumourCrop((8, 8, 8))
    torch.manual_seed(1)
    hits = 0
    for _ in range(40):
        out, target = crop(inputs, label)
        assert tuple(out["a"].shape) == (1, 1, 8, 8, 8)
        hits += int(target.any())
    # half of the crops are centred on tumour; a uniform 8^3 crop would hold it far less often
    assert 12 <= hits <= 40


def test_sliding_window_covers_the_volume() -> None:
    """Every voxel is predicted once or averaged with equal weights (a pointwise predictor is
    reproduced exactly)."""
    x = torch.randn(2, 3, 13, 9, 17)
    out = SlidingWindow((8, 8, 8))(lambda w: 2 * w, x)
    assert torch.allclose(out, 2 * x, atol=1e-6)


@pytest.mark.slow
def test_evaluation_equals_one_subset_at_a_time() -> None:
    torch.manual_seed(3)
    model = build_model(crop=8, base=2, levels=3).eval()
    generator = torch.Generator().manual_seed(3)
    names = model.modalities
    data = MultimodalData(
        names,
        {n: torch.randn(2, 1, 10, 9, 12, generator=generator).half() for n in names},
        torch.randint(0, 4, (2, 10, 9, 12), generator=generator).to(torch.uint8),
        torch.tensor([0b1111, 0b0110]),
    )
    window = SlidingWindow((8, 8, 8))
    evaluation = evaluate_segmentation(model, data, window, progress=False, et_min_voxels=3)
    assert len(evaluation.scores) == 16
    for combo in range(1, 16):
        expected = []
        for n in range(2):
            subset = combo & int(data.present[n])
            if not subset:
                continue
            alone = torch.tensor([subset])

            def predictor(windows: torch.Tensor) -> torch.Tensor:
                inputs = {name: windows[:, m : m + 1] for m, name in enumerate(names)}
                rows_present = alone.expand(windows.shape[0])
                h = model.encode(inputs, rows_present)
                return model.forward_rows(h, full_rows(rows_present))[1].softmax(1)

            x = torch.cat([data.inputs[name][n : n + 1].float() for name in names], 1)
            with torch.no_grad():
                predicted = window(predictor, x).argmax(1)
            expected.append(region_dice(predicted, data.target[n : n + 1].long())[0])
        name = combination_name(combo, names)
        dice = torch.stack(expected).mean(0)
        assert evaluation.scores[name] == pytest.approx(float(dice.mean()), abs=1e-6)
        assert evaluation.metrics["dice_wt"][name] == pytest.approx(float(dice[0]), abs=1e-6)
        assert evaluation.metrics["dice_et"][name] == pytest.approx(float(dice[2]), abs=1e-6)
    assert evaluation.scores["average"] == pytest.approx(
        sum(v for k, v in evaluation.scores.items() if k != "average") / 15
    )
    assert set(evaluation.metrics) == {"dice_wt", "dice_tc", "dice_et", "dice_et_post"}


def test_et_post_processing_erases_small_et_only() -> None:
    target = torch.zeros(3, 6, 6, 6, dtype=torch.long)
    target[0, :2, :2, :2] = 3  # 8 ET voxels to find
    predicted = torch.zeros_like(target)
    predicted[0, :1, :2, :2] = 3  # 4 voxels of it: raw Dice 2*4/(4+8)
    predicted[1, 0, 0, 0] = 3  # a false-positive voxel where there is no ET
    predicted[2, :3, :3, :3] = 3  # 27 false-positive voxels: above the threshold, kept
    raw = region_dice(predicted, target)[:, 2]
    post = et_post_dice(predicted, target, min_voxels=5)
    assert torch.allclose(raw, torch.tensor([8 / 12, 0.0, 0.0]))
    assert torch.allclose(post, torch.tensor([0.0, 1.0, 0.0]))
    assert torch.allclose(et_post_dice(predicted, target, min_voxels=1), raw)


def test_content_box_and_background_outside_it() -> None:
    x = torch.zeros(1, 2, 12, 10, 9)
    x[0, 1, 3:7, 2:9, 4:5] = torch.rand(4, 7, 1) + 0.5
    assert content_box(x[0]) == (slice(3, 7), slice(2, 9), slice(4, 5))
    seen = []

    def predictor(windows: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(windows.shape[2:]))
        return torch.full((windows.shape[0], 3, *windows.shape[2:]), 0.25)

    out = SlidingWindow((4, 4, 4))(predictor, x)
    assert tuple(out.shape) == (1, 3, 12, 10, 9)
    assert all(shape == (4, 4, 4) for shape in seen)
    inside = out[0, :, 3:7, 2:9, 4:5]
    assert torch.allclose(inside, torch.full_like(inside, 0.25))
    outside = out[0].clone()
    outside[:, 3:7, 2:9, 4:5] = float("nan")
    keep = ~torch.isnan(outside[0])
    assert bool((outside[0][keep] == 1).all()) and bool((outside[1:][:, keep] == 0).all())
    with pytest.raises(ValueError, match="all zeros"):
        SlidingWindow((4, 4, 4))(predictor, torch.zeros(1, 2, 5, 5, 5))
