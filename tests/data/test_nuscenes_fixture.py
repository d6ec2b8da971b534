"""The tiny nuScenes dataroot, checked through nuscenes-devkit: tables, files, point clouds, geometry."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("nuscenes", reason="the nuScenes checks need nuscenes-devkit")

from nuscenes.nuscenes import NuScenes
from nuscenes.utils.data_classes import Box, LidarPointCloud, RadarPointCloud
from nuscenes.utils.geometry_utils import points_in_box, view_points
from nuscenes.utils.splits import create_splits_scenes
from nuscenes_fixture import (
    CAMERAS,
    LIDAR,
    RADARS,
    TABLES,
    TRAIN_SCENE,
    VAL_SCENE,
    VERSION,
    write_nuscenes_fixture,
)
from pyquaternion import Quaternion

SAMPLES = 3
IMAGE_SIZE = (90, 160)  # H, W
CHANNELS = {*CAMERAS, LIDAR, *RADARS}
HEX_TOKEN = re.compile(r"[0-9a-f]{32}")
# rows of a RadarPointCloud's points
DYN_PROP, AMBIG_STATE, INVALID_STATE = 3, 11, 14


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_nuscenes_fixture(tmp_path_factory.mktemp("nuscenes") / "nuscenes")


@pytest.fixture(scope="module")
def nusc(root: Path) -> NuScenes:
    return NuScenes(version=VERSION, dataroot=str(root), verbose=False)


@pytest.fixture
def radar_filters() -> Iterator[None]:
    """Restores the devkit's (class-wide) default radar filters after the test."""
    yield
    RadarPointCloud.default_filters()


def _open(root: Path) -> NuScenes:
    """The devkit's view of a dataroot."""
    return NuScenes(version=VERSION, dataroot=str(root), verbose=False)


def _scene_samples(nusc: NuScenes, scene: dict) -> list[dict]:
    """The samples of ``scene``, following ``next`` from its first one."""
    samples = [nusc.get("sample", scene["first_sample_token"])]
    while samples[-1]["next"]:
        samples.append(nusc.get("sample", samples[-1]["next"]))
    return samples


def _in_sensor_frame(nusc: NuScenes, box: Box, sample_data_token: str) -> Box:
    """``box`` (global) moved into the sensor frame of a sample_data, as the devkit tutorial does."""
    sample_data = nusc.get("sample_data", sample_data_token)
    pose = nusc.get("ego_pose", sample_data["ego_pose_token"])
    calibration = nusc.get("calibrated_sensor", sample_data["calibrated_sensor_token"])
    box = box.copy()
    box.translate(-np.array(pose["translation"]))
    box.rotate(Quaternion(pose["rotation"]).inverse)
    box.translate(-np.array(calibration["translation"]))
    box.rotate(Quaternion(calibration["rotation"]).inverse)
    return box


def _facing_camera(nusc: NuScenes, sample: dict, centre: np.ndarray) -> str:
    """The camera whose optical axis (global) points closest to the direction of ``centre``."""
    best, best_cosine = "", -2.0
    for channel in CAMERAS:
        sample_data = nusc.get("sample_data", sample["data"][channel])
        pose = nusc.get("ego_pose", sample_data["ego_pose_token"])
        calibration = nusc.get("calibrated_sensor", sample_data["calibrated_sensor_token"])
        ego = Quaternion(pose["rotation"])
        position = ego.rotate(calibration["translation"]) + np.array(pose["translation"])
        axis = ego.rotate(Quaternion(calibration["rotation"]).rotate([0.0, 0.0, 1.0]))
        direction = centre - position
        cosine = float(np.dot(axis, direction) / np.linalg.norm(direction))
        if cosine > best_cosine:
            best, best_cosine = channel, cosine
    return best


