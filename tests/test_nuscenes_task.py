"""The nuScenes reader and task on a dataroot in the real format, opened by nuscenes-devkit:
frames and targets, named errors, training and evaluation through the CLI, exact resume."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip(
    "nuscenes", reason="the nuScenes task needs nuscenes-devkit (pip install '.[nuscenes]')"
)
from data.nuscenes_fixture import write_nuscenes_fixture

from mce.data.nuscenes import (
    RADAR_FEATURES,
    NuScenesReader,
    open_nuscenes,
    split_tokens,
)
from mce.nn.bev import Grid3D
from mce.tasks.nuscenes import bev_loss, iou_utility
from mce.training.run import config_for

SMALL = {"image_height": 36, "image_width": 64, "cells": 16, "dim": 8, "radar_sweeps": 2}
SMALL_ARGS = [item for k, v in SMALL.items() for item in ("--task-option", f"{k}={v}")]
GRID = Grid3D(cells=40, half_extent=50.0, height_bins=8)


@pytest.fixture(scope="module")
def dataroot(tmp_path_factory) -> Path:
    return write_nuscenes_fixture(
        tmp_path_factory.mktemp("nuscenes") / "data", samples_per_scene=6, sweeps=2
    )


@pytest.fixture(scope="module")
def nusc(dataroot):
    return open_nuscenes(dataroot)


def test_splits_follow_the_devkit(nusc) -> None:
    train, val = split_tokens(nusc, "train"), split_tokens(nusc, "val")
    assert len(train) == len(val) == 6 and not set(train) & set(val)
    times = [nusc.get("sample", token)["timestamp"] for token in train]
    assert times == sorted(times)
    with pytest.raises(ValueError, match="split must be train or val"):
        split_tokens(nusc, "test")


def test_a_sample_in_the_reference_frame(nusc) -> None:
    reader = NuScenesReader(nusc, GRID, (36, 64), lidar_sweeps=2, radar_sweeps=2)
    sample = reader.read(split_tokens(nusc, "train")[0])
    assert sample.images.shape == (6, 3, 36, 64) and sample.images.dtype == np.uint8
    assert sample.intrinsics.shape == (6, 3, 3) and sample.cam_from_ref.shape == (6, 4, 4)
    # the front camera (index 1) is the reference frame itself
    assert np.allclose(sample.cam_from_ref[1], np.eye(4), atol=1e-5)
    assert sample.lidar.shape[1] == 4 and sample.radar.shape[1] == 3 + len(RADAR_FEATURES)
    assert set(np.unique(sample.lidar[:, 3]).round(3)) >= {0.0}  # keyframe dt = 0
    assert (sample.lidar[:, 3] >= 0).all() and (sample.lidar[:, 3] > 0).any()  # a sweep
    assert sample.target.shape == sample.valid.shape == (40, 40)
    assert sample.target.sum() > 0
    assert ((sample.valid == 0) <= (sample.target == 1)).all()  # hidden cells are vehicles
    # LiDAR points on the vehicles' surfaces fall in their footprints
    column = ((sample.lidar[:, 0] + 50) / GRID.cell_size).astype(int)
    row = ((sample.lidar[:, 2] + 50) / GRID.cell_size).astype(int)
    inside = (column >= 0) & (column < 40) & (row >= 0) & (row < 40)
    assert sample.target[row[inside], column[inside]].sum() > 20


def test_every_vehicle_projects_into_a_camera(nusc) -> None:
    """Box centres, moved into the reference frame the way the target is, land inside at least
    one camera image through that camera's intrinsics and cam_from_ref: the frames agree."""
    reader = NuScenesReader(nusc, GRID, (90, 160), radar_sweeps=1)
    token = split_tokens(nusc, "val")[0]
    sample = reader.read(token)
    rows, columns = np.nonzero(sample.target)
    assert len(rows)
    seen = 0
    for r, c in zip(rows, columns):
        x = -50 + (c + 0.5) * GRID.cell_size
        z = -50 + (r + 0.5) * GRID.cell_size
        point = np.array([x, 0.5, z, 1.0])  # near the ground (y down)
        for k, transform in zip(sample.intrinsics, sample.cam_from_ref):
            camera = transform @ point
            if camera[2] <= 0.5:
                continue
            u, v, w = k @ camera[:3]
            if 0 <= u / w < 160 and 0 <= v / w < 90:
                seen += 1
                break
    assert seen == len(rows)


