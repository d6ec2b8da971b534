"""Validation-based epoch selection, extra metrics in the run records, and folds."""

from __future__ import annotations

import dataclasses
import json
import sys
import types

import pytest
import torch
from conftest import validation_column

from mce.evaluation.combinations import evaluate_combinations
from mce.evaluation.metrics import CLASSIFICATION_METRICS
from mce.support.checkpoint import load_checkpoint
from mce.tasks import Splits, Task, get_task
from mce.train import UsageError, config_for, main, run
from mce.training.config import TrainConfig

DIGITS = get_task("digits")


def _load_with_validation(data_dir):
    train, test = DIGITS.load(data_dir)
    fit, validation = train.random_split(0.8, 1)  # validation carved from the training split
    return fit, validation, test


TASK = dataclasses.replace(
    DIGITS,
    name="digits-val",
    load=_load_with_validation,
    metrics=CLASSIFICATION_METRICS,
    selection_metric="f1",
)
# 1,005 training samples / 256: 4 steps per epoch
BASE = {"method": "baseline", "epochs": 3, "batch_size": 256, "lr": 0.01, "progress": False}


def _config(out, **settings) -> TrainConfig:
    return config_for(TASK, out=str(out), **{**BASE, **settings})


def _validation_log(path) -> list[float]:
    return validation_column(path, "validation/f1")


@pytest.mark.slow
def test_selection_tests_the_best_validation_epoch(tmp_path):
    scores = run(_config(tmp_path, select="validation"), task=TASK)
    results = json.loads((tmp_path / "results.json").read_text())
    selection = results["selection"]
    logged = _validation_log(tmp_path / "baseline" / "log.csv")
    assert len(logged) == 3  # one validation score per epoch
    best = max(range(3), key=lambda e: (logged[e], -e))
    assert selection["mode"] == "validation" and selection["metric"] == "f1"
    assert selection["best_epoch"] == {"baseline": best + 1}
    assert selection["validation_score"]["baseline"] == pytest.approx(100 * logged[best])
    # the test scores are those of the saved best state, not of the last epoch's model
    checkpoint = load_checkpoint(tmp_path / "baseline" / "checkpoint.pt")
    assert checkpoint["best"]["epoch"] == best + 1
    torch.manual_seed(0)
    model = TASK.build_model()
    model.load_state_dict(checkpoint["best"]["model"])
    splits = TASK.splits(None)
    evaluation = evaluate_combinations(
        model, TASK.utility, splits.test, progress=False, metrics=TASK.metrics
    )
    assert scores["baseline"] == pytest.approx({c: 100 * v for c, v in evaluation.scores.items()})
    f1 = {c: 100 * v for c, v in evaluation.metrics["f1"].items()}
    assert results["metrics"]["baseline"]["f1"] == pytest.approx(f1)
    again = evaluate_combinations(
        model, TASK.utility, splits.validation, progress=False, metrics=TASK.metrics
    )
    assert again.value("f1") == pytest.approx(logged[best])
    markdown = (tmp_path / "results.md").read_text()
    assert "digits-val: uar (%) on every modality combination" in markdown
    assert "digits-val: f1 (%) on every modality combination" in markdown
    assert "| combination | baseline (f1) |" in markdown
    assert f"baseline epoch {best + 1} (validation" in markdown


def test_last_epoch_selection_records_the_last_epoch(tmp_path, capsys):
    run(_config(tmp_path, epochs=1), task=TASK, verbose=True)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["selection"] == {
        "mode": "last",
        "metric": None,
        "best_epoch": {"baseline": 1},
        "validation_score": {"baseline": None},
        "early_stop": None,
        "stopped_epoch": {"baseline": None},
    }
    assert set(results["metrics"]["baseline"]) == {"uar", "f1"}
    printed = capsys.readouterr().out
    assert "digits-val: uar (%)" in printed and "digits-val: f1 (%)" in printed
    # the task's validation split is scored every epoch, but does not choose the epoch
    assert "validation/f1" in (tmp_path / "baseline" / "log.csv").read_text()