def _files(root: Path) -> dict[str, bytes]:
    """Every file under ``root``, by its relative path."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_devkit_opens_the_tables(root: Path, nusc: NuScenes) -> None:
    assert sorted(p.stem for p in (root / VERSION).glob("*.json")) == sorted(TABLES)
    assert len(nusc.sample) == 2 * SAMPLES
    assert sorted(scene["name"] for scene in nusc.scene) == sorted([TRAIN_SCENE, VAL_SCENE])
    for table in TABLES:
        if table != "visibility":
            assert all(HEX_TOKEN.fullmatch(r["token"]) for r in getattr(nusc, table)), table
    assert [(v["token"], v["level"]) for v in nusc.visibility] == [
        ("1", "v0-40"),
        ("2", "v40-60"),
        ("3", "v60-80"),
        ("4", "v80-100"),
    ]
    names = {c["name"] for c in nusc.category}
    assert {"vehicle.car", "vehicle.truck", "human.pedestrian.adult"} <= names
    for scene in nusc.scene:
        samples = _scene_samples(nusc, scene)
        assert len(samples) == scene["nbr_samples"] == SAMPLES
        assert samples[-1]["token"] == scene["last_sample_token"]
        assert samples[0]["prev"] == ""
        assert [s["prev"] for s in samples[1:]] == [s["token"] for s in samples[:-1]]
        assert all(s["scene_token"] == scene["token"] for s in samples)
        assert np.all(np.diff([s["timestamp"] for s in samples]) == 500_000)
        log = nusc.get("log", scene["log_token"])
        assert log["location"] and log["map_token"] == nusc.map[0]["token"]
    assert len(nusc.map) == 1 and (root / nusc.map[0]["filename"]).is_file()
    assert nusc.map[0]["mask"].mask().shape[0] > 0


def test_every_sample_has_the_12_channels_on_disk(nusc: NuScenes) -> None:
    for sample in nusc.sample:
        assert set(sample["data"]) == CHANNELS
        for channel, sample_data_token in sample["data"].items():
            sample_data = nusc.get("sample_data", sample_data_token)
            path = Path(nusc.get_sample_data_path(sample_data_token))
            assert path.is_file(), path
            assert sample_data["filename"].startswith(f"samples/{channel}/")
            assert sample_data["is_key_frame"] and sample_data["sample_token"] == sample["token"]
            assert abs(sample_data["timestamp"] - sample["timestamp"]) < 50_000
            calibration = nusc.get("calibrated_sensor", sample_data["calibrated_sensor_token"])
            if channel in CAMERAS:
                assert sample_data["fileformat"] == "jpg"
                assert (sample_data["height"], sample_data["width"]) == IMAGE_SIZE
                with Image.open(path) as image:
                    assert image.format == "JPEG" and image.size == IMAGE_SIZE[::-1]
                assert np.array(calibration["camera_intrinsic"]).shape == (3, 3)
            else:
                assert sample_data["fileformat"] == "pcd"
                assert sample_data["height"] == sample_data["width"] == 0
                assert calibration["camera_intrinsic"] == []
    # without sweeps, each channel's chain runs through its keyframes
    for scene in nusc.scene:
        samples = _scene_samples(nusc, scene)
        for channel in CHANNELS:
            chain = [nusc.get("sample_data", samples[0]["data"][channel])]
            while chain[-1]["next"]:
                chain.append(nusc.get("sample_data", chain[-1]["next"]))
            assert [sd["token"] for sd in chain] == [s["data"][channel] for s in samples]


def test_point_clouds_load_with_the_devkit(nusc: NuScenes, radar_filters: None) -> None:
    dropped = 0
    for sample in nusc.sample:
        lidar = LidarPointCloud.from_file(nusc.get_sample_data_path(sample["data"][LIDAR]))
        assert lidar.points.shape[0] == 4 and lidar.points.dtype == np.float32
        assert 200 <= lidar.points.shape[1] <= 5000
        for channel in RADARS:
            path = nusc.get_sample_data_path(sample["data"][channel])
            RadarPointCloud.disable_filters()
            raw = RadarPointCloud.from_file(path).points
            assert raw.shape[0] == 18 and raw.shape[1] >= 4
            assert np.all(raw[2] == 0)  # z = 0 in the radar frame
            kept = (
                (raw[INVALID_STATE] == 0)
                & np.isin(raw[DYN_PROP], range(7))
                & (raw[AMBIG_STATE] == 3)
            )
            RadarPointCloud.default_filters()
            filtered = RadarPointCloud.from_file(path).points
            assert filtered.shape == (18, kept.sum())
            np.testing.assert_array_equal(filtered, raw[:, kept])
            dropped += raw.shape[1] - filtered.shape[1]
    assert dropped > 0


def test_boxes_match_the_annotations_and_the_points(nusc: NuScenes, radar_filters: None) -> None:
    RadarPointCloud.disable_filters()  # num_radar_pts counts every return
    for sample in nusc.sample:
        lidar_token = sample["data"][LIDAR]
        boxes = nusc.get_boxes(lidar_token)
        assert sorted(b.token for b in boxes) == sorted(sample["anns"])
        annotations = [nusc.get("sample_annotation", t) for t in sample["anns"]]
        names = [a["category_name"] for a in annotations]
        vehicles = [a for a in annotations if a["category_name"].startswith("vehicle.")]
        assert 2 <= len(vehicles) <= 4 and names.count("human.pedestrian.adult") == 1
        assert any(a["visibility_token"] == "1" for a in annotations)
        assert all(a["attribute_tokens"] == [] for a in annotations)
        pose = nusc.get("ego_pose", nusc.get("sample_data", lidar_token)["ego_pose_token"])
        for a in vehicles:
            distance = np.linalg.norm(np.subtract(a["translation"], pose["translation"])[:2])
            assert distance < 25.0
        # points counted in the boxes, in each sensor's frame
        _, lidar_boxes, _ = nusc.get_sample_data(lidar_token)
        points = LidarPointCloud.from_file(nusc.get_sample_data_path(lidar_token)).points[:3]
        radar_counts = dict.fromkeys(sample["anns"], 0)
        for channel in RADARS:
            _, radar_boxes, _ = nusc.get_sample_data(sample["data"][channel])
            path = nusc.get_sample_data_path(sample["data"][channel])
            returns = RadarPointCloud.from_file(path).points[:3]
            for box in radar_boxes:
                radar_counts[box.token] += int(points_in_box(box, returns).sum())
        for box in lidar_boxes:
            annotation = nusc.get("sample_annotation", box.token)
            assert points_in_box(box, points).sum() == annotation["num_lidar_pts"] > 0
            assert radar_counts[box.token] == annotation["num_radar_pts"]
        assert sum(radar_counts[a["token"]] for a in vehicles) > 0
    for instance in nusc.instance:
        chain = [nusc.get("sample_annotation", instance["first_annotation_token"])]
        while chain[-1]["next"]:
            chain.append(nusc.get("sample_annotation", chain[-1]["next"]))
        assert len(chain) == instance["nbr_annotations"] == SAMPLES
        assert chain[-1]["token"] == instance["last_annotation_token"]
        assert len({a["instance_token"] for a in chain}) == 1
        steps = np.linalg.norm(np.diff([a["translation"] for a in chain], axis=0), axis=1)
        assert np.all((steps > 0.1) & (steps < 5.0))  # moving, slightly


def test_vehicle_centres_project_into_the_camera_facing_them(nusc: NuScenes) -> None:
    height, width = IMAGE_SIZE
    for sample in nusc.sample:
        for token in sample["anns"]:
            annotation = nusc.get("sample_annotation", token)
            if not annotation["category_name"].startswith("vehicle."):
                continue
            channel = _facing_camera(nusc, sample, np.array(annotation["translation"]))
            camera_token = sample["data"][channel]
            box = _in_sensor_frame(nusc, nusc.get_box(token), camera_token)
            calibration = nusc.get(
                "calibrated_sensor",
                nusc.get("sample_data", camera_token)["calibrated_sensor_token"],
            )
            assert box.center[2] > 1.0  # in front of the camera
            u, v, _ = view_points(
                box.center[:, None], np.array(calibration["camera_intrinsic"]), normalize=True
            )[:, 0]
            assert 0 <= u < width and 0 <= v < height, (channel, u, v)
            # the devkit sees the box in that image, and the image shows a bright box there
            _, boxes, _ = nusc.get_sample_data(camera_token)
            assert token in [b.token for b in boxes]
            with Image.open(nusc.get_sample_data_path(camera_token)) as image:
                red, green, blue = np.asarray(image.convert("RGB"))[int(v), int(u)].astype(int)
            assert max(red, green) - blue > 80, (channel, red, green, blue)


def test_the_scenes_are_in_the_mini_splits() -> None:
    splits = create_splits_scenes()
    assert TRAIN_SCENE in splits["mini_train"] and VAL_SCENE in splits["mini_val"]


def test_same_seed_same_files(tmp_path: Path) -> None:
    first = _files(write_nuscenes_fixture(tmp_path / "a", samples_per_scene=2, seed=5))
    again = _files(write_nuscenes_fixture(tmp_path / "b", samples_per_scene=2, seed=5))
    other = _files(write_nuscenes_fixture(tmp_path / "c", samples_per_scene=2, seed=6))
    assert first == again
    assert first[f"{VERSION}/sample_annotation.json"] != other[f"{VERSION}/sample_annotation.json"]


def test_sweeps_precede_the_keyframes(tmp_path: Path) -> None:
    root = write_nuscenes_fixture(tmp_path / "sweeps", samples_per_scene=2, sweeps=2)
    nusc = _open(root)
    sweeps = [sd for sd in nusc.sample_data if not sd["is_key_frame"]]
    assert len(sweeps) == 2 * 2 * (1 + len(RADARS))
    for sweep in sweeps:
        assert sweep["channel"] in {LIDAR, *RADARS}
        assert sweep["filename"].startswith(f"sweeps/{sweep['channel']}/")
        assert Path(nusc.get_sample_data_path(sweep["token"])).is_file()
    for scene in nusc.scene:
        samples = _scene_samples(nusc, scene)
        for channel in CHANNELS:
            keyframes = [nusc.get("sample_data", s["data"][channel]) for s in samples]
            for previous, keyframe in zip([None, *keyframes[:-1]], keyframes):
                before = previous["token"] if previous else ""
                if channel in CAMERAS:
                    assert keyframe["prev"] == before
                    continue
                sweep = nusc.get("sample_data", keyframe["prev"])
                assert not sweep["is_key_frame"] and sweep["next"] == keyframe["token"]
                assert sweep["prev"] == before and sweep["channel"] == channel
                assert sweep["sample_token"] == keyframe["sample_token"]
                assert sweep["timestamp"] < keyframe["timestamp"]
        # the devkit aggregates a keyframe and its sweep; a sweep's boxes are interpolated
        last = samples[-1]
        points, times = LidarPointCloud.from_file_multisweep(nusc, last, LIDAR, LIDAR, nsweeps=2)
        assert points.points.shape[0] == 4 and len(np.unique(times)) == 2
        for channel in RADARS:
            points, times = RadarPointCloud.from_file_multisweep(
                nusc, last, channel, channel, nsweeps=2
            )
            assert points.points.shape[0] == 18 and len(np.unique(times)) == 2
        sweep_token = nusc.get("sample_data", last["data"][LIDAR])["prev"]
        assert len(nusc.get_boxes(sweep_token)) == len(last["anns"])
    # the keyframes' files do not depend on the sweeps
    plain = write_nuscenes_fixture(tmp_path / "plain", samples_per_scene=2)
    for name, data in _files(plain).items():
        if name.startswith("samples/"):
            assert (root / name).read_bytes() == data, name
