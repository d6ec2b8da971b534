"""mce.load and predict on runs of the file-reading classification tasks, made on their
fixtures: AudioVisionMNIST and IEMOCAP (sequences with lengths), a modality missing."""

from __future__ import annotations

import pytest
import torch
from data.avmnist_fixture import write_avmnist_fixture
from data.iemocap_fixture import write_iemocap_fixture

import mce
from mce.tasks import get_task
from mce.train import main

FAST = ["--method", "mce", "--epochs", "1", "--pretrain-steps", "2", "--no-progress"]


def _check(predictor, test, missing: str) -> None:
    """Predictions with ``missing`` absent equal the model's own forward on those rows, and
    the attribution of the absent modality is NaN while the others add up to v(A_n)."""
    m = predictor.modalities.index(missing)
    present = test.present & ~(1 << m)
    keep = present != 0
    data = test.subset(torch.nonzero(keep).flatten())
    prediction = predictor.predict(
        data.inputs, present[keep], lengths=data.lengths or None, attribution=True
    )
    model = predictor.model.eval()
    with torch.no_grad():
        outputs = model(data.inputs, present[keep], data.lengths, data.context)
    assert torch.allclose(prediction.outputs, outputs, atol=1e-5)
    assert torch.equal(prediction.prediction, outputs.argmax(-1))
    assert torch.isnan(prediction.shapley[:, m]).all()
    chosen = prediction.scores.gather(1, prediction.prediction[:, None])[:, 0]
    total = torch.nan_to_num(prediction.shapley).sum(1)
    assert torch.allclose(total, chosen, atol=1e-5)  # efficiency: phi sums to v(A_n)


def test_avmnist_run_loads_and_predicts(tmp_path) -> None:
    write_avmnist_fixture(tmp_path / "data")
    argv = ["--task", "avmnist", "--data-dir", str(tmp_path / "data"), *FAST]
    argv += ["--batch-size", "8", "--missing-rates", "0.2,0.5", "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    predictor = mce.load(tmp_path / "run")
    test = get_task("avmnist").splits(tmp_path / "data").test
    _check(predictor, test, "audio")


@pytest.mark.slow
def test_iemocap_run_loads_and_predicts(tmp_path) -> None:
    data = write_iemocap_fixture(tmp_path / "data")
    argv = ["--task", "iemocap", "--data-dir", str(data), *FAST, "--missing-rates", "a"]
    assert main([*argv, "--batch-size", "16", "--out", str(tmp_path / "run")]) == 0
    predictor = mce.load(tmp_path / "run")
    test = get_task("iemocap").splits(data, 1).test
    _check(predictor, test, "visual")
