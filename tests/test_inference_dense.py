"""Inference on trained dense runs: mce.load and Predictor.predict of BraTS volumes (the task's
sliding window) and nuScenes BEV maps (with the samples' context), equal to the evaluation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mce
from mce.nn.model import full_rows
from mce.train import run
from mce.training.run import config_for


def _train(task: str, out: Path, data_dir: Path, **settings) -> Path:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run(
            config_for(
                task, out=str(out), method="baseline", data_dir=str(data_dir), epochs=1,
                pretrain_steps=2, pretrain_eval_every=2, progress=False, seed=0, **settings,
            )  # fmt: skip
        )
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.mark.slow
def test_brats_predicts_whole_volumes_as_the_evaluation(tmp_path, monkeypatch) -> None:
    pytest.importorskip("monai", reason="the brats task needs monai (pip install '.[brats]')")
    from data.brats_fixture import write_brats_fixture

    from mce.tasks.brats.segmentation import evaluate_segmentation, region_dice

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    data_dir = write_brats_fixture(tmp_path / "data", cases=8)
    out = _train(
        "brats", tmp_path / "run", data_dir, task_options={"crop": 16, "base": 4, "levels": 3},
        missing_rates=(0.3, 0.3, 0.2, 0.0),
    )  # fmt: skip
    predictor = mce.load(out)
    assert predictor.is_dense and predictor.window is not None
    model, modalities = predictor.model, predictor.modalities
    test = predictor.task.splits(data_dir).test
    combo = 0b1101  # t1ce missing
    data = test.with_presence(torch.full_like(test.present, combo))
    result = predictor.predict_data(data)

    n, volume = len(data), tuple(data.target.shape[1:])
    assert result.scores.shape == (n, 4, *volume) and result.outputs.shape == (n, 4, *volume)
    assert result.prediction.shape == (n, *volume) and result.prediction.dtype == torch.int64
    assert torch.equal(result.prediction, result.scores.argmax(1))
    assert torch.allclose(result.scores.sum(1), torch.ones(n, *volume), atol=1e-5)
    assert torch.equal(result.present, torch.full((n,), combo))

    # the run's evaluation of that combination scores these maps
    evaluation = evaluate_segmentation(model, data, predictor.window, progress=False)
    dice = region_dice(result.prediction, data.target.long()).mean(1).double().mean()
    assert float(dice) == pytest.approx(evaluation.scores["t1+flair+t2"], rel=1e-6)

    # by hand: the first sample through the window over the model's forward
    def forward(windows: torch.Tensor) -> torch.Tensor:
        inputs = {name: windows[:, m : m + 1] for m, name in enumerate(modalities)}
        present = torch.full((windows.shape[0],), combo)
        h = model.encode(inputs, present)
        return model.forward_rows(h, full_rows(present))[1].softmax(1)

    x = torch.cat([data.inputs[name][:1].float() for name in modalities], 1)
    with torch.no_grad():
        expected = predictor.window(forward, x)
    assert torch.allclose(result.scores[:1], expected, atol=1e-5)

    # the same from arrays, the missing modality omitted
    inputs = {name: data.inputs[name][:1] for name in ("t1", "flair", "t2")}
    again = predictor.predict(inputs)
    assert torch.equal(again.present, torch.tensor([combo]))
    assert torch.allclose(again.scores, result.scores[:1], atol=1e-6)
    with pytest.raises(ValueError, match="attribution is not available for task 'brats'"):
        predictor.predict(inputs, attribution=True)
    with pytest.raises(ValueError, match="modality 'flair' has shape"):
        predictor.predict({**inputs, "flair": data.inputs["flair"][:1, :, :8]})


def test_nuscenes_predicts_bev_maps_as_the_evaluation(tmp_path, monkeypatch) -> None:
    pytest.importorskip(
        "nuscenes", reason="the nuScenes task needs nuscenes-devkit (pip install '.[nuscenes]')"
    )
    from data.nuscenes_fixture import write_nuscenes_fixture

    from mce.tasks.nuscenes.evaluator import evaluate_bev
    from mce.tasks.nuscenes.loss import intersection_union

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    dataroot = write_nuscenes_fixture(tmp_path / "data", samples_per_scene=6, sweeps=2)
    small = {"image_height": 36, "image_width": 64, "cells": 16, "dim": 8, "radar_sweeps": 2}
    out = _train("nuscenes", tmp_path / "run", dataroot, task_options=small,
                 missing_rates=(0.2, 0.3, 0.4))  # fmt: skip
    predictor = mce.load(out)
    assert predictor.is_dense and predictor.window is None
    model = predictor.model
    test = predictor.task.splits(dataroot).test
    combo = 0b011  # camera + lidar, radar missing
    data = test.with_presence(torch.full_like(test.present, combo))
    result = predictor.predict_data(data, batch_size=2)

    n, cells = len(data), small["cells"]
    assert result.outputs.shape == (n, 1, cells, cells)
    assert torch.allclose(result.scores, torch.sigmoid(result.outputs))
    assert result.prediction.shape == (n, cells, cells) and result.prediction.dtype == torch.int64
    assert torch.equal(result.prediction, (result.scores[:, 0] > 0.5).long())

    # the run's evaluation of that combination scores these maps
    batch = next(data.batches(n))
    evaluation = evaluate_bev(model, data, progress=False)
    intersection, union = intersection_union(result.outputs, batch.target)
    iou = float(intersection.sum() / union.sum()) if float(union.sum()) else 1.0
    assert iou == pytest.approx(evaluation.scores["camera+lidar"], abs=1e-9)

    # by hand: the model's forward with the samples' context
    with torch.no_grad():
        h = model.encode(batch.inputs, batch.present, batch.lengths, batch.context)
        logits = model.forward_rows(h, full_rows(batch.present))[1]
    assert torch.allclose(result.outputs, logits, atol=1e-5)

    # the same from arrays, context given; without it the camera is refused
    inputs = {name: batch.inputs[name] for name in ("camera", "lidar")}
    lengths = {"lidar": batch.lengths["lidar"]}
    again = predictor.predict(inputs, lengths=lengths, context=batch.context)
    assert torch.allclose(again.outputs, result.outputs, atol=1e-5)
    with pytest.raises(ValueError, match="modality 'camera' needs the samples' context"):
        predictor.predict(inputs, lengths=lengths)
    with pytest.raises(ValueError, match="context .* has shape"):
        key = next(iter(batch.context))
        predictor.predict(inputs, lengths=lengths, context={key: batch.context[key][:1]})
    with pytest.raises(ValueError, match="attribution is not available for task 'nuscenes'"):
        predictor.predict(inputs, lengths=lengths, context=batch.context, attribution=True)
