"""What the data-parallel tests run in each of their processes (spawned, gloo on the CPU), and
a dropout-free digits task whose two-rank training can be compared with one process's.

Workers write what they measured with ``torch.save`` under ``out``, one file per rank; the
tests read them in the parent process.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mce.data.masks import apply_missing_rates
from mce.evaluation.combinations import evaluate_combinations, evaluate_unimodal_heads
from mce.evaluation.metrics import CLASSIFICATION_METRICS
from mce.methods import BaselineMethod, MCEConfig, MCEMethod, MethodInputs
from mce.methods.passion import PASSIONMethod
from mce.methods.pmr import PMRConfig, PMRMethod
from mce.methods.redcore import RedCoreMethod, adapt_model
from mce.methods.shaspec import ShaSpecMethod
from mce.methods.shaspec import adapt_model as adapt_shaspec
from mce.nn.model import MultimodalModel
from mce.science.lce import presence_counts
from mce.support import distributed
from mce.tasks.digits import TASK as DIGITS
from mce.train import config_for, run
from mce.training.trainer import _mean_over_ranks, _MethodStep


def _no_dropout_model() -> MultimodalModel:
    """The digits model with every dropout off: its training is a function of the data and
    the order alone, so two ranks and one process must train (nearly) the same weights."""
    model = DIGITS.build_model()
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        if isinstance(module, nn.MultiheadAttention):
            module.dropout = 0.0
    return model


TASK = dataclasses.replace(DIGITS, name="digits-no-dropout", build_model=_no_dropout_model)
"""``--task ddp_workers:TASK``."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn(worker: Callable[..., None], world: int, *args: Any) -> None:
    """Run ``worker(*args)`` in ``world`` fresh processes joined as a gloo process group, with
    the variables torchrun sets."""
    port = free_port()
    torch.multiprocessing.spawn(_enter, (world, port, worker, args), nprocs=world, join=True)


def _enter(rank: int, world: int, port: int, worker: Callable[..., None], args: tuple) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
    )
    torch.set_num_threads(1)
    distributed.init("cpu")
    try:
        worker(*args)
    finally:
        distributed.shutdown()


# ---------------------------------------------------------------------------------------------
# One training step and an evaluation
# ---------------------------------------------------------------------------------------------

# case -> (MCE options, None for the baseline, "redcore", "pmr" or "passion"; upper bounds
# continuous rather than 0/1)
STEP_CASES: dict[str, tuple[MCEConfig | str | None, bool]] = {
    "mce": (MCEConfig(), False),
    "mce-continuous-upper": (MCEConfig(), True),
    "mce-official-weighting": (MCEConfig(weighting="official"), False),
    "mce-no-b": (MCEConfig(use_b=False, use_a=False), False),
    "baseline": (None, False),
    "redcore": ("redcore", False),
    "shaspec": ("shaspec", False),
    "passion": ("passion", False),
    "pmr": ("pmr", False),
}
BATCH = 63  # odd: the two slices hold 32 and 31 samples


def step_setup(continuous_upper: bool):
    """The digits training split with its masks, a global batch of :data:`BATCH` samples, an
    upper-bound table (0/1 utilities, as accuracy gives, or continuous ones in [0, 1]) and the
    split's presence counts."""
    splits = DIGITS.splits(None)
    train = apply_missing_rates(splits.train, (0.5, 0.3), seed=3).data
    generator = torch.Generator().manual_seed(11)
    presence = torch.stack([(train.present >> m) & 1 for m in range(2)], 1).float()
    upper = torch.rand(len(train), 2, generator=generator)
    upper = (upper if continuous_upper else upper.round()) * presence
    index = torch.randperm(len(train), generator=generator)[:BATCH]
    return train, train.batch(index), upper, presence_counts(train.present, 2)


def build_method(case: str, train, upper, counts, ranks=None):
    config, _ = STEP_CASES[case]
    inputs = MethodInputs(DIGITS.loss, DIGITS.utility, counts, len(train), 0, upper, ranks=ranks)
    if config == "redcore":
        return RedCoreMethod(inputs)
    if config == "shaspec":
        return ShaSpecMethod(inputs)
    if config == "passion":
        return PASSIONMethod(inputs)
    if config == "pmr":  # with the prototypes of one unsharded pass (the same on every rank)
        method = PMRMethod(inputs)
        method.load_state_dict(pmr_prototypes(train))
        return method
    return BaselineMethod(inputs) if config is None else MCEMethod(inputs, config)


def step_model(case: str) -> MultimodalModel:
    """The model of a step case, seeded: RedCore's adapted and in eval mode (its variational
    encoders then give their means, not draws that differ between ranks and one process)."""
    torch.manual_seed(0)
    model = _no_dropout_model()
    if STEP_CASES[case][0] == "redcore":
        model = adapt_model(model, None).eval()
    if STEP_CASES[case][0] == "shaspec":
        model = adapt_shaspec(model, None)
    return model


