"""A user's own, incomplete data end to end: absent modalities marked by NaN rows, the data
trained on as it is unless rates are stated, and tables that say on how many test samples each
combination was scored."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from mce import MultimodalData, config_for, run
from mce.data import presence_from_inputs
from mce.evaluation.combinations import Evaluator, evaluate_combinations
from mce.nn.model import combination_rows
from mce.training.config import TrainConfig
from mce.training.records import config_differences

MODULE = "user_incomplete"
USER_MODULE = '''
"""A user's data: 200 samples, three modalities, labs absent (NaN rows) in 70% of them."""

import numpy as np
from torch import nn

from mce import HyperParameters, MultimodalData, MultimodalModel, Task
from mce.nn import ConcatFusion, ReconstructionTransformer, unimodal_head

WIDTHS = {"vitals": 4, "labs": 3, "notes": 5}
rng = np.random.default_rng(0)
LABELS = rng.integers(0, 2, 200)
ARRAYS = {m: rng.normal(size=(200, w)) + LABELS[:, None] for m, w in WIDTHS.items()}
ARRAYS["labs"][rng.permutation(200)[:140]] = np.nan


def load(data_dir):
    return MultimodalData.from_arrays(ARRAYS, LABELS).random_split(0.7, 0)


def build_model(dim=8):
    fusion = ConcatFusion(3, dim)
    return MultimodalModel(
        tuple(WIDTHS),
        encoders={m: nn.Sequential(nn.Linear(w, dim), nn.ReLU()) for m, w in WIDTHS.items()},
        heads={m: unimodal_head(dim, 2) for m in WIDTHS},
        fusion=fusion,
        decoder=nn.Linear(fusion.out_dim, 2),
        reconstruction=ReconstructionTransformer(3, dim, heads=2, ff_dim=16),
        dim=dim,
    )