def test_loss_and_utility_ignore_hidden_cells() -> None:
    target = torch.zeros(2, 2, 4, 4)
    target[:, 1] = 1
    target[0, 0, :2, :2] = 1
    logits = torch.full((2, 1, 4, 4), -5.0)
    logits[0, 0, :2, :2] = 5.0
    assert torch.allclose(iou_utility(logits, target), torch.tensor([1.0, 1.0]))
    logits[1, 0, 3, 3] = 5.0  # a false positive ...
    assert float(iou_utility(logits, target)[1]) == 0.0
    target[1, 1, 3, 3] = 0  # ... on a hidden cell is ignored
    assert float(iou_utility(logits, target)[1]) == 1.0
    loss = bev_loss(logits, target)
    assert loss.shape == (2,) and bool((loss < 0.05).all())


def _broken(dataroot: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "broken"
    shutil.copytree(dataroot, copy)
    return copy


def test_errors_are_named(dataroot, nusc, tmp_path) -> None:
    with pytest.raises(ValueError, match="is not a folder"):
        open_nuscenes(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="exactly one of v1.0-trainval, v1.0-mini"):
        open_nuscenes(empty)
    with pytest.raises(ValueError, match="has no v1.0-trainval/ folder"):
        open_nuscenes(dataroot, "v1.0-trainval")
    broken = _broken(dataroot, tmp_path)
    (broken / "v1.0-mini" / "sample_data.json").unlink()
    with pytest.raises(ValueError, match="sample_data.json is missing"):
        open_nuscenes(broken)
    (broken / "v1.0-mini" / "sample_data.json").write_text("{not json")
    with pytest.raises(ValueError, match="sample_data.json is unreadable"):
        open_nuscenes(broken)


@pytest.mark.parametrize(
    ("channel", "damage", "message"),
    [
        ("LIDAR_TOP", "delete", "sample file .*LIDAR_TOP.* is missing"),
        ("LIDAR_TOP", "truncate", "lidar file .*LIDAR_TOP.* is truncated"),
        ("LIDAR_TOP", "nan", "lidar file .*LIDAR_TOP.* is corrupt"),
        ("RADAR_FRONT", "garbage", "radar file .*RADAR_FRONT.* is corrupt"),
        ("CAM_BACK", "garbage", "image .*CAM_BACK.* is unreadable"),
    ],
)
def test_broken_files_are_named(dataroot, tmp_path, channel, damage, message) -> None:
    broken = _broken(dataroot, tmp_path)
    nusc = open_nuscenes(broken)
    token = split_tokens(nusc, "train")[0]
    data = nusc.get("sample_data", nusc.get("sample", token)["data"][channel])
    path = broken / data["filename"]
    if damage == "delete":
        path.unlink()
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:-6])
    elif damage == "nan":
        points = np.fromfile(path, dtype=np.float32)
        points[7] = np.nan
        points.tofile(path)
    else:
        path.write_bytes(b"not a sensor file at all")
    with pytest.raises(ValueError, match=message):
        NuScenesReader(nusc, GRID, (36, 64), radar_sweeps=1).read(token)


@pytest.mark.parametrize(
    ("cut", "message"),
    [
        (None, r"is empty \(0 bytes\)"),  # every byte
        (18, r"is truncated \(\d+ bytes, not a whole number of 20-byte points"),
        (1, r"is truncated \(\d+ bytes, not a whole number of 20-byte points"),
    ],
)
def test_empty_or_truncated_lidar_is_refused_naming_the_file(
    dataroot, tmp_path, cut, message
) -> None:
    """A cut that leaves whole float32 values (18 bytes: one point less, 2 bytes over) or a
    zero-byte file is refused, as is a cut of one byte."""
    broken = _broken(dataroot, tmp_path)
    nusc = open_nuscenes(broken)
    token = split_tokens(nusc, "train")[0]
    data = nusc.get("sample_data", nusc.get("sample", token)["data"]["LIDAR_TOP"])
    path = broken / data["filename"]
    raw = path.read_bytes()
    path.write_bytes(b"" if cut is None else raw[:-cut])
    reader = NuScenesReader(nusc, GRID, (36, 64), radar_sweeps=1)
    with pytest.raises(ValueError, match=f"lidar file {re.escape(str(path))} {message}"):
        reader.read_lidar(token)


