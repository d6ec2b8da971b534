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

from mce.config import TrainConfig
from mce.methods import METHODS, MethodSpec
from mce.records import config_differences
from mce.run import config_for, resolve_config
from mce.train import build_parser

MODULE = "user_method"
USER_MODULE = '''
"""A user's method: the task loss on the full rows, scaled by an option."""

from dataclasses import dataclass, field

from mce.methods import MethodSpec, StepResult, register_method
from mce.model import full_rows
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
        rows = list(csv.DictReader(file))
    assert rows and all(float(row["weight"]) == 2.0 for row in rows)
    done = _command("mce.train", *task, "--weight", "x", *fast, env=user_module)
    assert done.returncode == 2 and "--weight" in done.stderr


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
