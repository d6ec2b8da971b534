"""Methods that act between epochs (the trainer's EpochMethod hook), and MBT-Sample on it."""

from __future__ import annotations

import json

import epoch_workers
import pytest
import torch
from data.avmnist_fixture import write_avmnist_fixture
from data.brats_fixture import write_brats_fixture
from data.iemocap_fixture import write_iemocap_fixture
from data.nuscenes_fixture import write_nuscenes_fixture
from ddp_workers import spawn
from oracles import shapley_by_permutations

from mce.data.masks import apply_missing_rates
from mce.methods import (
    METHODS,
    BaselineMethod,
    EpochPlan,
    MBTSampleConfig,
    MBTSampleMethod,
    MethodInputs,
    MethodSpec,
    get_method,
    register_method,
)
from mce.methods.mbt_sample import copies_from_values
from mce.science.lce import presence_counts
from mce.science.shapley import coalition_plan, plan_shapley
from mce.support.bits import popcount
from mce.support.checkpoint import load_checkpoint
from mce.tasks.digits import TASK as DIGITS
from mce.train import config_for, main, run

# ---------------------------------------------------------------------------------------------
# The trainer's epoch hook
# ---------------------------------------------------------------------------------------------


class _Hooked(BaselineMethod):
    """The baseline with an epoch hook: ``plans(epoch, train)`` gives each epoch's plan; every
    batch it trains on is recorded."""

    name = "hooked"
    plans = staticmethod(lambda epoch, train: None)
    fail_at: int | None = None  # raise KeyboardInterrupt once in begin_epoch of this epoch

    def __init__(self, inputs: MethodInputs) -> None:
        super().__init__(inputs)
        self.seen: list[tuple[list[int], list[int]]] = []
        self.passes = 0

    def begin_epoch(self, model, train, epoch):
        if _Hooked.fail_at == epoch:
            _Hooked.fail_at = None
            raise KeyboardInterrupt
        self.passes += 1
        return type(self).plans(epoch, train)

    def step(self, model, batch, step):
        self.seen.append((batch.index.tolist(), batch.present.tolist()))
        return super().step(model, batch, step)

    def state_dict(self):
        return {"passes": self.passes}

    def load_state_dict(self, state):
        self.passes = state["passes"]


_BUILT: list[_Hooked] = []


def _build_hooked(inputs, options):
    method = _Hooked(inputs)
    _BUILT.append(method)
    return method


@pytest.fixture
def hooked():
    if "hooked" not in METHODS:
        register_method(MethodSpec("hooked", "test", None, _build_hooked, lambda options: False))
    _BUILT.clear()
    _Hooked.plans = staticmethod(lambda epoch, train: None)
    _Hooked.fail_at = None
    yield _BUILT
    METHODS.pop("hooked", None)


def _run(tmp_path, name, method, **settings):
    base = dict(method=method, epochs=2, batch_size=256, seed=4, progress=False)
    return run(config_for(out=str(tmp_path / name), **{**base, **settings}), **{})


def test_a_hook_that_plans_nothing_changes_nothing(tmp_path, hooked, one_thread) -> None:
    expected = _run(tmp_path, "plain", "baseline")
    assert _run(tmp_path, "hooked", "hooked") == {"hooked": expected["baseline"]}
    plain = (tmp_path / "plain" / "baseline" / "log.csv").read_text()
    assert (tmp_path / "hooked" / "hooked" / "log.csv").read_text() == plain
    assert hooked[-1].passes == 2  # before epoch 0 and epoch 1


def _copies_plan(epoch, train):
    """Every sample, then a copy of each even sample with its lowest present modality only."""
    even = torch.arange(0, len(train), 2)
    lowest = train.present[even] & -train.present[even]
    index = torch.cat([torch.arange(len(train)), even])
    return EpochPlan(index, torch.cat([train.present, lowest]))


