"""Data-parallel training: two ranks against one process on the same global batch.

The two-rank checks run in processes spawned here (gloo on the CPU, the variables torchrun
sets) or under torchrun itself; the single-process references run in the test process. What
is exact and what is only close:

- factor B, phi, U and the counts behind them are sums of float64 values that are exact here
  (0/1 utilities; Shapley values of 0/1 utilities over two modalities are multiples of 1/2),
  so they equal one process's bit for bit; with continuous U the single process's float32
  sum rounds where the ranks' float64 sums do not (a relative 1e-6 at most).
- the losses and gradients are sums of float32 products taken in another order (each rank's
  slice, then the all-reduce), so they agree to float32 rounding (relative 1e-5).
- the evaluations sum per-sample scores in float64 (exact for accuracy) and gather the kept
  outputs in the split's order: equal.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import ddp_workers
import pytest
import torch

from mce.data.dataset import MultimodalData
from mce.methods import MCEConfig, MCEMethod, MethodInputs
from mce.methods.official import official_average_rows, official_row_weights
from mce.science.lce import batch_factor, lce_factors
from mce.science.rce import RowTotals, average_rows, single_loss, subset_row_weights
from mce.science.shapley import coalition_plan
from mce.support import distributed
from mce.support.checkpoint import load_checkpoint
from mce.tasks.digits import TASK as DIGITS
from mce.train import config_for, run

TESTS = Path(__file__).resolve().parent
LOSS_TERMS = ("loss", "l_task", "l_single", "l_sub", "l_aux")


# ---------------------------------------------------------------------------------------------
# Pieces that need no second process
# ---------------------------------------------------------------------------------------------


def test_batch_parts_are_disjoint_and_make_the_batch():
    data = MultimodalData.from_arrays({"x": torch.arange(23.0)[:, None]}, torch.arange(23))
    order = torch.randperm(23, generator=torch.Generator().manual_seed(0))
    whole = [batch.index for batch in data.batches(10, order, start=1)]
    parts = [[b.index for b in data.batches(10, order, start=1, part=(r, 3))] for r in range(3)]
    for i, batch in enumerate(whole):  # batches of 10 and 3: slices 4/3/3 and 1/1/1
        assert torch.equal(torch.cat([parts[r][i] for r in range(3)]), batch)
    assert [len(parts[r][0]) for r in range(3)] == [4, 3, 3]


def test_helpers_are_the_identity_in_one_process():
    assert not distributed.is_active() and distributed.ranks() is None
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    tensor = torch.arange(3.0)
    assert distributed.sum_across_ranks(tensor) is tensor
    data = MultimodalData.from_arrays({"x": torch.zeros(3, 1)}, torch.zeros(3))
    assert distributed.shard(data) is data
    assert distributed.on_main(lambda: 5) == 5
    assert distributed.gather_objects("a") == ["a"]


def test_init_outside_torchrun_starts_nothing(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    assert distributed.init("cpu") == torch.device("cpu")
    assert not torch.distributed.is_initialized()


def test_init_under_torchrun_refuses_a_numbered_gpu(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="under torchrun every rank uses cuda:LOCAL_RANK"):
        distributed.init("cuda:1")


def test_batches_that_leave_a_rank_empty_are_refused():
    distributed.check_batches(1257, 400, 2)  # last batch 57: fine
    with pytest.raises(ValueError, match="--batch-size 1 is smaller than the 2 ranks"):
        distributed.check_batches(100, 1, 2)
    # 1,257 = 2 x 628 + 1: a last batch of one sample; 627 leaves 3, the nearest that works
    with pytest.raises(ValueError, match="last batch of 1 sample.*e.g. 627"):
        distributed.check_batches(1257, 628, 2)


def test_factor_b_from_totals_equals_the_kernel_on_the_batch(seed):
    generator = torch.Generator().manual_seed(seed)
    present = torch.randint(1, 8, (37,), generator=generator)
    presence = torch.stack([(present >> m) & 1 for m in range(3)], 1).float()
    phi = torch.randn(37, 3, generator=generator) * presence
    upper = (torch.rand(37, 3, generator=generator) * presence).sum(0)
    expected = lce_factors(torch.tensor([30, 20, 10]), 50, present, upper, phi).b
    assert torch.equal(batch_factor(upper, phi.double().sum(0), presence.sum(0)), expected)
    # a modality absent from the batch gets 0
    none = batch_factor(torch.zeros(2), torch.zeros(2), torch.tensor([0.0, 3.0]))
    assert none[0] == 0


@pytest.mark.parametrize(
    ("average", "weights"),
    [(average_rows, subset_row_weights), (official_average_rows, official_row_weights)],
)
def test_row_weights_of_one_batch_give_its_average(average, weights, seed):
    generator = torch.Generator().manual_seed(seed)
    present = torch.randint(1, 8, (19,), generator=generator)
    rows = coalition_plan(present, 3).rows
    values = torch.rand(rows.shape[0], generator=generator)
    totals = RowTotals(
        torch.tensor(19.0, dtype=torch.float64),
        torch.bincount(rows[:, 1], minlength=8).double(),
    )
    weighted = (values * weights(rows, present, totals).float()).sum()
    torch.testing.assert_close(weighted, average(values, rows, present))


def test_single_loss_with_the_batch_counts_is_the_mean():
    generator = torch.Generator().manual_seed(0)
    outputs = {0: (torch.tensor([0, 2]), torch.randn(2, 4, generator=generator)),
               1: (torch.tensor([1]), torch.randn(1, 4, generator=generator))}  # fmt: skip
    target = torch.tensor([1, 3, 0])
    weights = torch.tensor([0.5, 2.0])
    mean = single_loss(outputs, target, DIGITS.loss, weights)
    summed = single_loss(outputs, target, DIGITS.loss, weights, torch.tensor([2.0, 1.0]))
    torch.testing.assert_close(summed, mean)


def test_the_authors_batch_formula_is_refused_across_ranks():
    inputs = MethodInputs(
        DIGITS.loss, DIGITS.utility, torch.tensor([3, 4]), 5, 0, torch.zeros(5, 2),
        ranks=distributed.Ranks(0, 2),
    )  # fmt: skip
    with pytest.raises(ValueError, match="cannot be summed over ranks"):
        MCEMethod(inputs, MCEConfig(shapley="official"))


# ---------------------------------------------------------------------------------------------
# One step and an evaluation under two ranks (one pair of spawned processes)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("step")
    ddp_workers.spawn(ddp_workers.step_and_evaluation_worker, 2, str(out))
    return [torch.load(out / f"step-rank{rank}.pt", weights_only=False) for rank in (0, 1)]


def _one_process(case: str):
    """The same step as the workers' on the whole global batch, in this process."""
    _, continuous = ddp_workers.STEP_CASES[case]
    train, batch, upper, counts = ddp_workers.step_setup(continuous)
    model = ddp_workers.step_model(case)
    result = ddp_workers.build_method(case, train, upper, counts).step(model, batch, 0)
    result.loss.backward()
    return result.logs, dict(model.named_parameters())


