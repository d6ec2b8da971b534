"""Learning-rate schedules: poly per epoch (mmFormer), OneCycle per step (Simple-BEV)."""

from __future__ import annotations

import pytest
import torch

from mce.training.config import HyperParameters
from mce.training.trainer import build_optimizer


def test_poly_schedule() -> None:
    hparams = HyperParameters(epochs=10, lr=1.0, lr_schedule="poly", lr_power=0.9)
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer, scheduler = build_optimizer([parameter], hparams)
    for epoch in range(10):
        assert optimizer.param_groups[0]["lr"] == pytest.approx((1 - epoch / 10) ** 0.9)
        optimizer.step()
        scheduler.step()
    with pytest.raises(ValueError, match="lr_schedule must be one of step, poly, onecycle"):
        HyperParameters(lr_schedule="cosine")


def test_onecycle_warms_up_then_anneals_linearly_over_every_step() -> None:
    hparams = HyperParameters(epochs=4, lr=0.1, lr_schedule="onecycle")
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer, scheduler = build_optimizer([parameter], hparams, steps_per_epoch=25)
    rates = []
    for _ in range(100):  # 4 epochs of 25 steps
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    peak = max(range(100), key=rates.__getitem__)
    assert rates[peak] == pytest.approx(0.1, rel=0.02)  # the peak falls between two steps
    assert 3 <= peak <= 6  # 5 % of 101 steps
    assert rates[0] < 0.01 and rates[-1] < 0.01
    falling = [b - a for a, b in zip(rates[peak:], rates[peak + 1 :])]
    assert all(step < 0 for step in falling)
    assert max(falling) - min(falling) < 1e-9  # linear