TASK = Task(
    name="incomplete",
    modalities=tuple(WIDTHS),
    load=load,
    build_model=build_model,
    hparams=HyperParameters(epochs=1, batch_size=64, pretrain_steps=10),
)
'''


@pytest.fixture(scope="module")
def user() -> dict:
    namespace: dict = {}
    exec(compile(textwrap.dedent(USER_MODULE), MODULE, "exec"), namespace)
    return namespace


def _results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


# --- one rule for absent modalities ---------------------------------------------------------


def test_nan_and_infinite_rows_mark_a_modality_absent():
    a = np.array([[1.0, 2.0], [np.nan, np.nan], [np.inf, -np.inf], [3.0, 4.0]])
    data = MultimodalData.from_arrays({"a": a, "b": np.ones((4, 1))}, [0, 1, 0, 1])
    assert data.present.tolist() == [3, 2, 2, 3]
    assert data.inputs["a"][1:3].abs().sum() == 0  # absent inputs are zeros
    assert bool(torch.isfinite(data.inputs["a"]).all())


def test_a_partly_nan_row_is_an_error_naming_modality_and_sample():
    a = np.array([[1.0, 2.0], [3.0, 4.0], [np.nan, 5.0]])
    partly = "modality 'a' of sample 2 holds NaN or infinite values in part of its input"
    with pytest.raises(ValueError, match=partly):
        MultimodalData.from_arrays({"a": a, "b": np.ones((3, 1))}, [0, 1, 0])
    # marked absent, the same row is ignored
    data = MultimodalData.from_arrays(
        {"a": a, "b": np.ones((3, 1))}, [0, 1, 0], presence=[[1, 1], [1, 1], [0, 1]]
    )
    assert data.present.tolist() == [3, 3, 2]


def test_a_stated_presence_wins_but_a_nan_row_marked_present_is_an_error():
    a = np.array([[1.0], [np.nan], [2.0]])
    data = MultimodalData.from_arrays(
        {"a": a, "b": np.ones((3, 1))}, [0, 1, 0], presence=[[0, 1], [0, 1], [1, 1]]
    )
    assert data.present.tolist() == [2, 2, 3]  # sample 0's finite row marked absent: absent
    marked = "modality 'a' of sample 1 is marked present but its input is entirely NaN"
    with pytest.raises(ValueError, match=marked):
        MultimodalData.from_arrays({"a": a, "b": np.ones((3, 1))}, [0, 1, 0], presence=[[1, 1]] * 3)


def test_a_sample_with_every_modality_absent_is_an_error():
    a = np.array([[1.0], [np.nan], [np.nan]])
    b = np.array([[1.0], [np.nan], [np.nan]])
    empty = r"sample 1 has no modality present.*\(2 such samples\); drop them first"
    with pytest.raises(ValueError, match=empty):
        MultimodalData.from_arrays({"a": a, "b": b}, [0, 1, 0])


def test_a_sequence_row_is_absent_when_its_whole_padded_row_is_nan():
    x = np.ones((3, 4, 2))
    x[0, 2:] = np.nan  # padding past length 2: allowed
    x[1] = np.nan  # absent: its length is ignored
    x[2, 0, 0] = np.nan  # a valid frame: an error
    flat = np.zeros((3, 1))
    ok = MultimodalData.from_arrays(
        {"seq": x[:2], "flat": flat[:2]}, [0, 1], lengths={"seq": [2, 4]}
    )
    assert ok.present.tolist() == [3, 2] and ok.lengths["seq"].tolist() == [2, 0]
    with pytest.raises(ValueError, match="modality 'seq' of sample 2 holds NaN"):
        MultimodalData.from_arrays({"seq": x, "flat": flat}, [0, 1, 0], lengths={"seq": [2, 4, 4]})


def test_a_sequence_row_is_absent_when_its_valid_frames_are_nan_whatever_its_padding():
    x = np.ones((2, 4, 2))
    x[1, :2] = np.nan  # its two valid frames: NaN; its padding zeros, as padding usually is
    x[1, 2:] = 0.0
    data = MultimodalData.from_arrays(
        {"seq": x, "flat": np.zeros((2, 1))}, [0, 1], lengths={"seq": [4, 2]}
    )
    assert data.present.tolist() == [3, 2] and data.lengths["seq"].tolist() == [4, 0]


def test_presence_from_inputs_is_the_rule_for_other_callers():
    x = torch.tensor([[1.0, 2.0], [float("nan")] * 2, [3.0, 4.0]])
    matrix = presence_from_inputs({"a": x, "b": torch.ones(3, 1)}, ("a", "b", "c"))
    assert matrix.tolist() == [[True, True, False], [False, True, False], [True, True, False]]
    stated = torch.tensor([[1, 0, 1]] * 3, dtype=torch.bool)
    not_given = "sample 0 is marked present in modality 'c', whose input is not given"
    with pytest.raises(ValueError, match=not_given):
        presence_from_inputs({"a": torch.ones(3, 2)}, ("a", "b", "c"), stated)


# --- the data as it is by default, stated rates on top --------------------------------------


def test_incomplete_data_trains_as_it_is_with_the_default_rates(user, tmp_path, caplog):
    task = user["TASK"]
    config = config_for(task, method="baseline", progress=False, out=str(tmp_path / "run"))
    assert config.missing_rates_stated is False
    with caplog.at_level("INFO", logger="mce"):
        run(config, task=task)
    rates = _results(tmp_path / "run")["missing_rates"]
    train = task.load(None)[0]
    own = 1.0 - float(((train.present >> 1) & 1).double().mean())
    assert rates["source"] == "data"
    assert rates["actual"] == pytest.approx({"vitals": 0.0, "labs": own, "notes": 0.0})
    assert rates["actual"]["labs"] > 0.6
    assert "no masks drawn" in caplog.text
    saved = torch.load(tmp_path / "run" / "masks.pt", weights_only=True)
    assert torch.equal(saved["present"], train.present)  # nothing masked


def test_stated_rates_mask_on_top_of_the_data_own_absences(user, tmp_path):
    task = user["TASK"]
    settings = {"method": "baseline", "progress": False}
    config = config_for(task, out=str(tmp_path / "run"), missing_rates=(0.3, 0.8, 0.0), **settings)
    assert config.missing_rates_stated is True
    run(config, task=task)
    rates = _results(tmp_path / "run")["missing_rates"]
    assert rates["source"] == "stated"
    assert rates["actual"] == pytest.approx({"vitals": 0.3, "labs": 0.8, "notes": 0.0}, abs=0.01)
    masks = torch.load(tmp_path / "run" / "masks.pt", weights_only=True)["present"]
    own = task.load(None)[0].present
    assert bool(((masks & ~own) == 0).all())  # masks only remove what the data has
    low = config_for(task, out=str(tmp_path / "low"), missing_rates=(0.0, 0.5, 0.0), **settings)
    with pytest.raises(ValueError, match=r"achievable missing rates for 'labs' are 0\.\d+ and"):
        run(low, task=task)


@pytest.mark.slow
def test_the_digits_default_rates_still_mask_complete_data(tmp_path):
    config = config_for("digits", method="baseline", epochs=1, progress=False, out=str(tmp_path))
    assert config.missing_rates_stated is False
    run(config)
    rates = _results(tmp_path)["missing_rates"]
    assert rates["source"] == "task"
    assert rates["stated"] == {"image": 0.5, "audio": 0.2}
    assert rates["actual"] == pytest.approx({"image": 0.5, "audio": 0.2}, abs=1e-3)


def test_stated_is_told_from_default_and_ignored_when_resuming_older_runs():
    assert TrainConfig().missing_rates_stated is False  # hparams None: the task's
    assert TrainConfig(hparams=config_for("digits").hparams).missing_rates_stated is True
    config = config_for("digits")
    saved = json.loads(json.dumps(config.to_dict()))
    saved.pop("missing_rates_stated")
    saved.pop("score_on")
    assert config_differences(saved, config) == []  # a config.json written before both


@pytest.mark.slow
def test_the_command_line_trains_a_user_task_on_its_data_as_it_is(tmp_path):
    folder = tmp_path / "user"
    folder.mkdir()
    (folder / f"{MODULE}.py").write_text(textwrap.dedent(USER_MODULE))
    path = os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "run"
    command = [sys.executable, "-m", "mce.train", "--task", f"{MODULE}:TASK"]
    command += ["--method", "baseline", "--no-progress", "--out", str(out)]
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "missing rates of the training split: the data's own, no masks drawn" in done.stdout
    assert "| combination | baseline (accuracy) | n |" in done.stdout
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["missing_rates_stated"] is False and config["score_on"] == "available"


# --- honest tables on an incomplete test split ----------------------------------------------


def test_every_combination_says_how_many_test_samples_scored_it(user, tmp_path):
    task = user["TASK"]
    test = task.load(None)[1]
    has = {m: ((test.present >> i) & 1).bool() for i, m in enumerate(task.modalities)}
    with_labs = int(has["labs"].sum())
    assert 0 < with_labs < len(test)
    available, complete = {}, {}
    for score_on, table in (("available", available), ("complete", complete)):
        out = tmp_path / score_on
        settings = {"method": "baseline", "progress": False, "score_on": score_on}
        run(config_for(task, out=str(out), **settings), task=task)
        results = _results(out)
        table.update(results["samples"]["baseline"])
        assert results["score_on"] == score_on
        assert set(table) == set(results["scores"]["baseline"]) - {"average"}
        assert "| n |" in (out / "results.md").read_text()
    assert available["labs"] == complete["labs"] == with_labs
    assert available["vitals+labs"] == len(test)  # any of its modalities
    assert available["vitals"] == complete["vitals"] == len(test)
    for combination in ("vitals+labs", "labs+notes", "vitals+labs+notes"):
        assert complete[combination] == with_labs < available[combination]


def test_combination_rows_and_evaluation_count_complete_samples(user):
    present = torch.tensor([1, 3, 2])
    rows, which = combination_rows(present, [1, 2, 3], complete=True)
    assert rows.tolist() == [[0, 1], [1, 1], [1, 2], [1, 3], [2, 2]]
    assert which.tolist() == [0, 0, 1, 2, 1]
    torch.manual_seed(0)
    task = user["TASK"]
    model, test = task.build_model(), task.load(None)[1]
    both = {
        score_on: evaluate_combinations(
            model, task.utility, test, progress=False, score_on=score_on
        ).samples
        for score_on in ("available", "complete")
    }
    assert both["available"]["notes"] == both["complete"]["notes"] == len(test)
    assert both["complete"]["labs+notes"] < both["available"]["labs+notes"] == len(test)
    with pytest.raises(ValueError, match="score_on must be one of available, complete"):
        evaluate_combinations(model, task.utility, test, progress=False, score_on="all")


def test_an_evaluator_without_score_on_refuses_complete(user, tmp_path):
    class OldEvaluator(Evaluator):
        def evaluate(self, task, model, data, device, progress):
            return super().evaluate(task, model, data, device, progress)

    task = dataclasses.replace(user["TASK"], evaluator=OldEvaluator())
    config = config_for(task, method="baseline", score_on="complete", out=str(tmp_path / "r"))
    refused = r"evaluator of task 'incomplete' \(OldEvaluator\) takes no score_on"
    with pytest.raises(ValueError, match=refused):
        run(config, task=task)
    assert not (tmp_path / "r").exists()


def test_an_experiment_on_incomplete_data_uses_it_as_it_is_and_scores_on_complete(
    tmp_path, monkeypatch
):
    from mce.experiment import ExperimentSpec, run_experiment

    (tmp_path / f"{MODULE}.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = ExperimentSpec(
        task=f"{MODULE}:TASK", variants=("baseline",), seeds=(0,), score_on="complete"
    )
    summary = run_experiment(spec, tmp_path / "exp", progress=False, figures=False)
    ((setting, info),) = summary["settings"].items()
    assert info["rates"]["labs"] > 0.6 and info["rates"]["vitals"] == 0.0  # the data's own
    cell = tmp_path / "exp" / summary["cells"][0]["path"]
    record = _results(cell)
    assert record["missing_rates"]["source"] == "data" and record["score_on"] == "complete"