def _sweep_of(nusc, token: str, channel: str) -> dict:
    """The sample_data record of the sweep before ``channel``'s keyframe of ``token``."""
    keyframe = nusc.get("sample_data", nusc.get("sample", token)["data"][channel])
    return nusc.get("sample_data", keyframe["prev"])


def test_check_files_names_the_first_missing_file_and_the_count(dataroot, tmp_path) -> None:
    broken = _broken(dataroot, tmp_path)
    nusc = open_nuscenes(broken)
    tokens = split_tokens(nusc, "train")
    reader = NuScenesReader(nusc, GRID, (36, 64), lidar_sweeps=2, radar_sweeps=2)
    files = reader.sample_files(tokens[-1])
    assert len(files) == 6 + 2 + 5 * 2 and all(path.is_file() for path in files)
    total = len({path for token in tokens for path in reader.sample_files(token)})
    reader.check_files(tokens, progress=False)
    radar = broken / _sweep_of(nusc, tokens[-1], "RADAR_BACK_LEFT")["filename"]
    assert "sweeps" in radar.parts and radar in files
    radar.unlink()
    with pytest.raises(
        ValueError, match=rf"sample file {re.escape(str(radar))} is missing: 1 of the {total} "
    ):
        reader.check_files(tokens, progress=False)
    # with one sweep a radar, that file is not read
    NuScenesReader(nusc, GRID, (36, 64), lidar_sweeps=2, radar_sweeps=1).check_files(
        tokens, progress=False
    )
    lidar = broken / _sweep_of(nusc, tokens[-1], "LIDAR_TOP")["filename"]
    lidar.write_bytes(b"")  # read before the radars: named first
    with pytest.raises(
        ValueError, match=rf"sample file {re.escape(str(lidar))} is empty \(0 bytes\): 2 of "
    ):
        reader.check_files(tokens, progress=False)


def test_check_files_task_option(dataroot, tmp_path) -> None:
    """The task checks the files of both splits at open (check_files=true, the default) and
    skips the check with check_files=false."""
    from mce.tasks import get_task

    broken = _broken(dataroot, tmp_path)
    nusc = open_nuscenes(broken)
    token = split_tokens(nusc, "val")[-1]
    sweep = broken / _sweep_of(nusc, token, "LIDAR_TOP")["filename"]
    sweep.unlink()
    options = {**SMALL, "lidar_sweeps": 2}
    assert get_task("nuscenes", options).options["check_files"] == "true"
    with pytest.raises(
        ValueError, match=rf"sample file {re.escape(str(sweep))} is missing: 1 of the \d+ files"
    ):
        get_task("nuscenes", options).splits(broken)
    splits = get_task("nuscenes", {**options, "check_files": "false"}).splits(broken)
    assert len(splits.train) == len(splits.test) == 6
    with pytest.raises(ValueError, match="check_files must be one of true, false, got 'no'"):
        get_task("nuscenes", {"check_files": "no"})


@pytest.mark.slow
def test_cli_trains_and_evaluates_every_combination(dataroot, tmp_path) -> None:
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "mce.train", "--task", "nuscenes", "--data-dir", str(dataroot),
        *SMALL_ARGS, "--epochs", "1", "--pretrain-steps", "2", "--pretrain-eval-every", "2",
        "--missing-rates", "0.2,0.3,0.4", "--no-progress", "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    for method in ("mce", "baseline"):
        scores = results["scores"][method]
        assert len(scores) == 8 and "camera+lidar+radar" in scores
        assert all(0 <= value <= 100 for value in scores.values())
        assert set(results["metrics"][method]) == {"sample_iou"}
    # U is scored per batch (random reference camera): the training split is left unscored
    assert all(fit["training_utility"] is None for fit in results["upper_bounds"].values())
    assert "held-out" in (out / "results.md").read_text()
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["task_options"]["cells"] == 16
    assert config["hparams"]["lr_schedule"] == "onecycle"