@pytest.mark.slow
def test_the_epoch_trains_the_plan_shuffled(tmp_path, hooked) -> None:
    _Hooked.plans = staticmethod(_copies_plan)
    _run(tmp_path, "run", "hooked", epochs=1)
    method = hooked[-1]
    train = apply_missing_rates(DIGITS.splits(None).train, (0.5, 0.2), seed=4).data
    expected = _copies_plan(0, train)
    entries = sorted(
        (n, p) for index, present in method.seen for n, p in zip(index, present)
    )
    assert entries == sorted(zip(expected.index.tolist(), expected.present.tolist()))
    steps = -(-len(expected) // 256)
    assert len(method.seen) == steps
    assert len((tmp_path / "run" / "hooked" / "log.csv").read_text().splitlines()) == 1 + steps


def test_a_kill_inside_the_epoch_pass_resumes_exactly(tmp_path, hooked, one_thread) -> None:
    _Hooked.plans = staticmethod(_copies_plan)
    expected = _run(tmp_path, "straight", "hooked", epochs=3)
    _Hooked.fail_at = 2
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, "resumed", "hooked", epochs=3)
    config = config_for(
        out=str(tmp_path / "resumed"),
        method="hooked",
        epochs=3,
        batch_size=256,
        seed=4,
        progress=False,
    )
    assert run(config, resume=True) == expected
    straight = load_checkpoint(tmp_path / "straight" / "hooked" / "checkpoint.pt")
    resumed = load_checkpoint(tmp_path / "resumed" / "hooked" / "checkpoint.pt")
    for key in straight["model"]:
        assert torch.equal(straight["model"][key], resumed["model"][key]), key
    assert straight["method"] == resumed["method"] == {"passes": 3}
    for key in ("index", "present"):
        assert torch.equal(straight["epoch_plan"][key], resumed["epoch_plan"][key])


@pytest.mark.parametrize(
    "plan, message",
    [
        (lambda e, t: EpochPlan(torch.tensor([0, len(t)]), torch.tensor([1, 1])), "outside"),
        (lambda e, t: EpochPlan(torch.tensor([0]), torch.tensor([0])), "keeps no modality"),
        (lambda e, t: EpochPlan(torch.tensor([0]), t.present[:1] ^ 3), "its sample lacks"),
        (lambda e, t: [0, 1], "must return an EpochPlan or None"),
    ],
)
def test_a_bad_plan_is_named(tmp_path, hooked, plan, message) -> None:
    _Hooked.plans = staticmethod(plan)
    with pytest.raises((ValueError, TypeError), match=message):
        _run(tmp_path, "bad", "hooked", epochs=1)


def test_an_epoch_plan_checks_its_tensors() -> None:
    with pytest.raises(ValueError, match="must be Tensor\\[E\\] int64"):
        EpochPlan(torch.tensor([0.0]), torch.tensor([1]))
    with pytest.raises(ValueError, match="one length"):
        EpochPlan(torch.tensor([0, 1]), torch.tensor([1]))


# ---------------------------------------------------------------------------------------------
# MBT-Sample
# ---------------------------------------------------------------------------------------------


def _setup(samples: int = 37):
    train = apply_missing_rates(DIGITS.splits(None).train, (0.4, 0.3), seed=2).data
    train = train.subset(torch.arange(samples))
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, ())))
    model = DIGITS.build_model().eval()
    inputs = MethodInputs(
        DIGITS.loss, DIGITS.utility, presence_counts(train.present, 2), len(train), 0,
        batch_size=8,
    )
    return train, model, inputs


def test_the_valuation_is_the_exact_shapley_value_of_size_weighted_accuracy() -> None:
    train, model, inputs = _setup()
    method = MBTSampleMethod(inputs, MBTSampleConfig(warmup=0))
    with torch.no_grad():
        plan = method.begin_epoch(model, train, 0)
        batch = train.batch(torch.arange(len(train)))
        h = model.encode(batch.inputs, batch.present, batch.lengths)

        def value(n: int, subset: int) -> float:  # |S| * 1[prediction from S correct]
            rows = torch.tensor([[n, subset]])
            correct = model.forward_rows(h, rows)[1].argmax(1).item() == batch.target[n].item()
            return bin(subset).count("1") * float(correct)

        expected = shapley_by_permutations(batch.present.tolist(), value, 2)
    torch.testing.assert_close(method.values, torch.tensor(expected), rtol=0, atol=1e-6)
    # the released thresholds, written out per value
    copies = []
    for n, row in enumerate(expected):
        for m, phi in enumerate(row):
            if not (batch.present[n] >> m) & 1:
                continue
            k = 1 if 0.4 < phi < 1 else 2 if -0.1 < phi < 0.4 else 3 if phi < -0.1 else 0
            copies += [(n, 1 << m)] * k
    entries = list(zip(plan.index.tolist(), plan.present.tolist()))
    assert entries[: len(train)] == list(zip(range(len(train)), batch.present.tolist()))
    assert sorted(entries[len(train) :]) == sorted(copies)
    assert method.copies == [sum(1 for _, p in copies if p == 1 << m) for m in range(2)]


