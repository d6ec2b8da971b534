"""Atomic checkpoints and clear errors on missing or corrupt files."""

from __future__ import annotations

import pytest
import torch

from mce.support.checkpoint import load_checkpoint, save_atomic


def test_round_trip_and_no_leftover_files(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_atomic({"x": torch.arange(3), "step": 4}, path)
    save_atomic({"x": torch.arange(5), "step": 5}, path)
    state = load_checkpoint(path)
    assert state["step"] == 5 and torch.equal(state["x"], torch.arange(5))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_failed_save_keeps_previous_checkpoint(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_atomic({"step": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError):
        save_atomic({"bad": Unpicklable()}, path)
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_missing_and_corrupt(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_checkpoint(tmp_path / "nothing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(bad)