@pytest.mark.slow
def test_resume_equals_uninterrupted(dataroot, tmp_path, monkeypatch) -> None:
    from mce.support.checkpoint import load_checkpoint
    from mce.train import run

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        base = dict(
            method="mce", data_dir=str(dataroot), task_options=dict(SMALL), epochs=2,
            pretrain_steps=2, pretrain_eval_every=2, missing_rates=(0.2, 0.3, 0.4),
            progress=False, seed=1,
        )  # fmt: skip
        expected = run(config_for("nuscenes", out=str(tmp_path / "a"), **base))
        resumed = config_for("nuscenes", out=str(tmp_path / "b"), **base)
        assert run(resumed, stop_at_step=8) == {}
        assert run(resumed, resume=True) == expected
    finally:
        torch.set_num_threads(threads)
    final_a = load_checkpoint(tmp_path / "a" / "mce" / "checkpoint.pt")
    final_b = load_checkpoint(tmp_path / "b" / "mce" / "checkpoint.pt")
    for key in final_a["model"]:
        assert torch.equal(final_a["model"][key], final_b["model"][key]), key
    assert final_a["scheduler"] == final_b["scheduler"]


def test_a_missing_extra_is_named(monkeypatch, capsys) -> None:
    import mce.support.optional

    real = mce.support.optional.importlib.import_module

    def without_devkit(name: str):
        if name.startswith("nuscenes"):
            raise ImportError(f"No module named {name!r}")
        return real(name)

    monkeypatch.setattr(mce.support.optional.importlib, "import_module", without_devkit)
    from mce.train import main

    assert main(["--task", "nuscenes", "--data-dir", ".", "--no-progress"]) == 1
    error = capsys.readouterr().err
    assert "pip install 'mce[nuscenes]'" in error and "nuscenes-devkit" in error


@pytest.mark.slow
def test_cli_reproduces_a_presence_csv(dataroot, nusc, tmp_path) -> None:
    tokens = split_tokens(nusc, "train")
    rows = ["sample_token,camera,lidar,radar"]
    masks = ["1,1,0", "0,1,1", "1,0,1", "1,1,1", "0,0,1", "1,0,0"]
    rows += [f"{token},{mask}" for token, mask in zip(tokens, masks)]
    (tmp_path / "presence.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "mce.train", "--task", "nuscenes", "--data-dir", str(dataroot),
        *SMALL_ARGS, "--epochs", "1", "--method", "baseline", "--no-progress", "--out", str(out),
        "--presence-csv", str(tmp_path / "presence.csv"),
    ]  # fmt: skip
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = torch.load(out / "masks.pt", weights_only=True)
    expected = [sum(int(bit) << m for m, bit in enumerate(mask.split(","))) for mask in masks]
    assert saved["present"].tolist() == expected
    results = json.loads((out / "results.json").read_text())
    assert results["missing_rates"]["actual"] == {"camera": 2 / 6, "lidar": 3 / 6, "radar": 2 / 6}