def test_three_modalities_and_continuous_utilities() -> None:
    """phi sums to |A_n| * u(A_n) (efficiency) and matches the permutation oracle on a game."""
    generator = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, ())))
    present = torch.randint(1, 8, (9,), generator=generator)
    utility = torch.rand(9, 8, generator=generator)
    phi = torch.tensor(
        shapley_by_permutations(
            present.tolist(), lambda n, s: bin(s).count("1") * utility[n, s].item(), 3
        )
    )
    plan = coalition_plan(present, 3, "exact")
    v = popcount(plan.subsets).float() * utility[plan.samples, plan.subsets]
    torch.testing.assert_close(plan_shapley(plan, v), phi.float(), rtol=0, atol=1e-5)
    sizes = popcount(present).float()
    torch.testing.assert_close(phi.sum(1).float(), sizes * utility[torch.arange(9), present])


def test_copies_follow_the_released_thresholds_strictly() -> None:
    phi = torch.tensor([[1.5, 1.0], [0.7, 0.4], [0.0, -0.1], [-0.5, 0.2]])
    present = torch.tensor([3, 3, 3, 1])
    copies = copies_from_values(phi, present, (1.0, 0.4, -0.1))
    assert copies.tolist() == [[0, 0], [1, 0], [2, 0], [3, 0]]


def test_the_warm_up_trains_the_plain_epoch_and_the_loss_is_the_task_loss() -> None:
    train, model, inputs = _setup()
    method = MBTSampleMethod(inputs, MBTSampleConfig(warmup=2))
    assert method.begin_epoch(model, train, 1) is None
    assert method.copies == [0, 0]
    batch = train.batch(torch.arange(8))
    result = method.step(model, batch, 0)
    outputs = model(batch.inputs, batch.present)
    expected = sum(
        -torch.log_softmax(outputs[n], 0)[batch.target[n]] for n in range(8)
    ) / 8
    torch.testing.assert_close(result.loss, expected)
    assert result.logs["copies/image"] == 0.0


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(warmup=-1), "warmup must be an int >= 0, got -1"),
        (dict(copy_thresholds=(0.4, 1.0, -0.1)), "three finite decreasing numbers"),
        (dict(copy_thresholds=(1.0, 0.4)), "three finite decreasing numbers"),
        (dict(valuation_batch=1.5), "valuation_batch must be an int >= 0"),
    ],
)
def test_bad_options_are_named(options, message) -> None:
    with pytest.raises(ValueError, match=message):
        MBTSampleConfig(**options)


def test_a_bad_flag_value_is_one_line(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--method", "mbt-sample", "--copy-thresholds", "1,2,3", "--no-progress"])
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 2 and error[1].endswith("lists every option)")
    assert error[0].endswith("copy_thresholds must be three finite decreasing numbers, got (1.0, 2.0, 3.0)")


@pytest.mark.slow
def test_resume_equals_uninterrupted(tmp_path, one_thread) -> None:
    base = dict(method="mbt-sample", epochs=3, batch_size=256, seed=4, progress=False, warmup=1)
    expected = run(config_for(out=str(tmp_path / "straight"), **base))
    straight = load_checkpoint(tmp_path / "straight" / "mbt-sample" / "checkpoint.pt")
    assert straight["epoch_plan"] is not None and straight["prepared_epoch"] == 2
    log = (tmp_path / "straight" / "mbt-sample" / "log.csv").read_text().splitlines()[1:]
    first_of_epoch_1 = next(i for i, line in enumerate(log) if line.split(",")[1] == "1")
    resumed = config_for(out=str(tmp_path / "resumed"), **base)
    # at the first step of epoch 1 (the valuation has run), then inside epoch 1
    assert run(resumed, stop_at_step=first_of_epoch_1) == {}
    partial = load_checkpoint(tmp_path / "resumed" / "mbt-sample" / "checkpoint.pt")
    assert partial["prepared_epoch"] == 1 and partial["batch_in_epoch"] == 0
    assert run(resumed, resume=True, stop_at_step=first_of_epoch_1 + 3) == {}
    assert run(resumed, resume=True) == expected
    final = load_checkpoint(tmp_path / "resumed" / "mbt-sample" / "checkpoint.pt")
    for key in straight["model"]:
        assert torch.equal(straight["model"][key], final["model"][key]), key
    assert torch.equal(straight["method"]["values"], final["method"]["values"])
    assert (tmp_path / "resumed" / "mbt-sample" / "log.csv").read_text().splitlines()[1:] == log


@pytest.mark.slow
def test_the_valuation_under_two_ranks_equals_one_process(tmp_path) -> None:
    options = MBTSampleConfig(warmup=1)
    expected = epoch_workers.begin_epoch("mbt-sample", options)
    spawn(epoch_workers.epoch_worker, 2, str(tmp_path), "mbt-sample", options)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"epoch-rank{rank}.pt")
        torch.testing.assert_close(got["state"]["values"], expected["state"]["values"])
        assert got["state"]["copies"] == expected["state"]["copies"]
        for key in ("index", "present"):
            assert torch.equal(got["plan"][key], expected["plan"][key])


