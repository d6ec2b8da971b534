"""The examples run as documented."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mce import MultimodalData
from mce.train import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.slow
def test_own_data_example_runs_as_a_script(tmp_path):
    finished = subprocess.run(
        [sys.executable, str(EXAMPLES / "own_data.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert finished.returncode == 0, finished.stderr
    assert "| combination | mce (accuracy) | baseline (accuracy) |" in finished.stdout
    assert "mean+error+worst" in finished.stdout
    assert "average accuracy: MCE" in finished.stdout
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert json.loads((run_dir / "results.json").read_text())["task"] == "breast-cancer"


@pytest.mark.slow
def test_own_data_task_from_the_command_line(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    argv = ["--task", "own_data:TASK", "--method", "mce", "--epochs", "1", "--no-progress"]
    assert main(argv + ["--pretrain-steps", "2", "--out", str(tmp_path)]) == 0
    assert "breast-cancer: accuracy (%)" in capsys.readouterr().out
    config = json.loads((tmp_path / "config.json").read_text())["config"]
    assert config["task"] == "own_data:TASK"
    assert config["hparams"]["missing_rates"] == [0.2, 0.5, 0.8]


def test_from_arrays_zeroes_absent_inputs_and_names_bad_ones():
    inputs = {"a": np.array([[1.0, 2.0], [np.nan, np.nan], [3.0, 4.0]]), "b": np.ones((3, 1))}
    data = MultimodalData.from_arrays(inputs, [0, 1, 2], presence=[[1, 1], [0, 1], [1, 0]])
    assert data.modalities == ("a", "b")
    assert data.present.tolist() == [3, 2, 1]
    assert data.inputs["a"].tolist() == [[1.0, 2.0], [0.0, 0.0], [3.0, 4.0]]
    assert data.inputs["b"].tolist() == [[1.0], [1.0], [0.0]]
    assert MultimodalData.from_arrays(inputs, [0, 1, 2]).present.tolist() == [3, 2, 3]
    with pytest.raises(ValueError, match="modality 'a' of sample 1 is marked present but its"):
        MultimodalData.from_arrays(inputs, [0, 1, 2], presence=[[1, 1], [1, 1], [1, 0]])
    with pytest.raises(ValueError, match="sample 1 has no modality present"):
        MultimodalData.from_arrays(inputs, [0, 1, 2], presence=[[1, 1], [0, 0], [1, 1]])
    with pytest.raises(ValueError, match="modality 'b' has shape \\[2, 1\\]; expected 3"):
        MultimodalData.from_arrays({"a": inputs["a"], "b": np.ones((2, 1))}, [0, 1, 2])
    with pytest.raises(ValueError, match="presence must have shape \\[N, M\\] = \\[3, 2\\]"):
        MultimodalData.from_arrays(inputs, [0, 1, 2], presence=[[1, 1, 1]] * 3)