def test_target_matches_the_devkits_boxes(nusc) -> None:
    """The vehicle target against footprints built independently with the devkit's Box (global
    -> LIDAR_TOP ego pose -> front camera), at 0.5 m cells: a mirrored axis, swapped width and
    length or a wrong frame would not overlap."""
    from matplotlib.path import Path as Polygon
    from nuscenes.utils.data_classes import Box  # noqa: F401  (the type nusc.get_box returns)
    from pyquaternion import Quaternion

    grid = Grid3D(cells=200, half_extent=50.0, height_bins=8)
    reader = NuScenesReader(nusc, grid, (36, 64), radar_sweeps=1)
    centres = -50 + (np.arange(200) + 0.5) * 0.5
    zz, xx = np.meshgrid(centres, centres, indexing="ij")
    cells = np.stack([xx.ravel(), zz.ravel()], 1)
    for token in split_tokens(nusc, "train")[:3]:
        sample = nusc.get("sample", token)
        pose = nusc.get(
            "ego_pose", nusc.get("sample_data", sample["data"]["LIDAR_TOP"])["ego_pose_token"]
        )
        front = nusc.get("sample_data", sample["data"]["CAM_FRONT"])
        mount = nusc.get("calibrated_sensor", front["calibrated_sensor_token"])
        expected = np.zeros(200 * 200, dtype=bool)
        hidden = np.zeros(200 * 200, dtype=bool)
        for annotation in sample["anns"]:
            box = nusc.get_box(annotation)
            if "vehicle" not in box.name:
                continue
            box.translate(-np.array(pose["translation"]))
            box.rotate(Quaternion(pose["rotation"]).inverse)
            box.translate(-np.array(mount["translation"]))
            box.rotate(Quaternion(mount["rotation"]).inverse)
            inside = Polygon(box.bottom_corners()[[0, 2]].T).contains_points(cells)
            expected |= inside
            if nusc.get("sample_annotation", annotation)["visibility_token"] == "1":
                hidden |= inside
        got = reader.read(token)
        target, visible = got.target.ravel() > 0, got.valid.ravel() > 0
        # fillPoly (as Simple-BEV) also fills the cells the outline crosses: every footprint
        # cell is in the target, and every target cell is within one cell of a footprint
        assert (target & expected).sum() >= 0.95 * expected.sum(), token
        near = _dilate(expected.reshape(200, 200)).ravel()
        assert (target & ~near).sum() <= 0.05 * target.sum(), token
        assert hidden.any() and (~visible).any()
        assert ((~visible) & hidden).sum() >= 0.95 * hidden.sum()
        assert ((~visible) & ~_dilate(hidden.reshape(200, 200)).ravel()).sum() == 0


def _dilate(mask: np.ndarray) -> np.ndarray:
    """mask grown by one cell in each of the 8 directions."""
    padded = np.pad(mask, 1)
    rows, columns = mask.shape
    return np.any(
        [
            padded[1 + dr : 1 + dr + rows, 1 + dc : 1 + dc + columns]
            for dr in (-1, 0, 1)
            for dc in (-1, 0, 1)
        ],
        axis=0,
    )


def test_reading_on_threads_gives_the_same_samples_in_order(nusc) -> None:
    reader = NuScenesReader(nusc, GRID, (36, 64), radar_sweeps=2)
    tokens = split_tokens(nusc, "val")
    one, three = reader.read_all(tokens), reader.read_all(tokens, workers=3)
    assert [s.token for s in three] == tokens
    for a, b in zip(one, three):
        for name in ("images", "intrinsics", "cam_from_ref", "lidar", "radar", "target", "valid"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), name


def _reader_batch(reader: NuScenesReader, tokens: list[str]):
    """The front-camera samples of ``tokens`` as a training batch of the task's layout."""
    from mce.tasks.nuscenes import _stack

    data = _stack([reader.read(token) for token in tokens])
    return data.batch(torch.arange(len(tokens))), data


