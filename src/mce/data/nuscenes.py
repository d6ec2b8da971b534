"""nuScenes (Section 4.1): the samples of an official split, read through nuscenes-devkit, with
every sensor and the target in one bird's-eye-view frame (as Simple-BEV).

``dataroot`` is the folder that holds the version folder (``v1.0-trainval/`` or ``v1.0-mini/``,
with its 13 JSON tables), ``maps/``, ``samples/`` and ``sweeps/``: what the devkit's
``NuScenes(version, dataroot)`` opens. Splits are the devkit's (``create_splits_scenes``):
``train``/``val`` for v1.0-trainval, ``mini_train``/``mini_val`` for v1.0-mini; samples are
ordered by (scene, timestamp).

Frames. The ego frame is that of the LIDAR_TOP keyframe's pose; the reference frame is the
front camera's (x right, y down, z forward), through the camera's calibration; camera poses at
their own timestamps are not used (as Simple-BEV). The BEV grid lies in the reference frame: X
cells across x, Z cells along z (default 200 x 200 over 100 m x 100 m, 0.5 m cells) and
``height_bins`` slices of y in [-4, 6] m (1.25 m for 8 bins).

What a sample holds (:class:`NuScenesSample`):

- ``images``: uint8 [6, 3, H, W], the six cameras in ``CAMERAS`` order resized (bilinear) to
  ``image_size``, with ``intrinsics`` [6, 3, 3] scaled to that size and ``cam_from_ref``
  [6, 4, 4] (reference frame -> each camera);
- ``lidar``: float32 [P, 4], the points of the keyframe and ``lidar_sweeps - 1`` earlier sweeps
  (x, y, z in the reference frame, and the time lag dt in s before the LIDAR_TOP keyframe; a
  radar keyframe a few ms later has a small negative lag), points within 2.2 m of their sensor
  in x-y removed (Simple-BEV removes a 2.2 m square);
- ``radar``: float32 [Q, 3 + 16], the five radars' points of ``radar_sweeps`` sweeps: x, y, z in
  the reference frame, then 16 feature channels: the 15 PCD fields other than x, y, z (dyn_prop,
  id, rcs, vx, vy, vx_comp, vy_comp, is_quality_valid, ambig_state, x_rms, y_rms, invalid_state,
  pdh0, vx_rms, vy_rms; velocities rotated into the reference frame's x-z plane) and dt. No
  radar filter is applied (Simple-BEV's ``use_radar_filters=False``). The paper's "5 position +
  15 non-position" fields are read here as x, y, z (which place a point) and these 15, plus the
  time lag Simple-BEV adds;
- ``target``: float32 [Z, X], 1 inside the footprint of every annotation whose category contains
  "vehicle" (Simple-BEV's superclass; drawn with ``cv2.fillPoly`` as Simple-BEV, which also fills
  the cells the outline crosses), and ``valid`` [Z, X], 0 on the footprints of vehicles
  with visibility "1" (0-40 % visible), which the loss and IoU ignore;
- ``vehicles``: float32 [V, 4, 3], the footprint corners of those annotations in the reference
  frame, and ``hidden`` [V] bool (visibility "1"): what ``target`` and ``valid`` are drawn from
  (:func:`draw_vehicles`), kept so that training can move the reference frame to another camera
  and draw them again.

Every problem raises ``ValueError`` naming it: a dataroot without the version folder, a missing
or unreadable table, a sample file that is missing, a corrupt point cloud or image (a LiDAR file
that is empty or not a whole number of 20-byte points is corrupt).
:meth:`NuScenesReader.check_files` finds a missing or empty file of a split before any is read.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from mce.support.grid import Grid3D
from mce.support.optional import require

__all__ = [
    "MODALITIES",
    "CAMERAS",
    "RADARS",
    "LIDAR",
    "RADAR_FEATURES",
    "SPLITS",
    "NuScenesSample",
    "NuScenesReader",
    "open_nuscenes",
    "split_tokens",
    "all_tokens",
    "draw_vehicles",
]

MODALITIES = ("camera", "lidar", "radar")  # the paper's (C, L, R)
CAMERAS = (
    "CAM_FRONT_LEFT",
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_BACK_LEFT",
    "CAM_BACK",
    "CAM_BACK_RIGHT",
)
REFERENCE_CAMERA = "CAM_FRONT"
LIDAR = "LIDAR_TOP"
RADARS = (
    "RADAR_FRONT",
    "RADAR_FRONT_LEFT",
    "RADAR_FRONT_RIGHT",
    "RADAR_BACK_LEFT",
    "RADAR_BACK_RIGHT",
)
RADAR_FIELDS = (
    "x", "y", "z", "dyn_prop", "id", "rcs", "vx", "vy", "vx_comp", "vy_comp",
    "is_quality_valid", "ambig_state", "x_rms", "y_rms", "invalid_state", "pdh0", "vx_rms",
    "vy_rms",
)  # fmt: skip
RADAR_FEATURES = (*RADAR_FIELDS[3:], "dt")  # the 16 channels after x, y, z
SPLITS = {"v1.0-trainval": ("train", "val"), "v1.0-mini": ("mini_train", "mini_val")}
TABLES = (
    "attribute", "calibrated_sensor", "category", "ego_pose", "instance", "log", "map",
    "sample", "sample_annotation", "sample_data", "scene", "sensor", "visibility",
)  # fmt: skip
LIDAR_RECORD_BYTES = 5 * 4  # a LIDAR_TOP point: x, y, z, intensity, ring as float32
MIN_DISTANCE = 2.2  # m: points closer to their sensor are dropped (Simple-BEV)
_ALL_STATES = list(range(18))  # keep every radar state: no filtering


def _require(module: str) -> ModuleType:
    return require(module, "nuscenes", "the nuscenes task", package="nuscenes-devkit")


@dataclass(frozen=True)
class NuScenesSample:
    """One sample in the reference frame (see the module doc for each array)."""

    token: str
    images: np.ndarray
    intrinsics: np.ndarray
    cam_from_ref: np.ndarray
    lidar: np.ndarray
    radar: np.ndarray
    target: np.ndarray
    valid: np.ndarray
    vehicles: np.ndarray
    hidden: np.ndarray


def open_nuscenes(dataroot: str | os.PathLike[str], version: str | None = None) -> Any:
    """The devkit's ``NuScenes`` of ``dataroot``, checked first so that problems are named.

    Args:
        dataroot: the folder holding the version folder, ``maps/``, ``samples/``, ``sweeps/``.
        version: "v1.0-trainval" or "v1.0-mini"; None: the one version folder found.

    Raises:
        ValueError: no (or an ambiguous) version folder, a missing or unreadable table.
        ImportError: nuscenes-devkit is not installed (the ``nuscenes`` extra).
    """
    devkit = _require("nuscenes.nuscenes")  # first: a missing extra is the first thing to say
    root = Path(dataroot)
    if not root.is_dir():
        raise ValueError(f"nuScenes dataroot {root} is not a folder")
    found = [name for name in SPLITS if (root / name).is_dir()]
    if version is None:
        if len(found) != 1:
            raise ValueError(
                f"nuScenes dataroot {root} must hold exactly one of {', '.join(SPLITS)} "
                f"(found {', '.join(found) or 'none'}; name the version to choose)"
            )
        version = found[0]
    if version not in SPLITS:
        raise ValueError(f"nuScenes version must be one of {', '.join(SPLITS)}, got {version!r}")
    if not (root / version).is_dir():
        raise ValueError(f"nuScenes dataroot {root} has no {version}/ folder of tables")
    tables = [root / version / f"{table}.json" for table in TABLES]
    for path in tables:
        if not path.is_file():
            raise ValueError(f"nuScenes table {path} is missing")
    try:  # the devkit parses every table (v1.0-trainval's take seconds): only once
        return devkit.NuScenes(version=version, dataroot=str(root), verbose=False)
    except (AssertionError, KeyError, OSError, ValueError) as error:
        for path in tables:  # name the table the devkit could not read, if one is at fault
            try:
                with open(path) as file:
                    json.load(file)
            except (OSError, ValueError) as bad:
                raise ValueError(f"nuScenes table {path} is unreadable: {bad}") from error
        raise ValueError(
            f"nuscenes-devkit cannot open {root / version}: {type(error).__name__}: {error}"
        ) from error


def split_tokens(nusc: Any, split: str) -> list[str]:
    """Sample tokens of an official split, ordered by (scene token, timestamp).

    Args:
        split: "train" or "val" (for v1.0-mini: "mini_train" or "mini_val"; "train"/"val" are
            mapped to those).
    """
    train, val = SPLITS[nusc.version]
    split = {"train": train, "val": val}.get(split, split)
    if split not in (train, val):
        raise ValueError(f"split must be train or val for {nusc.version}, got {split!r}")
    scenes = set(_require("nuscenes.utils.splits").create_splits_scenes()[split])
    chosen = [
        sample
        for sample in nusc.sample
        if nusc.get("scene", sample["scene_token"])["name"] in scenes
    ]
    chosen.sort(key=lambda sample: (sample["scene_token"], sample["timestamp"]))
    return [sample["token"] for sample in chosen]


def all_tokens(nusc: Any) -> list[str]:
    """Sample tokens of every sample of the dataroot, whatever its split, ordered by (scene
    token, timestamp).

    Raises:
        ValueError: the dataroot holds no sample.
    """
    samples = sorted(nusc.sample, key=lambda sample: (sample["scene_token"], sample["timestamp"]))
    if not samples:
        raise ValueError(f"nuScenes dataroot {nusc.dataroot} holds no sample")
    return [sample["token"] for sample in samples]


def _transform(translation: Sequence[float], rotation: Sequence[float]) -> np.ndarray:
    """4 x 4 matrix of a (translation, quaternion [w, x, y, z]) pose: child -> parent."""
    quaternion = _require("pyquaternion").Quaternion(rotation)
    matrix = np.eye(4)
    matrix[:3, :3] = quaternion.rotation_matrix
    matrix[:3, 3] = translation
    return matrix


def draw_vehicles(
    corners: np.ndarray, hidden: np.ndarray, grid: Grid3D
) -> tuple[np.ndarray, np.ndarray]:
    """(target, valid), float32 [Z, X] each, of vehicle footprints in a reference frame.

    Args:
        corners: [V, 4, 3] footprint corners (x, y, z in the reference frame; y is ignored).
        hidden: [V] bool, the footprints the loss and IoU ignore (valid = 0 there).
        grid: the BEV grid (cell k of an axis spans [k, k + 1) in cell units).

    Footprints are drawn with ``cv2.fillPoly`` as Simple-BEV, which also fills the cells the
    outline crosses.
    """
    cv2 = _require("cv2")
    cells = grid.cells
    target = np.zeros((cells, cells), dtype=np.uint8)
    hide = np.zeros((cells, cells), dtype=np.uint8)
    for footprint, is_hidden in zip(np.asarray(corners, dtype=np.float64), hidden):
        column = (footprint[:, 0] + grid.half_extent) / grid.cell_size
        row = (footprint[:, 2] + grid.half_extent) / grid.cell_size
        # continuous cell coordinates with 4 fractional bits (shift=4)
        polygon = np.round(np.stack([column, row], 1) * 16 - 8).astype(np.int32)
        cv2.fillPoly(target, [polygon], 1, lineType=cv2.LINE_8, shift=4)
        if is_hidden:
            cv2.fillPoly(hide, [polygon], 1, lineType=cv2.LINE_8, shift=4)
    return target.astype(np.float32), (1 - hide).astype(np.float32)


class NuScenesReader:
    """Reads :class:`NuScenesSample` records of an opened dataroot.

    Args:
        nusc: the devkit's ``NuScenes`` (:func:`open_nuscenes`).
        grid: the BEV grid of the target (default: Simple-BEV's 200 x 200 over 100 m).
        image_size: (H, W) of the resized camera images (Simple-BEV: 448 x 800).
        lidar_sweeps: LIDAR_TOP sweeps aggregated per sample (keyframe included).
        radar_sweeps: sweeps aggregated per radar (Simple-BEV's paper model: 5).
    """

    def __init__(
        self,
        nusc: Any,
        grid: Grid3D | None = None,
        image_size: tuple[int, int] = (448, 800),
        lidar_sweeps: int = 1,
        radar_sweeps: int = 5,
    ) -> None:
        if lidar_sweeps < 1 or radar_sweeps < 1:
            raise ValueError("lidar_sweeps and radar_sweeps must be at least 1")
        self.nusc, self.image_size = nusc, tuple(image_size)
        self.grid = Grid3D() if grid is None else grid
        self.lidar_sweeps, self.radar_sweeps = lidar_sweeps, radar_sweeps

    # -- frames ---------------------------------------------------------------------------------

    def _sensor_to_ego(self, sample_data: dict) -> np.ndarray:
        calibration = self.nusc.get("calibrated_sensor", sample_data["calibrated_sensor_token"])
        return _transform(calibration["translation"], calibration["rotation"])

    def _ego_to_global(self, sample_data: dict) -> np.ndarray:
        pose = self.nusc.get("ego_pose", sample_data["ego_pose_token"])
        return _transform(pose["translation"], pose["rotation"])

    def _path(self, sample_data: dict) -> Path:
        path = Path(self.nusc.dataroot) / sample_data["filename"]
        if not path.is_file():
            raise ValueError(f"nuScenes sample file {path} is missing")
        return path

    # -- sensors --------------------------------------------------------------------------------

    def _original_size(self, data: dict) -> tuple[int, int]:
        """(W, H) of a camera's images: the table's, or the file's header when it has none."""
        if data.get("width") and data.get("height"):
            return int(data["width"]), int(data["height"])
        path = self._path(data)
        try:
            with _require("PIL.Image").open(path) as image:
                return image.size
        except (OSError, ValueError) as error:
            raise ValueError(f"nuScenes image {path} is unreadable: {error}") from error

    def _calibrations(
        self, sample: dict, ref_from_ego: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(intrinsics [6, 3, 3] scaled to ``image_size``, cam_from_ref [6, 4, 4])."""
        height, width = self.image_size
        intrinsics = np.zeros((len(CAMERAS), 3, 3), dtype=np.float32)
        cam_from_ref = np.zeros((len(CAMERAS), 4, 4), dtype=np.float32)
        ego_from_ref = np.linalg.inv(ref_from_ego)
        for c, channel in enumerate(CAMERAS):
            data = self.nusc.get("sample_data", sample["data"][channel])
            calibration = self.nusc.get("calibrated_sensor", data["calibrated_sensor_token"])
            k = np.asarray(calibration["camera_intrinsic"], dtype=np.float64)
            if k.shape != (3, 3):
                raise ValueError(
                    f"nuScenes camera {channel} of {data['filename']} has no 3x3 intrinsics"
                )
            original = self._original_size(data)
            scale = np.diag([width / original[0], height / original[1], 1.0])
            intrinsics[c] = scale @ k
            cam_from_ref[c] = np.linalg.inv(self._sensor_to_ego(data)) @ ego_from_ref
        return intrinsics, cam_from_ref

    def read_images(self, token: str) -> np.ndarray:
        """uint8 [6, 3, H, W]: the sample's six camera images resized (bilinear) to
        ``image_size``.

        Raises:
            ValueError: a missing or unreadable image, or one whose size is not its table's.
        """
        image_module = _require("PIL.Image")
        sample = self.nusc.get("sample", token)
        height, width = self.image_size
        images = np.zeros((len(CAMERAS), 3, height, width), dtype=np.uint8)
        for c, channel in enumerate(CAMERAS):
            data = self.nusc.get("sample_data", sample["data"][channel])
            path = self._path(data)
            try:
                with image_module.open(path) as image:
                    size = image.size  # (W, H)
                    resized = image.convert("RGB").resize((width, height), image_module.BILINEAR)
            except (OSError, ValueError) as error:
                raise ValueError(f"nuScenes image {path} is unreadable: {error}") from error
            if size != self._original_size(data):
                raise ValueError(
                    f"nuScenes image {path} is {size[0]} x {size[1]}, its sample_data record "
                    f"says {data['width']} x {data['height']}"
                )
            images[c] = np.asarray(resized).transpose(2, 0, 1)
        return images

    def _sweeps(self, sample: dict, channel: str, count: int) -> list[dict]:
        """The keyframe sample_data of ``channel`` and up to ``count - 1`` earlier sweeps."""
        data = self.nusc.get("sample_data", sample["data"][channel])
        chain = [data]
        while len(chain) < count and chain[-1]["prev"]:
            chain.append(self.nusc.get("sample_data", chain[-1]["prev"]))
        return chain

    def _to_ref(
        self, points: np.ndarray, data: dict, ref_from_global: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(xyz [N, 3] in the reference frame, the sensor -> reference rotation [3, 3])."""
        ref_from_sensor = ref_from_global @ self._ego_to_global(data) @ self._sensor_to_ego(data)
        xyz = points @ ref_from_sensor[:3, :3].T + ref_from_sensor[:3, 3]
        return xyz, ref_from_sensor[:3, :3]

    def sample_files(self, token: str) -> list[Path]:
        """The files :meth:`read` of ``token`` opens: the six camera images, the LIDAR_TOP
        keyframe and its ``lidar_sweeps - 1`` sweeps, each radar's keyframe and its sweeps."""
        sample = self.nusc.get("sample", token)
        records = [self.nusc.get("sample_data", sample["data"][channel]) for channel in CAMERAS]
        records += self._sweeps(sample, LIDAR, self.lidar_sweeps)
        for channel in RADARS:
            records += self._sweeps(sample, channel, self.radar_sweeps)
        root = Path(self.nusc.dataroot)
        return [root / data["filename"] for data in records]

    def check_files(self, tokens: Sequence[str], progress: bool | None = None) -> None:
        """Checks that every file the samples ``tokens`` read exists and is not empty, one
        ``stat`` a file (a file shared by samples once), before any is read.

        Args:
            tokens: the samples, e.g. a split's :func:`split_tokens`.
            progress: show a progress bar; None: only on a terminal.

        Raises:
            ValueError: naming the first missing, empty or unreadable file and the count of
                such files.
        """
        files = dict.fromkeys(path for token in tokens for path in self.sample_files(token))
        bad: list[tuple[Path, str]] = []
        disable = None if progress is None else not progress  # None: tqdm's terminal test
        for path in tqdm(files, desc="check nuScenes files", unit="file", disable=disable):
            try:
                info = path.stat()
            except FileNotFoundError:
                bad.append((path, "missing"))
                continue
            except OSError as error:
                bad.append((path, f"unreadable ({error.strerror})"))
                continue
            if not stat.S_ISREG(info.st_mode):
                bad.append((path, "not a file"))
            elif info.st_size == 0:
                bad.append((path, "empty (0 bytes)"))
        if bad:
            path, problem = bad[0]
            raise ValueError(
                f"nuScenes sample file {path} is {problem}: {len(bad)} of the {len(files)} files "
                "the samples read are missing, empty or unreadable"
            )

    def _lidar(self, sample: dict, ref_from_global: np.ndarray, key_time: float) -> np.ndarray:
        parts = []
        for data in self._sweeps(sample, LIDAR, self.lidar_sweeps):
            path = self._path(data)
            size = path.stat().st_size
            if size == 0:
                raise ValueError(f"nuScenes lidar file {path} is empty (0 bytes)")
            if size % LIDAR_RECORD_BYTES:
                raise ValueError(
                    f"nuScenes lidar file {path} is truncated ({size} bytes, not a whole number "
                    f"of {LIDAR_RECORD_BYTES}-byte points of 5 float32)"
                )
            raw = np.fromfile(path, dtype=np.float32)
            if not np.isfinite(raw).all():
                raise ValueError(f"nuScenes lidar file {path} is corrupt (NaN or inf values)")
            points = raw.reshape(-1, 5)[:, :3].astype(np.float64)
            points = points[np.linalg.norm(points[:, :2], axis=1) > MIN_DISTANCE]
            xyz, _ = self._to_ref(points, data, ref_from_global)
            dt = np.full((len(xyz), 1), key_time - 1e-6 * data["timestamp"])
            parts.append(np.concatenate([xyz, dt], 1))
        return np.concatenate(parts).astype(np.float32)

    def _radar(self, sample: dict, ref_from_global: np.ndarray, key_time: float) -> np.ndarray:
        cloud = _require("nuscenes.utils.data_classes")
        parts = []
        for channel in RADARS:
            for data in self._sweeps(sample, channel, self.radar_sweeps):
                path = self._path(data)
                try:
                    points = cloud.RadarPointCloud.from_file(
                        str(path), _ALL_STATES, _ALL_STATES, _ALL_STATES
                    ).points.T.astype(np.float64)
                except Exception as error:  # the devkit's parser raises many kinds
                    raise ValueError(
                        f"nuScenes radar file {path} is corrupt ({type(error).__name__}: {error})"
                    ) from error
                if points.shape[1] != len(RADAR_FIELDS) or not np.isfinite(points).all():
                    raise ValueError(f"nuScenes radar file {path} is corrupt (fields or NaN)")
                points = points[np.linalg.norm(points[:, :2], axis=1) > MIN_DISTANCE]
                xyz, rotation = self._to_ref(points[:, :3], data, ref_from_global)
                features = points[:, 3:].copy()
                for vx, vy in ((3, 4), (5, 6)):  # vx, vy and vx_comp, vy_comp: sensor -> ref
                    velocity = np.stack([features[:, vx], features[:, vy], 0 * features[:, vx]], 1)
                    rotated = velocity @ rotation.T
                    features[:, vx], features[:, vy] = rotated[:, 0], rotated[:, 2]
                dt = np.full((len(xyz), 1), key_time - 1e-6 * data["timestamp"])
                parts.append(np.concatenate([xyz, features, dt], 1))
        return np.concatenate(parts).astype(np.float32)

    # -- target ---------------------------------------------------------------------------------

    def _vehicles(self, sample: dict, ref_from_global: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(footprint corners [V, 4, 3] in the reference frame, hidden [V] bool) of the vehicle
        annotations; hidden: visibility "1" (0-40 % visible)."""
        corners, hidden = [], []
        for token in sample["anns"]:
            annotation = self.nusc.get("sample_annotation", token)
            if "vehicle" not in annotation["category_name"]:
                continue
            width, length, _ = annotation["size"]  # devkit order: w, l, h
            box_corners = (
                np.array([[length, width], [length, -width], [-length, -width], [-length, width]])
                / 2
            )  # box frame: x forward (length), y left (width)
            box = _transform(annotation["translation"], annotation["rotation"])
            points = np.concatenate([box_corners, np.zeros((4, 1))], 1) @ box[:3, :3].T
            points = points + box[:3, 3]
            corners.append(points @ ref_from_global[:3, :3].T + ref_from_global[:3, 3])
            hidden.append(annotation["visibility_token"] == "1")
        return (
            np.asarray(corners, dtype=np.float32).reshape(-1, 4, 3),
            np.asarray(hidden, dtype=bool),
        )

    # -- a sample -------------------------------------------------------------------------------

    def read_all(self, tokens: Sequence[str], workers: int = 1) -> list[NuScenesSample]:
        """:meth:`read` of every token, in order, on ``workers`` threads (image decoding, file
        reads and most numpy work release the GIL)."""
        if workers <= 1:
            return [self.read(token) for token in tokens]
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(self.read, tokens))

    def _frame(self, token: str, reference: str) -> tuple[dict, np.ndarray, np.ndarray, float]:
        """(the sample record, ref_from_ego, ref_from_global, the LIDAR_TOP keyframe time in s)
        for the camera ``reference``."""
        if reference not in CAMERAS:
            raise ValueError(f"reference must be one of {', '.join(CAMERAS)}, got {reference!r}")
        sample = self.nusc.get("sample", token)
        lidar_key = self.nusc.get("sample_data", sample["data"][LIDAR])
        ego_to_global = self._ego_to_global(lidar_key)
        camera = self.nusc.get("sample_data", sample["data"][reference])
        ref_from_ego = np.linalg.inv(self._sensor_to_ego(camera))
        ref_from_global = ref_from_ego @ np.linalg.inv(ego_to_global)
        return sample, ref_from_ego, ref_from_global, 1e-6 * lidar_key["timestamp"]

    def read_lidar(self, token: str, reference: str = REFERENCE_CAMERA) -> np.ndarray:
        """float32 [P, 4]: the sample's LiDAR points in the frame of camera ``reference``."""
        sample, _, ref_from_global, key_time = self._frame(token, reference)
        return self._lidar(sample, ref_from_global, key_time)

    def read_radar(self, token: str, reference: str = REFERENCE_CAMERA) -> np.ndarray:
        """float32 [Q, 19]: the sample's radar points in the frame of camera ``reference``."""
        sample, _, ref_from_global, key_time = self._frame(token, reference)
        return self._radar(sample, ref_from_global, key_time)

    def read_labels(self, token: str, reference: str = REFERENCE_CAMERA) -> NuScenesSample:
        """The sample from its tables alone (no sensor file read): calibrations, vehicles,
        target and mask; ``images``, ``lidar`` and ``radar`` are empty arrays."""
        sample, ref_from_ego, ref_from_global, _ = self._frame(token, reference)
        intrinsics, cam_from_ref = self._calibrations(sample, ref_from_ego)
        vehicles, hidden = self._vehicles(sample, ref_from_global)
        target, valid = draw_vehicles(vehicles, hidden, self.grid)
        empty = np.zeros((0,), dtype=np.float32)
        return NuScenesSample(
            token=token,
            images=np.zeros((0,), dtype=np.uint8),
            intrinsics=intrinsics,
            cam_from_ref=cam_from_ref,
            lidar=empty,
            radar=empty,
            target=target,
            valid=valid,
            vehicles=vehicles,
            hidden=hidden,
        )

    def read(self, token: str, reference: str = REFERENCE_CAMERA) -> NuScenesSample:
        """The sample ``token`` (see the module doc), in the frame of the camera ``reference``
        (one of ``CAMERAS``; the front camera's by default).

        Raises:
            ValueError: a missing or corrupt file of the sample, named; an unknown camera.
        """
        labels = self.read_labels(token, reference)
        return dataclasses.replace(
            labels,
            images=self.read_images(token),
            lidar=self.read_lidar(token, reference),
            radar=self.read_radar(token, reference),
        )