@pytest.mark.slow
@pytest.mark.parametrize("case", list(ddp_workers.STEP_CASES))
def test_one_step_under_two_ranks_equals_one_process_on_the_batch(two_ranks, case):
    logs, parameters = _one_process(case)
    ranks = [result[case] for result in two_ranks]
    assert [rank["samples"] for rank in ranks] == [32, 31]  # an uneven split
    logged = ranks[0]["logs"]
    assert list(logged) == list(logs)  # the same log columns, in the same order
    statistics = [key for key in logs if key.split("/")[0] in ("phi", "U", "B", "A", "count")]
    assert (case in ("baseline", "redcore", "pmr", "passion", "shaspec")) == (not statistics)
    for key in [*statistics, "rows"] if statistics else []:
        if case == "mce-continuous-upper" and key.split("/")[0] in ("U", "B"):
            assert logged[key] == pytest.approx(logs[key], rel=1e-6, abs=1e-7), key
        else:
            assert logged[key] == logs[key], key
    for key in LOSS_TERMS:
        if key in logs:
            assert logged[key] == pytest.approx(logs[key], rel=1e-5), key
    # RedCore: supervision weights from the global batch's imagination losses
    redcore = [key for key in logs if key.split("/")[0] in ("beta", "L_imagine", "kl", "eta")]
    assert (case in ("redcore", "passion")) == bool(redcore)  # PASSION logs beta too
    for key in redcore:
        assert logged[key] == pytest.approx(logs[key], rel=1e-5), key
    # PMR: scores and the hard switch from the global batch's sums
    pmr = [key for key in logs if key.split("/")[0] in ("score", "coef", "l_proto")]
    assert (case == "pmr") == bool(pmr)
    for key in pmr:
        assert logged[key] == pytest.approx(logs[key], rel=1e-5), key
    # PASSION: the gate, the distances and the distillation terms from the global batch
    terms = ("gate", "dist", "l_sep", "l_kl", "l_prototype")
    passion = [key for key in logs if key.split("/")[0] in terms]
    assert (case == "passion") == bool(passion)
    for key in passion:
        assert logged[key] == pytest.approx(logs[key], rel=1e-5, abs=1e-7), key
    # ShaSpec: alignment and domain terms over the global batch's pairs and modalities
    shaspec = [key for key in logs if key in ("l_shared", "l_domain", "domain_acc")]
    assert (case == "shaspec") == bool(shaspec)
    for key in shaspec:
        assert logged[key] == pytest.approx(logs[key], rel=1e-5), key
    scale = max(float(p.grad.abs().max()) for p in parameters.values() if p.grad is not None)
    for name, parameter in parameters.items():
        averaged = ranks[0]["grads"][name]
        if parameter.grad is None:  # e.g. the baseline's unimodal heads: used by no rank
            assert averaged is None, name
            continue
        torch.testing.assert_close(averaged, parameter.grad, rtol=1e-5, atol=1e-6 * scale)