def test_random_reference_camera_equals_reading_in_that_cameras_frame(nusc) -> None:
    """The augmentation of a front-camera sample equals the reader's sample read with the drawn
    camera as the reference: points, radar velocities, camera transforms, target and mask."""
    from mce.data.nuscenes import CAMERAS
    from mce.nn.bev import split_geometry
    from mce.tasks.nuscenes import RandomReferenceCamera

    reader = NuScenesReader(nusc, GRID, (36, 64), lidar_sweeps=2, radar_sweeps=2)
    tokens = split_tokens(nusc, "train")[:4]
    batch, _ = _reader_batch(reader, tokens)
    stored = {name: value.clone() for name, value in batch.inputs.items()}
    stored_target = batch.target.clone()
    torch.manual_seed(5)  # draws four different cameras (checked below)
    chosen = torch.randint(0, len(CAMERAS), (len(tokens),))
    torch.manual_seed(5)
    moved = RandomReferenceCamera(GRID)(batch)
    _, cam_from_ref = split_geometry(moved.context["camera_geometry"])
    for n, token in enumerate(tokens):
        expected = reader.read(token, CAMERAS[int(chosen[n])])
        lidar = moved.inputs["lidar"][n, : moved.lengths["lidar"][n]].numpy()
        radar = moved.inputs["radar"][n, : moved.lengths["radar"][n]].numpy()
        assert np.allclose(lidar, expected.lidar, atol=2e-3)
        assert np.allclose(radar, expected.radar, atol=2e-3)
        assert np.allclose(cam_from_ref[n].numpy(), expected.cam_from_ref, atol=1e-4)
        assert np.array_equal(moved.target[n, 0].numpy(), expected.target)
        assert np.array_equal(moved.target[n, 1].numpy(), expected.valid)
    assert chosen.tolist() == [5, 0, 1, 3]
    # the stored front-camera batch is left as it was
    assert torch.equal(batch.target, stored_target)
    for name, value in stored.items():
        assert torch.equal(batch.inputs[name], value), name


def test_random_reference_camera_leaves_absent_point_clouds_zero(nusc) -> None:
    from mce.tasks.nuscenes import RandomReferenceCamera

    reader = NuScenesReader(nusc, GRID, (36, 64), radar_sweeps=1)
    _, data = _reader_batch(reader, split_tokens(nusc, "train")[:2])
    data = data.with_presence(torch.tensor([0b011, 0b101]))  # radar, then lidar missing
    moved = RandomReferenceCamera(GRID)(data.batch(torch.arange(2)))
    assert not moved.inputs["radar"][0].any() and moved.inputs["radar"][1].any()
    assert not moved.inputs["lidar"][1].any() and moved.inputs["lidar"][0].any()


def test_reference_option(dataroot) -> None:
    from mce.tasks import get_task
    from mce.tasks.nuscenes import RandomReferenceCamera

    assert isinstance(get_task("nuscenes", {}).augment, RandomReferenceCamera)
    assert get_task("nuscenes", {"reference": "front"}).augment is None
    with pytest.raises(ValueError, match="reference must be one of random, front"):
        get_task("nuscenes", {"reference": "back"})


def test_streamed_splits_give_the_batches_of_splits_in_memory(dataroot) -> None:
    """storage=stream (sensors read batch by batch) and storage=memory give equal batches,
    masked or not, in any order."""
    from mce.tasks import get_task

    streamed = get_task("nuscenes", {**SMALL, "storage": "stream"}).splits(dataroot)
    held = get_task("nuscenes", {**SMALL, "storage": "memory"}).splits(dataroot)
    assert streamed.train.lazy and not held.train.lazy
    present = torch.tensor([7, 1, 2, 4, 3, 5])
    order = torch.randperm(6)
    for a, b in (
        (streamed.test, held.test),
        (streamed.train.with_presence(present), held.train.with_presence(present)),
    ):
        assert a.ids == b.ids
        for key in b.context:
            assert torch.equal(a.context[key], b.context[key]), key
        for x, y in zip(a.batches(4, order), b.batches(4, order)):
            for name in y.inputs:
                assert torch.equal(x.inputs[name], y.inputs[name]), name
            assert x.lengths.keys() == y.lengths.keys()
            for name in y.lengths:
                assert torch.equal(x.lengths[name], y.lengths[name]), name
            assert torch.equal(x.target, y.target)


def test_streamed_and_in_memory_runs_agree(dataroot, tmp_path, monkeypatch) -> None:
    from mce.train import run

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        scores = [
            run(
                config_for(
                    "nuscenes", out=str(tmp_path / storage), method="mce",
                    data_dir=str(dataroot), task_options={**SMALL, "storage": storage},
                    epochs=1, pretrain_steps=2, pretrain_eval_every=2,
                    missing_rates=(0.2, 0.3, 0.4), progress=False, seed=3, no_cache=True,
                )  # fmt: skip
            )
            for storage in ("stream", "memory")
        ]
    finally:
        torch.set_num_threads(threads)
    assert scores[0] == scores[1] and len(scores[0]["mce"]) == 8
