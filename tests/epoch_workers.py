"""What the two-rank tests of epoch passes (:class:`mce.methods.EpochMethod`) run in each
spawned process: a method's ``begin_epoch`` on the digits training split, sharded over the
ranks, and what it left (state, plan)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mce.data.masks import apply_missing_rates
from mce.methods import MethodInputs, get_method
from mce.science.lce import presence_counts
from mce.support import distributed
from mce.tasks.digits import TASK as DIGITS

EPOCH = 1  # an epoch after MBT-Sample's warm-up (warmup=1) and PMR's first pass


def epoch_setup() -> tuple[Any, torch.nn.Module]:
    """The masked digits training split less two samples (odd shards) and a seeded model."""
    train = apply_missing_rates(DIGITS.splits(None).train, (0.5, 0.3), seed=3).data
    train = train.subset(torch.arange(len(train) - 2))
    torch.manual_seed(5)
    return train, DIGITS.build_model().eval()


def build(name: str, options: Any, train, ranks=None):
    inputs = MethodInputs(
        DIGITS.loss,
        DIGITS.utility,
        presence_counts(train.present, 2),
        len(train),
        seed=7,
        ranks=ranks,
        batch_size=100,
    )
    return get_method(name).build(inputs, options)


def begin_epoch(name: str, options: Any, ranks=None) -> dict[str, Any]:
    """The method's state and plan after ``begin_epoch(model, train, EPOCH)``."""
    train, model = epoch_setup()
    method = build(name, options, train, ranks)
    with torch.no_grad():
        plan = method.begin_epoch(model, train, EPOCH)
    return {"state": method.state_dict(), "plan": None if plan is None else plan.state_dict()}


def epoch_worker(out: str, name: str, options: Any) -> None:
    result = begin_epoch(name, options, distributed.ranks())
    torch.save(result, Path(out) / f"epoch-rank{distributed.rank()}.pt")