@pytest.mark.slow
@pytest.mark.parametrize("case", list(ddp_workers.STEP_CASES))
def test_parameters_stay_identical_across_ranks(two_ranks, case):
    first, second = (result[case] for result in two_ranks)
    for name in first["params"]:
        assert torch.equal(first["params"][name], second["params"][name]), name
    for name, grad in first["grads"].items():
        assert (grad is None) == (second["grads"][name] is None), name
        if grad is not None:
            assert torch.equal(grad, second["grads"][name]), name


@pytest.mark.slow
def test_sharded_evaluation_equals_one_process(two_ranks):
    model, test = ddp_workers.evaluation_setup()
    expected = ddp_workers.evaluate(model, test)
    assert [result["evaluation"]["shard"] for result in two_ranks] == [270, 269]
    for result in two_ranks:
        got = result["evaluation"]
        assert got["scores"] == expected["scores"]
        assert got["metrics"] == expected["metrics"]  # uar, f1 over the gathered outputs
        assert got["heads"] == expected["heads"]


# ---------------------------------------------------------------------------------------------
# Whole runs
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resumed_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("resume")
    ddp_workers.spawn(ddp_workers.resume_worker, 2, str(out))
    returned = [torch.load(out / f"returned-rank{rank}.pt") for rank in (0, 1)]
    return out, returned


@pytest.mark.slow
def test_resume_under_two_ranks_equals_uninterrupted(resumed_runs):
    out, returned = resumed_runs
    assert returned[0] == returned[1]  # every rank returns the scores
    assert returned[0]["stopped"] == {} and returned[0]["stopped-again"] == {}
    assert returned[0]["resumed"] == returned[0]["straight"] != {}
    straight = load_checkpoint(out / "straight" / "mce" / "checkpoint.pt")
    resumed = load_checkpoint(out / "resumed" / "mce" / "checkpoint.pt")
    assert straight["world_size"] == 2 and len(straight["rank_rng"]) == 2
    for key in straight["model"]:
        assert torch.equal(straight["model"][key], resumed["model"][key]), key
    for rank in range(2):  # each rank's dropout stream continued where it stopped
        assert torch.equal(straight["rank_rng"][rank][0], resumed["rank_rng"][rank][0])
    assert not torch.equal(straight["rank_rng"][0][0], straight["rank_rng"][1][0])
    log = (out / "straight" / "mce" / "log.csv").read_text()
    assert (out / "resumed" / "mce" / "log.csv").read_text() == log
    assert len(log.splitlines()) == 1 + 8  # header and 2 x 4 steps, written once (rank 0)


