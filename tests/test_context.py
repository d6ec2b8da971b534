"""Per-sample context (side data such as camera calibrations): kept by masks, carried by subsets
and batches, handed to the encoders that ask for it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mce.data.dataset import MultimodalData
from mce.nn.model import run_encoder


def _data() -> MultimodalData:
    return MultimodalData(
        ("a", "b"),
        {"a": torch.ones(3, 2), "b": torch.ones(3, 2)},
        torch.arange(3),
        torch.tensor([0b11, 0b11, 0b11]),
        context={"calibration": torch.arange(6.0).view(3, 2)},
    )


def test_masks_keep_the_context_and_subsets_and_batches_carry_it() -> None:
    data = _data()
    masked = data.with_presence(torch.tensor([0b10, 0b01, 0b11]))
    assert torch.equal(masked.context["calibration"], data.context["calibration"])
    assert float(masked.inputs["a"][0].abs().sum()) == 0  # the input itself is zeroed
    assert masked.subset(torch.tensor([2, 0])).context["calibration"].tolist() == [[4, 5], [0, 1]]
    batch = next(masked.batches(2, order=[1, 2]))
    assert batch.context["calibration"].tolist() == [[2, 3], [4, 5]]
    assert batch.to("cpu").context["calibration"].tolist() == [[2, 3], [4, 5]]


def test_bad_context_is_named() -> None:
    data = _data()
    with pytest.raises(ValueError, match="context 'c' has 2 samples, targets have 3"):
        MultimodalData(data.modalities, data.inputs, data.target, data.present,
                       context={"c": torch.zeros(2)})  # fmt: skip
    with pytest.raises(ValueError, match="context 'c' holds NaN"):
        MultimodalData(data.modalities, data.inputs, data.target, data.present,
                       context={"c": torch.full((3,), float("nan"))})  # fmt: skip


class _Calibrated(nn.Module):
    context_key = "calibration"

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return x + context


def test_encoders_get_the_context_they_name() -> None:
    x = torch.zeros(2, 2)
    context = {"calibration": torch.ones(2, 2)}
    assert torch.equal(run_encoder(_Calibrated(), x, None, context), torch.ones(2, 2))
    assert torch.equal(run_encoder(nn.Identity(), x, None, context), x)  # no key: not passed
    with pytest.raises(ValueError, match="_Calibrated needs the samples' context 'calibration'"):
        run_encoder(_Calibrated(), x, None, {})
