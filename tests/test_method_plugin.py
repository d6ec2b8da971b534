"""A method registered from a user's module, with its own options dataclass: its flags on the
command line, its options in ``config.json`` and in the experiment runner's ``--set``, with no
change to the package."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mce.methods import METHODS, MethodSpec
from mce.train import build_parser
from mce.training.config import TrainConfig
from mce.training.records import config_differences
from mce.training.run import config_for, resolve_config

MODULE = "user_method"
USER_MODULE = '''
"""A user's method: the task loss on the full rows, scaled by an option."""

from dataclasses import dataclass, field

from mce.methods import MethodSpec, StepResult, register_method
from mce.nn.model import full_rows
from mce.tasks import get_task


@dataclass(frozen=True)
class ScaledOptions:
    weight: float = field(default=1.0, metadata={"help": "factor of the task loss"})


class ScaledLoss:
    name = "scaled"

    def __init__(self, inputs, options):
        self.inputs, self.options = inputs, options

    def step(self, model, batch, step):
        h = model.encode(batch.inputs, batch.present, batch.lengths, batch.context)
        _, outputs = model.forward_rows(h, full_rows(batch.present))
        loss = self.options.weight * self.inputs.loss(outputs, batch.target).mean()
        return StepResult(loss, {"loss": loss.item(), "weight": self.options.weight})


register_method(
    MethodSpec(
        name="scaled",
        summary="the task loss times --weight",
        options=ScaledOptions,
        build=ScaledLoss,
        needs_upper_bounds=lambda options: False,
    )
)

TASK = get_task("digits")


# A sixth task: its own data (three feature groups of a seeded random problem), model and option.
import numpy as np
from torch import nn

from mce import HyperParameters, MultimodalData, MultimodalModel, Task
from mce.nn import ConcatFusion, ReconstructionTransformer
from mce.nn.classifiers import unimodal_head

WIDTHS = {"a": 4, "b": 3, "c": 5}


def load_toy(data_dir):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 240)
    arrays = {m: rng.normal(size=(240, w)) + labels[:, None] for m, w in WIDTHS.items()}
    return MultimodalData.from_arrays(arrays, labels).random_split(0.7, 0)


def toy_task(hidden: int = 8) -> Task:
    def build_model() -> MultimodalModel:
        fusion = ConcatFusion(len(WIDTHS), hidden)
        return MultimodalModel(
            tuple(WIDTHS),
            encoders={m: nn.Sequential(nn.Linear(w, hidden), nn.ReLU()) for m, w in WIDTHS.items()},
            heads={m: unimodal_head(hidden, 3) for m in WIDTHS},
            fusion=fusion,
            decoder=nn.Linear(fusion.out_dim, 3),
            reconstruction=ReconstructionTransformer(len(WIDTHS), hidden, heads=2, ff_dim=16),
            dim=hidden,
        )

    return Task(
        name="toy",
        modalities=tuple(WIDTHS),
        load=load_toy,
        build_model=build_model,
        hparams=HyperParameters(epochs=2, batch_size=64, pretrain_steps=20, missing_rates="a"),
        options={"hidden": hidden},
        configure=toy_task,
    )


