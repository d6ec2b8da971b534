"""Task options that change how the data is read, not what a run computes
(``Task.runtime_options``): a run resumes, an experiment reuses its cells and the upper-bound
cache is hit with other values of them; any other option still counts."""

from __future__ import annotations

import dataclasses
import json

import pytest
from torch import nn

from mce.experiment import ExperimentSpec, run_experiment
from mce.tasks import Task, get_task
from mce.train import config_for, run
from mce.training.config import HyperParameters
from mce.training.pretrain import cache_key
from mce.training.records import config_differences

DIGITS = get_task("digits")
ONE_STEP = {"epochs": 1, "batch_size": 2048}  # the ~1,000 training samples in one batch


def reading_task(readers: int = 1, width: int = 0) -> Task:
    """The digits with a runtime option (``readers``) and one that would change the model."""
    return dataclasses.replace(
        DIGITS,
        options={"readers": readers, "width": width},
        configure=reading_task,
        runtime_options=frozenset({"readers"}),
        name="reading",
    )


def _config(out, task: Task):
    return config_for(
        task,
        method="baseline",
        out=str(out),
        progress=False,
        task_options=dict(task.options),
        **ONE_STEP,
    )


def test_the_settings_differ_only_in_options_that_count():
    saved = json.loads(json.dumps(_config("a", reading_task()).to_dict()))  # as config.json
    other_readers = _config("a", reading_task(readers=4))
    assert config_differences(saved, other_readers, {"readers"}) == []
    assert config_differences(saved, other_readers) == ["task_options"]  # not declared: counts
    other_width = _config("a", reading_task(width=3))
    assert config_differences(saved, other_width, {"readers"}) == ["task_options"]


def test_a_run_resumes_with_other_runtime_options_only(tmp_path):
    first = run(_config(tmp_path, reading_task()), task=reading_task())
    again = run(_config(tmp_path, reading_task(readers=4)), resume=True, task=reading_task(4))
    assert again == first  # the finished run is accepted as it is
    with pytest.raises(ValueError, match=r"--resume with settings that differ .*task_options"):
        run(_config(tmp_path, reading_task(width=3)), resume=True, task=reading_task(width=3))


def test_an_experiment_reuses_its_cells_with_other_runtime_options(tmp_path):
    def spec(task: Task) -> ExperimentSpec:
        return ExperimentSpec(
            task=f"{__name__}:reading_task",  # as --task names a user's task
            variants=("baseline",),
            settings=((0.8, 0.2),),
            seeds=(0,),
            overrides=ONE_STEP,
            task_options=dict(task.options),
        )

    def run_with(task: Task) -> dict:
        return run_experiment(spec(task), tmp_path, progress=False, figures=False, task=task)

    run_with(reading_task())
    summary = run_with(reading_task(readers=4))
    assert (summary["cells_computed"], summary["cells_reused"]) == (0, 1)
    with pytest.raises(ValueError, match="holds an experiment with other task_options"):
        run_with(reading_task(width=3))


def test_the_upper_bound_cache_key_leaves_runtime_options_out():
    def key(task: Task) -> str:
        return cache_key(
            task, "image", nn.Linear(2, 2), HyperParameters(), seed=0, setting="s",
            fingerprint="f",
        )  # fmt: skip

    assert key(reading_task()) == key(reading_task(readers=4))
    assert key(reading_task()) != key(reading_task(width=3))
    nuscenes = get_task("nuscenes")
    assert nuscenes.runtime_options == {"workers", "storage", "check_files"}
    read_differently = nuscenes.with_options({"workers": 1, "storage": "memory"})
    assert key(nuscenes) == key(read_differently)
    assert key(nuscenes) != key(nuscenes.with_options({"dim": 64}))


def test_runtime_options_must_be_options():
    with pytest.raises(ValueError, match=r"runtime_options names threads, not among its options"):
        dataclasses.replace(reading_task(), runtime_options=frozenset({"threads"}))