@pytest.mark.slow
def test_resume_with_selection_equals_uninterrupted(tmp_path):
    straight = _config(tmp_path / "straight", select="validation")
    resumed = _config(tmp_path / "resumed", select="validation")
    expected = run(straight, task=TASK)
    assert run(resumed, stop_at_step=6, task=TASK) == {}  # inside epoch 2, a best state saved
    partial = load_checkpoint(tmp_path / "resumed" / "baseline" / "checkpoint.pt")
    assert partial["step"] == 6 and partial["best"]["epoch"] == 1
    assert run(resumed, resume=True, task=TASK) == expected
    a, b = (
        json.loads((tmp_path / n / "results.json").read_text()) for n in ("straight", "resumed")
    )
    assert a["selection"] == b["selection"] and a["metrics"] == b["metrics"]
    final_a = load_checkpoint(tmp_path / "straight" / "baseline" / "checkpoint.pt")
    final_b = load_checkpoint(tmp_path / "resumed" / "baseline" / "checkpoint.pt")
    for key in final_a["best"]["model"]:
        assert torch.equal(final_a["best"]["model"][key], final_b["best"]["model"][key]), key
    logs = [(tmp_path / n / "baseline" / "log.csv").read_text() for n in ("straight", "resumed")]
    assert logs[0] == logs[1]


def test_select_validation_needs_a_validation_split(tmp_path, capsys):
    config = config_for(out=str(tmp_path / "run"), select="validation", **BASE)
    with pytest.raises(UsageError, match="needs a validation split"):
        run(config)
    assert not (tmp_path / "run").exists()
    with pytest.raises(SystemExit) as exit_info:
        main(["--select", "validation", "--epochs", "1", "--out", str(tmp_path / "cli")])
    assert exit_info.value.code == 2
    assert "needs a validation split" in capsys.readouterr().err
    with pytest.raises(ValueError, match="select must be one of last, validation"):
        config_for(select="best")


def _folded_task(calls: list) -> Task:
    def load(data_dir, fold):
        calls.append(fold)
        return DIGITS.load(data_dir)

    return dataclasses.replace(DIGITS, name="folded", load=load, folds=3)


@pytest.mark.slow
def test_folds_load_the_chosen_fold_and_config_records_it(tmp_path):
    calls: list = []
    task = _folded_task(calls)
    assert isinstance(task.splits(None), Splits) and calls == [1]  # fold 1 by default
    run(config_for(task, out=str(tmp_path / "a"), **{**BASE, "epochs": 1}), task=task)
    run(
        config_for(task, out=str(tmp_path / "b"), fold=3, **{**BASE, "epochs": 1}),
        task=task,
    )
    assert calls == [1, 1, 3]
    for name, fold in (("a", 1), ("b", 3)):
        assert json.loads((tmp_path / name / "config.json").read_text())["config"]["fold"] == fold
    with pytest.raises(ValueError, match=r"fold must be in 1\.\.3"):
        task.splits(None, 4)
    with pytest.raises(ValueError, match="has no folds"):
        DIGITS.splits(None, 1)


def test_fold_flag_is_checked(monkeypatch, capsys):
    module = types.ModuleType("folded_tasks")
    module.TASK = _folded_task([])
    monkeypatch.setitem(sys.modules, "folded_tasks", module)
    for argv, message in (
        (["--fold", "1"], "task 'digits' has no folds; it takes no --fold"),
        (["--task", "folded_tasks:TASK", "--fold", "4"], "--fold must be in 1..3"),
        (["--task", "folded_tasks:TASK", "--fold", "0"], "--fold must be in 1..3"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


def test_splits_normalise_what_load_returns():
    train, test = DIGITS.load(None)
    assert Splits.of((train, test)) == Splits(train, test)
    assert Splits.of((train, test, test)).validation is test
    with pytest.raises(ValueError, match="of length 1"):
        Splits.of((train,))
    with pytest.raises(ValueError, match="selection_metric 'f1' is not one of its metrics"):
        dataclasses.replace(DIGITS, selection_metric="f1")


def test_experiment_folds_make_replicates_seed_fold(tmp_path, monkeypatch):
    from mce.experiment.cli import parse_spec
    from mce.experiment.grid import ExperimentSpec, cells_of

    module = types.ModuleType("folded_tasks")
    module.TASK = _folded_task([])
    monkeypatch.setitem(sys.modules, "folded_tasks", module)
    spec = ExperimentSpec(task="folded_tasks:TASK", seeds=(0, 1), folds=(1, 2), variants=("mce",))
    cells = cells_of(spec, module.TASK)
    assert [c.replicate for c in cells] == [
        "seed0-fold1",
        "seed1-fold1",
        "seed0-fold2",
        "seed1-fold2",
    ]
    assert cells[2].folder(tmp_path).name == "seed0-fold2"
    assert cells[2].config(spec, tmp_path).fold == 2
    assert parse_spec(["--task", "folded_tasks:TASK", "--folds", "1-3"])[0].folds == (1, 2, 3)
    for argv in (["--folds", "1"], ["--task", "folded_tasks:TASK", "--folds", "2-4"]):
        with pytest.raises(SystemExit):
            parse_spec(argv)