def evaluation_setup():
    """A seeded model and the digits test split less one sample (539: shards of 270 and 269),
    masked so that the combinations and heads see different samples."""
    splits = DIGITS.splits(None)
    test = apply_missing_rates(splits.test, (0.4, 0.3), seed=5).data
    test = test.subset(torch.arange(len(test) - 1))
    torch.manual_seed(7)
    return _no_dropout_model().eval(), test


def evaluate(model, test) -> dict[str, Any]:
    combinations = evaluate_combinations(
        model, DIGITS.utility, test, batch_size=100, progress=False, metrics=CLASSIFICATION_METRICS
    )
    heads = evaluate_unimodal_heads(model, DIGITS.utility, test, batch_size=100)
    return {"scores": combinations.scores, "metrics": combinations.metrics, "heads": heads}


def step_and_evaluation_worker(out: str) -> None:
    """Each step case: one step on this rank's slice of the global batch through the
    DistributedDataParallel step, the backward, one optimizer step; what it logged (the mean
    over the ranks), the gradients, and the parameters after the optimizer step. Then the
    sharded evaluation of a seeded model."""
    rank, world = distributed.rank(), distributed.world_size()
    results: dict[str, Any] = {}
    for case, (_, continuous) in STEP_CASES.items():
        train, batch, upper, counts = step_setup(continuous)
        local = train.batch(batch.index.tensor_split(world)[rank])
        model = step_model(case)
        method = build_method(case, train, upper, counts, distributed.ranks())
        step_module = distributed.data_parallel(_MethodStep(model, method), torch.device("cpu"))
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        result = step_module(local, 0)
        result.loss.backward()
        grads = {
            name: None if p.grad is None else p.grad.clone() for name, p in model.named_parameters()
        }
        optimizer.step()
        logs, _, _ = _mean_over_ranks(result.logs, result.loss.item(), False)
        results[case] = {
            "logs": logs,
            "grads": grads,
            "params": {k: v.clone() for k, v in model.state_dict().items()},
            "samples": local.index.numel(),
        }
    model, test = evaluation_setup()
    results["evaluation"] = evaluate(model, test)
    results["evaluation"]["shard"] = len(distributed.shard(test))
    torch.save(results, Path(out) / f"step-rank{rank}.pt")


# ---------------------------------------------------------------------------------------------
# Whole runs: resume under two ranks
# ---------------------------------------------------------------------------------------------

# 1,257 training samples in batches of 400: 4 steps an epoch, the last of 57 samples
RUN_SETTINGS = {
    "method": "mce",
    "epochs": 2,
    "batch_size": 400,
    "pretrain_steps": 2,
    "seed": 4,
    "progress": False,
}


def resume_worker(out: str) -> None:
    """An uninterrupted run; the same run stopped at step 2 (epoch 0), its folder copied (for
    the world-size check), resumed and stopped at step 5 (epoch 1), resumed to the end. Each
    rank saves what ``run`` returned."""
    root = Path(out)
    settings = dict(RUN_SETTINGS, cache_dir=str(root / "cache"))
    returned = {}
    returned["straight"] = run(config_for(out=str(root / "straight"), **settings))
    resumed = config_for(out=str(root / "resumed"), **settings)
    returned["stopped"] = run(resumed, stop_at_step=2)
    if distributed.is_main():
        shutil.copytree(root / "resumed", root / "stopped")
    returned["stopped-again"] = run(resumed, resume=True, stop_at_step=5)
    returned["resumed"] = run(resumed, resume=True)
    torch.save(returned, root / f"returned-rank{distributed.rank()}.pt")


# ---------------------------------------------------------------------------------------------
# PMR's prototype pass
# ---------------------------------------------------------------------------------------------


def pmr_prototypes(train=None, ranks=None) -> dict[str, Any]:
    """PMR's state after its passes before epochs 0 and 1 (momentum 0.5, 30 % of the split
    in batches of 50) on ``train`` (default: the step cases' split) with the seeded model."""
    if train is None:
        train, _, _, _ = step_setup(False)
    counts = torch.tensor([len(train), len(train)])
    inputs = MethodInputs(
        DIGITS.loss, DIGITS.utility, counts, len(train), 0, ranks=ranks, batch_size=50
    )
    method = PMRMethod(inputs, PMRConfig(pmr_momentum=0.5, pmr_prototype_share=0.3))
    model = step_model("pmr").eval()
    with torch.no_grad():
        for epoch in (0, 1):
            method.begin_epoch(model, train, epoch)
    return method.state_dict()


def pmr_epoch_worker(out: str) -> None:
    """PMR's passes on this rank's share of each subset; the state they left."""
    state = pmr_prototypes(ranks=distributed.ranks())
    torch.save(state, Path(out) / f"pmr-rank{distributed.rank()}.pt")