def _scores(out):
    results = json.loads((out / "results.json").read_text())
    assert all(0 <= value <= 100 for value in results["scores"]["mbt-sample"].values())
    return results["scores"]["mbt-sample"]


@pytest.mark.slow
def test_cli_trains_mbt_sample_on_the_bundled_digits(tmp_path) -> None:
    argv = ["--method", "mbt-sample", "--epochs", "2", "--warmup", "1", "--batch-size", "512"]
    assert main([*argv, "--no-progress", "--out", str(tmp_path)]) == 0
    assert set(_scores(tmp_path)) == {"image", "audio", "image+audio", "average"}
    header = (tmp_path / "mbt-sample" / "log.csv").read_text().splitlines()[0].split(",")
    assert "copies/image" in header and "copies/audio" in header
    config = json.loads((tmp_path / "config.json").read_text())["config"]
    assert config["method_options"]["mbt-sample"]["warmup"] == 1
    checkpoint = load_checkpoint(tmp_path / "mbt-sample" / "checkpoint.pt")
    assert len(checkpoint["epoch_plan"]["index"]) > checkpoint["method"]["values"].shape[0]


@pytest.mark.slow
def test_cli_trains_mbt_sample_on_avmnist(tmp_path) -> None:
    write_avmnist_fixture(tmp_path / "data")
    argv = ["--task", "avmnist", "--data-dir", str(tmp_path / "data"), "--method", "mbt-sample"]
    argv += ["--epochs", "2", "--warmup", "1", "--batch-size", "8", "--missing-rates", "0.2,0.5"]
    assert main([*argv, "--no-progress", "--out", str(tmp_path / "run")]) == 0
    assert set(_scores(tmp_path / "run")) == {"image", "audio", "image+audio", "average"}


@pytest.mark.slow
def test_cli_trains_mbt_sample_on_iemocap(tmp_path) -> None:
    data = write_iemocap_fixture(tmp_path / "data")
    argv = ["--task", "iemocap", "--data-dir", str(data), "--method", "mbt-sample"]
    argv += ["--missing-rates", "a", "--epochs", "2", "--warmup", "1", "--batch-size", "16"]
    assert main([*argv, "--no-progress", "--out", str(tmp_path / "run")]) == 0
    assert len(_scores(tmp_path / "run")) == 8


