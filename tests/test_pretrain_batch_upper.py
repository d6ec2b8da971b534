"""Upper bounds scored on each batch's own inputs (tasks with random crops)."""

from __future__ import annotations

import json

import torch
from torch import nn

from mce.data.dataset import Batch
from mce.tasks import get_task
from mce.tasks.base import classification_utility
from mce.training.config import HyperParameters
from mce.training.pretrain import BatchUpperBounds, cache_key
from mce.training.records import config_differences
from mce.training.run import config_for


def test_batch_upper_bounds_score_each_present_sample_with_its_modality_model() -> None:
    torch.manual_seed(0)
    models = {"a": nn.Linear(3, 2), "b": nn.Linear(4, 2)}
    inputs = {"a": torch.randn(5, 3), "b": torch.randn(5, 4)}
    target = torch.randint(0, 2, (5,))
    present = torch.tensor([0b01, 0b10, 0b11, 0b11, 0b01])
    batch = Batch(inputs, target, present, torch.arange(5))
    upper = BatchUpperBounds(models, ("a", "b"), classification_utility)(batch)
    assert all(not p.requires_grad for model in models.values() for p in model.parameters())
    for n in range(5):
        for m, name in enumerate(("a", "b")):
            expected = 0.0
            if (int(present[n]) >> m) & 1:
                out = models[name](inputs[name][n : n + 1])
                expected = float(classification_utility(out, target[n : n + 1])[0])
            assert float(upper[n, m]) == expected


def test_old_configs_compare_with_their_defaults() -> None:
    config = config_for("digits", epochs=2)
    saved = json.loads(json.dumps(config.to_dict()))
    for key in ("task_options", "row_memory_gb"):
        del saved[key]
    del saved["hparams"]["lr_schedule"], saved["method_options"]["mce"]["row_budget"]
    assert config_differences(saved, config) == []
    saved["hparams"]["epochs"] = 3
    assert config_differences(saved, config) == ["hparams"]
    assert config_differences(saved, config_for("digits", epochs=3)) == []


def test_cache_key_covers_task_options() -> None:
    small = get_task("brats", {"crop": 16, "levels": 3, "base": 4})
    other = get_task("brats", {"crop": 32, "levels": 3, "base": 4})
    model = nn.Linear(1, 1)
    keys = [
        cache_key(t, "t1", model, HyperParameters(), seed=0, setting="x", fingerprint="f")
        for t in (small, other)
    ]
    assert keys[0] != keys[1]
    assert '"task_options"' in keys[0]
    digits = cache_key(
        get_task("digits"), "image", model, HyperParameters(), seed=0, setting="x", fingerprint="f"
    )
    assert "task_options" not in digits