TOY = toy_task()
'''


@dataclasses.dataclass(frozen=True)
class _Options:
    weight: float = dataclasses.field(default=1.0, metadata={"help": "factor of the task loss"})


def _spec() -> MethodSpec:
    return MethodSpec(
        name="scaled",
        summary="the task loss times --weight",
        options=_Options,
        build=lambda inputs, options: None,
        needs_upper_bounds=lambda options: False,
    )


@pytest.fixture
def user_module(tmp_path: Path) -> dict[str, str]:
    """The user's module in its own folder; the environment of a command that imports it."""
    folder = tmp_path / "user"
    folder.mkdir()
    (folder / f"{MODULE}.py").write_text(textwrap.dedent(USER_MODULE))
    path = os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def _command(module: str, *argv: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", module, *argv]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_a_user_method_gets_flags_and_config_json_records_its_options(tmp_path, user_module):
    task = ["--task", f"{MODULE}:TASK", "--method", "scaled"]
    done = _command("mce.train", *task, "--help", env=user_module)
    assert done.returncode == 0, done.stderr[-3000:]
    text = " ".join(done.stdout.split())
    assert "--weight WEIGHT factor of the task loss (default: 1)" in text
    assert "scaled: the task loss times --weight" in text
    out = tmp_path / "run"
    fast = ["--epochs", "1", "--batch-size", "512", "--no-progress", "--out", str(out)]
    done = _command("mce.train", *task, "--weight", "2", *fast, env=user_module)
    assert done.returncode == 0, done.stderr[-3000:]
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["method"] == "scaled"
    assert config["method_options"]["scaled"] == {"weight": 2.0}
    with (out / "scaled" / "log.csv").open() as file:
        rows = [row for row in csv.DictReader(file) if row["loss"]]  # not validation rows
    assert rows and all(float(row["weight"]) == 2.0 for row in rows)
    done = _command("mce.train", *task, "--weight", "x", *fast, env=user_module)
    assert done.returncode == 2 and "--weight" in done.stderr


@pytest.mark.slow
def test_the_experiment_runner_sets_a_user_methods_options(tmp_path, user_module):
    out = tmp_path / "experiment"
    argv = ["--task", f"{MODULE}:TASK", "--variants", "scaled,baseline", "--seeds", "0"]
    argv += ["--settings", "0.5,0.2", "--epochs", "1", "--batch-size", "2048", "--set", "weight=2"]
    done = _command(
        "mce.experiment", *argv, "--out", str(out), "--no-progress", "--no-figures", env=user_module
    )
    assert done.returncode == 0, done.stderr[-3000:]
    cell = out / "cells" / "scaled" / "rates0.5-0.2" / "seed0"
    config = json.loads((cell / "config.json").read_text())["config"]
    assert config["method"] == "scaled" and config["method_options"]["scaled"] == {"weight": 2.0}
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["scores"]["rates0.5-0.2"]) == {"scaled", "baseline"}
    bad = _command("mce.experiment", *argv[:-1], "weigth=2", env=user_module)
    assert bad.returncode == 2 and "weight" in bad.stderr


def test_settings_and_flags_reach_a_registered_methods_options(monkeypatch):
    monkeypatch.setitem(METHODS, "scaled", _spec())
    config = config_for(weight=2.0, epochs=1)
    assert config.options_for("scaled") == _Options(weight=2.0)
    assert resolve_config(TrainConfig()).options_for("scaled") == _Options()
    assert "--weight" in build_parser(task_values=False).format_help()
    with pytest.raises(ValueError, match="unknown setting.*wieght.*valid: .*weight"):
        config_for(wieght=2.0)


def test_a_config_json_with_each_methods_options_at_the_top_still_resumes():
    config = config_for(epochs=2, mc_k=7)
    saved = json.loads(json.dumps(config.to_dict()))
    saved.update(saved.pop("method_options"))  # the layout before method_options
    assert config_differences(saved, config) == []
    saved["mce"]["mc_k"] = 8
    assert config_differences(saved, config) == ["mce"]


@pytest.mark.slow
def test_a_sixth_task_and_a_method_from_a_users_module(tmp_path, user_module):
    """A task of the user's (data, model, an option, presets a-f over its three modalities)
    trained by every built-in method and by the user's method, from the command line and the
    experiment runner, with no package file touched."""
    task = ["--task", f"{MODULE}:TOY", "--task-option", "hidden=6", "--no-progress"]
    for method in ("compare", "scaled", "redcore"):
        out = tmp_path / method
        done = _command("mce.train", *task, "--method", method, "--out", str(out), env=user_module)
        assert done.returncode == 0, done.stderr[-3000:]
        results = json.loads((out / "results.json").read_text())
        assert results["task"] == "toy" and results["config"]["task_options"] == {"hidden": 6}
        assert set(results["missing_rates"]["stated"]) == {"a", "b", "c"}
        assert len(next(iter(results["scores"].values()))) == 8  # 7 combinations + average
    out = tmp_path / "experiment"
    argv = ["--task", f"{MODULE}:TOY", "--variants", "scaled,mce", "--settings", "a", "b"]
    argv += ["--seeds", "0", "--set", "weight=3", "--out", str(out), "--no-figures"]
    done = _command("mce.experiment", *argv, "--no-progress", env=user_module)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["scores"]) == 2
    for table in summary["scores"].values():
        assert set(table) == {"scaled", "mce"} and len(table["mce"]) == 8
    cells = sorted(p.parent.name for p in out.glob("cells/scaled/*/seed0/config.json"))
    assert len(cells) == 2
    for path in out.glob("cells/scaled/*/seed0/config.json"):
        config = json.loads(path.read_text())["config"]
        assert config["method_options"]["scaled"] == {"weight": 3.0}
