"""The bundled digits data set ships with the package and loads offline."""

from __future__ import annotations

import torch

from mce.data.bundled import load_bundled_digits
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