@pytest.mark.slow
def test_cli_trains_mbt_sample_on_brats(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    data = write_brats_fixture(tmp_path / "data", cases=6)
    argv = ["--task", "brats", "--data-dir", str(data), "--method", "mbt-sample"]
    argv += ["--task-option", "crop=16", "--task-option", "base=4", "--task-option", "levels=3"]
    argv += ["--epochs", "2", "--warmup", "1", "--missing-rates", "0.3,0.3,0.2,0"]
    assert main([*argv, "--no-progress", "--out", str(tmp_path / "run")]) == 0
    assert len(_scores(tmp_path / "run")) == 16
    checkpoint = load_checkpoint(tmp_path / "run" / "mbt-sample" / "checkpoint.pt")
    assert checkpoint["method"]["values"].shape[1] == 4


def test_cli_trains_mbt_sample_on_nuscenes(tmp_path) -> None:
    pytest.importorskip(
        "nuscenes", reason="the nuScenes task needs nuscenes-devkit (pip install '.[nuscenes]')"
    )
    data = write_nuscenes_fixture(tmp_path / "data", samples_per_scene=3, sweeps=1)
    options = {"image_height": 36, "image_width": 64, "cells": 16, "dim": 8, "radar_sweeps": 1}
    argv = ["--task", "nuscenes", "--data-dir", str(data), "--method", "mbt-sample"]
    for name, value in options.items():
        argv += ["--task-option", f"{name}={value}"]
    argv += ["--epochs", "2", "--warmup", "1", "--missing-rates", "0.2,0.3,0.4"]
    assert main([*argv, "--no-progress", "--out", str(tmp_path / "run")]) == 0
    assert len(_scores(tmp_path / "run")) == 8


def test_mbt_sample_is_registered_with_its_options() -> None:
    spec = get_method("mbt-sample")
    assert spec.options is MBTSampleConfig and not spec.needs_upper_bounds(None)


@pytest.mark.slow
def test_values_recorded_by_the_steps_equal_the_pass_with_the_same_weights(tmp_path) -> None:
    """With a dropout-free model and lr 1e-30 the weights do not move: the values the steps record
    over epoch 0 are those the pass computes before epoch 1."""
    import ddp_workers

    config = config_for(
        ddp_workers.TASK,
        method="mbt-sample",
        out=str(tmp_path / "steps"),
        epochs=2,
        warmup=1,
        valuation="steps",
        lr=1e-30,
        batch_size=256,
        progress=False,
    )
    run(config, task=ddp_workers.TASK)
    recorded = load_checkpoint(tmp_path / "steps" / "mbt-sample" / "checkpoint.pt")
    passed = config_for(
        ddp_workers.TASK,
        method="mbt-sample",
        out=str(tmp_path / "pass"),
        epochs=2,
        warmup=1,
        lr=1e-30,
        batch_size=256,
        progress=False,
    )
    run(passed, task=ddp_workers.TASK)
    valued = load_checkpoint(tmp_path / "pass" / "mbt-sample" / "checkpoint.pt")
    torch.testing.assert_close(recorded["method"]["values"], valued["method"]["values"])
    assert bool(valued["method"]["values"].abs().sum() > 0)
    for key in ("index", "present"):
        assert torch.equal(recorded["epoch_plan"][key], valued["epoch_plan"][key])


@pytest.mark.slow
def test_resume_with_values_from_the_steps_equals_uninterrupted(tmp_path, one_thread) -> None:
    base = dict(method="mbt-sample", epochs=3, batch_size=256, seed=2, progress=False)
    base.update(warmup=1, valuation="steps")
    expected = run(config_for(out=str(tmp_path / "straight"), **base))
    resumed = config_for(out=str(tmp_path / "resumed"), **base)
    assert run(resumed, stop_at_step=2) == {}  # inside epoch 0, recording
    assert run(resumed, resume=True, stop_at_step=9) == {}  # inside the resampled epoch 1
    assert run(resumed, resume=True) == expected
    a = load_checkpoint(tmp_path / "straight" / "mbt-sample" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "resumed" / "mbt-sample" / "checkpoint.pt")
    for key in ("values", "recorded", "seen"):
        assert torch.equal(a["method"][key], b["method"][key]), key
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


@pytest.mark.slow
def test_a_per_step_schedule_spreads_over_a_longer_epoch(tmp_path, hooked) -> None:
    """OneCycle is planned for the split's steps; a plan 1.5x as long moves it by the share of
    training done, so it ends at its end and never idles at its final rate before."""
    import csv

    _Hooked.plans = staticmethod(_copies_plan)
    _run(tmp_path, "onecycle", "hooked", epochs=2, lr_schedule="onecycle", batch_size=128)
    with (tmp_path / "onecycle" / "hooked" / "log.csv").open() as log:
        rates = [float(row["lr"]) for row in csv.DictReader(log)]
    assert len(rates) == 2 * 15  # 1,257 x 1.5 entries in batches of 128, per epoch
    assert len(set(rates)) == 20  # the rates of the 20 planned steps, each used once or twice
    annealed = rates[1:]  # after the first step's warm-up rate
    assert annealed.index(min(annealed)) >= len(annealed) - 2  # the lowest only at the end
    checkpoint = load_checkpoint(tmp_path / "onecycle" / "hooked" / "checkpoint.pt")
    assert checkpoint["scheduler"]["last_epoch"] == 2 * 10  # planned: 10 steps an epoch
