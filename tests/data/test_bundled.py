"""The bundled digits data set ships with the package and loads offline."""

from __future__ import annotations

import torch

from mce.data.bundled import load_bundled_digits
from mce.data.dataset import MultimodalData
from mce.tasks.digits import TASK


def test_bundled_digits_load():
    data = load_bundled_digits()
    assert len(data) == 1797
    assert data.inputs["image"].shape == (1797, 1, 8, 8)
    assert data.inputs["audio"].shape == (1797, 1, 13, 16)
    assert torch.isfinite(data.inputs["audio"]).all()
    assert set(data.target.tolist()) == set(range(10))


def test_digits_split_is_fixed():
    train, test = TASK.load(None)
    again, _ = TASK.load(None)
    assert (len(train), len(test)) == (1257, 540)
    assert torch.equal(train.target, again.target)


def test_digits_audio_is_standardised_with_training_statistics_only():
    from mce.data.dataset import standardize
    from mce.tasks import get_task

    train, test = get_task("digits").load(None)
    audio = train.inputs["audio"]
    assert torch.allclose(audio.mean(0), torch.zeros_like(audio[0]), atol=1e-4)
    assert torch.allclose(audio.std(0), torch.ones_like(audio[0]), atol=1e-3)
    # The test split cannot move the training statistics.
    shifted = MultimodalData(
        test.modalities,
        dict(test.inputs, audio=test.inputs["audio"] * 100 + 7),
        test.target,
        test.present,
    )
    same_train, _ = standardize(train, shifted, "audio", dims=(0,))
    assert torch.allclose(same_train.inputs["audio"], audio, atol=1e-5)