@pytest.mark.slow
def test_a_checkpoint_of_two_ranks_is_not_resumed_by_one_process(resumed_runs):
    out, _ = resumed_runs
    stopped = out / "stopped"
    config = config_for(
        out=str(stopped), cache_dir=str(out / "cache"), **ddp_workers.RUN_SETTINGS
    )
    before = (stopped / "mce" / "checkpoint.pt").read_bytes()
    with pytest.raises(ValueError, match="written by a run of 2 processes and this run has 1"):
        run(config, resume=True)
    assert (stopped / "mce" / "checkpoint.pt").read_bytes() == before


@pytest.mark.slow
def test_torchrun_trains_and_ends_as_one_process(tmp_path):
    """``torchrun --nproc-per-node 2 -m mce.train`` on the bundled digits (the dropout-free
    model, so that the two runs differ by float32 rounding only) ends with the table one
    process gives; only rank 0 writes."""
    flags = ["--epochs", "2", "--batch-size", "400", "--pretrain-steps", "2", "--no-progress"]
    # every training sample trained on: 1,257 in batches of 400, as the steps below count
    flags += ["--task", "ddp_workers:TASK", "--validation-share", "0"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), *sys.path]))
    env["OMP_NUM_THREADS"] = "1"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", "2", "-m", "mce.train", *flags, "--out", str(tmp_path / "a")]
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("| combination | mce (accuracy) | baseline (accuracy) |") == 1
    assert "data parallel over 2 ranks (gloo)" in done.stdout
    two = json.loads((tmp_path / "a" / "results.json").read_text())
    assert two["distributed"] == {"world_size": 2, "backend": "gloo", "batch_statistics": "global"}
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == [
        ".lock",  # rank 0 held the folder's lock
        "baseline",
        "config.json",
        "masks.pt",
        "mce",
        "results.json",
        "results.md",
        "run.log",  # rank 0's
    ]

    config = config_for(
        ddp_workers.TASK,
        epochs=2,
        batch_size=400,
        pretrain_steps=2,
        progress=False,
        validation_share=0.0,
        out=str(tmp_path / "b"),
    )
    one = run(config, task=ddp_workers.TASK)
    # The weights differ by float32 rounding (relative 1e-7 after 8 steps): a test prediction
    # that close to a tie could flip, so each score may differ by one of the 540 samples.
    for method, scores in one.items():
        for combination, score in scores.items():
            assert two["scores"][method][combination] == pytest.approx(score, abs=100 / 540)
    for method in ("mce", "baseline"):  # the same steps, logged once, with the same values
        logs = [
            list(csv.DictReader((tmp_path / run_dir / method / "log.csv").read_text().splitlines()))
            for run_dir in ("a", "b")
        ]
        assert len(logs[0]) == len(logs[1]) == 2 * 4 and list(logs[0][0]) == list(logs[1][0])
        for got, expected in zip(*logs):
            for key, value in expected.items():
                if key.split("/")[0] in ("step", "epoch", "count", "rows", "A", "lr"):
                    assert got[key] == value, key  # the data and the schedule alone
                else:
                    assert float(got[key]) == pytest.approx(float(value), rel=1e-4), key


@pytest.mark.skipif(
    torch.cuda.device_count() < 2,
    reason="NCCL data parallelism needs two GPUs (one rank each); fewer present: not run",
)
def test_torchrun_on_two_gpus_with_nccl(tmp_path):
    flags = ["--epochs", "1", "--batch-size", "400", "--pretrain-steps", "2", "--no-progress"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), *sys.path]))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", "2", "-m", "mce.train", "--device", "cuda", *flags]
    command += ["--method", "mce", "--out", str(tmp_path / "a")]
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "data parallel over 2 ranks (nccl)" in done.stdout
