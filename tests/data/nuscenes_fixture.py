"""A tiny nuScenes dataroot in the real on-disk layout (v1.0-mini tables, JPEG, .pcd.bin, .pcd), for tests.

Import it from a test in ``tests/data`` as ``from nuscenes_fixture import write_nuscenes_fixture``
(pytest puts the test file's folder on ``sys.path``); from ``tests/`` as
``from data.nuscenes_fixture import write_nuscenes_fixture``.

What ``write_nuscenes_fixture(root)`` writes, as the release's v1.0-mini does::

    v1.0-mini/{attribute,calibrated_sensor,...,visibility}.json   the 13 tables
    maps/<map token>.png                                          the semantic prior mask
    samples/<CHANNEL>/<logfile>__<CHANNEL>__<timestamp>.jpg       camera keyframes
    samples/LIDAR_TOP/<...>.pcd.bin                               float32 (x, y, z, intensity, ring)
    samples/RADAR_*/<...>.pcd                                     binary PCD v0.7, 18 fields
    sweeps/<CHANNEL>/<...>.{pcd.bin,pcd}                          lidar / radar sweeps (sweeps > 1)

Frames, as in nuScenes: global (map) frame with z up and the ground at z = 0; ego frame at the rear
axle on the ground (x forward, y left, z up); each ``calibrated_sensor`` maps its sensor frame to the
ego frame, each ``ego_pose`` maps the ego frame to the global frame (rotations as quaternions
[w, x, y, z], translations in metres, timestamps in microseconds). Cameras use the optical frame
(x right, y down, z forward); the lidar's x points to the ego's right and its y forward.

The fixture does not import the devkit: the tests check it through ``nuscenes-devkit`` itself.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy.spatial.transform import Rotation

VERSION = "v1.0-mini"
CAMERAS = (
    "CAM_FRONT_LEFT",
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_BACK_LEFT",
    "CAM_BACK",
    "CAM_BACK_RIGHT",
)
RADARS = (
    "RADAR_FRONT",
    "RADAR_FRONT_LEFT",
    "RADAR_FRONT_RIGHT",
    "RADAR_BACK_LEFT",
    "RADAR_BACK_RIGHT",
)
LIDAR = "LIDAR_TOP"
CHANNELS = (*CAMERAS, LIDAR, *RADARS)
TRAIN_SCENE = "scene-0061"  # in create_splits_scenes()["mini_train"]
VAL_SCENE = "scene-0103"  # in create_splits_scenes()["mini_val"]
TABLES = (
    "attribute",
    "calibrated_sensor",
    "category",
    "ego_pose",
    "instance",
    "log",
    "map",
    "sample",
    "sample_annotation",
    "sample_data",
    "scene",
    "sensor",
    "visibility",
)

# per scene: name, log file, location, timestamp of its first sample (us), after the release's
SCENES = (
    (TRAIN_SCENE, "n015-2018-07-24-11-22-45+0800", "singapore-onenorth", 1532402927647951),
    (VAL_SCENE, "n008-2018-08-01-15-16-36-0400", "boston-seaport", 1533151603547590),
)

# sensor mounts on the ego: (translation in m, yaw in degrees about the ego's z), nuScenes-like
CAMERA_MOUNTS: dict[str, tuple[tuple[float, float, float], float]] = {
    "CAM_FRONT_LEFT": ((1.52, 0.49, 1.51), 55.0),
    "CAM_FRONT": ((1.70, 0.02, 1.51), 0.0),
    "CAM_FRONT_RIGHT": ((1.55, -0.49, 1.50), -55.0),
    "CAM_BACK_LEFT": ((1.04, 0.48, 1.56), 110.0),
    "CAM_BACK": ((0.03, 0.00, 1.57), 180.0),
    "CAM_BACK_RIGHT": ((1.04, -0.48, 1.56), -110.0),
}
LIDAR_MOUNT: tuple[tuple[float, float, float], float] = ((0.943713, 0.0, 1.84023), -90.0)
RADAR_MOUNTS: dict[str, tuple[tuple[float, float, float], float]] = {
    "RADAR_FRONT": ((3.41, 0.00, 0.50), 0.0),
    "RADAR_FRONT_LEFT": ((2.42, 0.80, 0.78), 90.0),
    "RADAR_FRONT_RIGHT": ((2.41, -0.80, 0.80), -90.0),
    "RADAR_BACK_LEFT": ((-0.56, 0.63, 0.53), 175.0),
    "RADAR_BACK_RIGHT": ((-0.56, -0.61, 0.53), -175.0),
}
# camera (x right, y down, z forward) -> a mount looking along its +x (x forward, y left, z up)
OPTICAL_TO_MOUNT = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
# pinhole (fx = fy, cx, cy) at the release's 900 x 1600 images; the back camera's lens is wider
RELEASE_IMAGE_SIZE = (900, 1600)
FRONT_INTRINSIC = (1266.417, 816.267, 491.507)
BACK_INTRINSIC = (809.221, 829.220, 481.778)

SAMPLE_PERIOD_US = 500_000  # keyframes at 2 Hz
LIDAR_PERIOD_US = 50_000  # 20 Hz sweeps
RADAR_PERIOD_US = 77_000  # ~13 Hz sweeps
# sensor timestamps relative to their sample's (which is the lidar keyframe's), in us
TIME_OFFSETS_US: dict[str, int] = {
    "CAM_FRONT_LEFT": -43_100,
    "CAM_FRONT": -35_500,
    "CAM_FRONT_RIGHT": -27_600,
    "CAM_BACK_LEFT": -500,
    "CAM_BACK": -10_400,
    "CAM_BACK_RIGHT": -20_000,
    LIDAR: 0,
    "RADAR_FRONT": 16_200,
    "RADAR_FRONT_LEFT": 9_200,
    "RADAR_FRONT_RIGHT": 22_700,
    "RADAR_BACK_LEFT": 3_100,
    "RADAR_BACK_RIGHT": 12_600,
}
# Velodyne HDL-32E beam elevations (degrees), ring 0 the lowest
LIDAR_ELEVATIONS = np.linspace(-30.67, 10.67, 32)

# name -> (description, nuScenes-lidarseg index, typical size [w, l, h] in m)
CATEGORIES: dict[str, tuple[str, int, tuple[float, float, float]]] = {
    "human.pedestrian.adult": ("Adult subcategory.", 2, (0.70, 0.70, 1.75)),
    "vehicle.car": ("Vehicle designed primarily for personal use.", 17, (1.90, 4.60, 1.70)),
    "vehicle.truck": ("Vehicle primarily designed to haul cargo.", 23, (2.50, 6.90, 2.90)),
}
ATTRIBUTES: dict[str, str] = {
    "vehicle.moving": "Vehicle is moving.",
    "vehicle.stopped": "Vehicle, with a driver/rider in/on it, is currently stationary.",
    "vehicle.parked": "Vehicle is stationary (usually for longer duration) with no immediate intent "
    "to move.",
    "cycle.with_rider": "There is a rider on the bicycle or motorcycle.",
    "cycle.without_rider": "There is NO rider on the bicycle or motorcycle.",
    "pedestrian.sitting_lying_down": "The human is sitting or lying down.",
    "pedestrian.standing": "The human is standing.",
    "pedestrian.moving": "The human is moving.",
}
# token, level, description
VISIBILITY = (
    ("1", "v0-40", "visibility of whole object is between 0 and 40%"),
    ("2", "v40-60", "visibility of whole object is between 40 and 60%"),
    ("3", "v60-80", "visibility of whole object is between 60 and 80%"),
    ("4", "v80-100", "visibility of whole object is between 80 and 100%"),
)
# image colours of the boxes (bright, saturated: red or green well above blue)
COLOURS: dict[str, tuple[int, int, int]] = {
    "vehicle.car": (240, 40, 40),
    "vehicle.truck": (240, 200, 30),
    "human.pedestrian.adult": (40, 230, 40),
}

# radar returns as the release's RADAR_* .pcd files store them (packed, little-endian)
RADAR_DTYPE = np.dtype(
    [
        ("x", "<f4"),
        ("y", "<f4"),
        ("z", "<f4"),
        ("dyn_prop", "i1"),
        ("id", "<i2"),
        ("rcs", "<f4"),
        ("vx", "<f4"),
        ("vy", "<f4"),
        ("vx_comp", "<f4"),
        ("vy_comp", "<f4"),
        ("is_quality_valid", "i1"),
        ("ambig_state", "i1"),
        ("x_rms", "i1"),
        ("y_rms", "i1"),
        ("invalid_state", "i1"),
        ("pdh0", "i1"),
        ("vx_rms", "i1"),
        ("vy_rms", "i1"),
    ]
)
# (dyn_prop, invalid_state, ambig_state) of the clutter returns of every radar file: the first is
# kept by the devkit's default filters (invalid_state 0, dyn_prop 0..6, ambig_state 3), the others
# are dropped (low RCS, "stopped", "stationary candidate")
RADAR_CLUTTER = ((1, 0, 3), (1, 1, 3), (7, 0, 3), (1, 0, 4))


def token(*parts: object) -> str:
    """A 32-hex token: the md5 of ``parts`` (stable across runs and platforms)."""
    return hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()


def rotation_z(yaw: float) -> np.ndarray:
    """The 3 x 3 rotation by ``yaw`` radians about z."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def quaternion(rotation: np.ndarray) -> list[float]:
    """The quaternion [w, x, y, z] (w >= 0) of a 3 x 3 rotation matrix."""
    x, y, z, w = Rotation.from_matrix(rotation).as_quat()
    sign = 1.0 if w >= 0 else -1.0
    return [float(sign * v) for v in (w, x, y, z)]


@dataclass(frozen=True)
class Frame:
    """A rigid transform from a child frame to its parent: ``parent = rotation @ child + translation``."""

    rotation: np.ndarray  # (3, 3)
    translation: np.ndarray  # (3,)

    def to_parent(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) points of the child frame in the parent frame."""
        return points @ self.rotation.T + self.translation

    def from_parent(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) points of the parent frame in the child frame."""
        return (points - self.translation) @ self.rotation

    def then(self, parent: Frame) -> Frame:
        """This frame composed with ``parent``'s: child -> grandparent."""
        return Frame(parent.rotation @ self.rotation, parent.to_parent(self.translation[None])[0])

    def record(self) -> dict[str, list[float]]:
        """The ``translation`` and ``rotation`` fields of a nuScenes record."""
        return {
            "translation": [float(v) for v in self.translation],
            "rotation": quaternion(self.rotation),
        }


def mount(translation: tuple[float, float, float], yaw_degrees: float, camera: bool) -> Frame:
    """A sensor -> ego transform; a camera's optical z looks along the mount's yaw."""
    rotation = rotation_z(np.radians(yaw_degrees))
    if camera:
        rotation = rotation @ OPTICAL_TO_MOUNT
    return Frame(rotation, np.array(translation, dtype=np.float64))


def intrinsic(channel: str, image_size: tuple[int, int]) -> np.ndarray:
    """The 3 x 3 camera matrix of ``channel``, the release's scaled to ``image_size`` (H, W)."""
    f, cx, cy = BACK_INTRINSIC if channel == "CAM_BACK" else FRONT_INTRINSIC
    sy = image_size[0] / RELEASE_IMAGE_SIZE[0]
    sx = image_size[1] / RELEASE_IMAGE_SIZE[1]
    return np.array([[f * sx, 0.0, cx * sx], [0.0, f * sy, cy * sy], [0.0, 0.0, 1.0]])


def modality(channel: str) -> str:
    """The sensor modality of ``channel``: camera, lidar or radar."""
    if channel in CAMERAS:
        return "camera"
    return "lidar" if channel == LIDAR else "radar"


def sensor_frame(channel: str) -> Frame:
    """The sensor -> ego transform of ``channel``."""
    if channel in CAMERA_MOUNTS:
        return mount(*CAMERA_MOUNTS[channel], camera=True)
    if channel == LIDAR:
        return mount(*LIDAR_MOUNT, camera=False)
    return mount(*RADAR_MOUNTS[channel], camera=False)


@dataclass(frozen=True)
class Ego:
    """The ego vehicle, driving straight at constant speed along its (small) yaw."""

    start: np.ndarray  # ego frame origin at the scene's start (global, m)
    speed: float  # m/s
    yaw: float  # rad

    @property
    def velocity(self) -> np.ndarray:
        """Global velocity (m/s)."""
        return self.speed * np.array([np.cos(self.yaw), np.sin(self.yaw), 0.0])

    def pose(self, t: float) -> Frame:
        """The ego -> global transform ``t`` seconds after the scene's start."""
        return Frame(rotation_z(self.yaw), self.start + self.velocity * t)


@dataclass(frozen=True)
class Agent:
    """An annotated object moving at constant velocity along its heading."""

    category: str
    size: tuple[float, float, float]  # w, l, h (m), nuScenes' order
    start: np.ndarray  # box centre at the scene's start (global, m)
    speed: float  # m/s
    yaw: float  # heading in the global frame (rad): the box's x (length) axis

    @property
    def velocity(self) -> np.ndarray:
        """Global velocity (m/s)."""
        return self.speed * np.array([np.cos(self.yaw), np.sin(self.yaw), 0.0])

    @property
    def half(self) -> np.ndarray:
        """Half extents along the box's own x (length), y (width) and z (height)."""
        w, length, h = self.size
        return 0.5 * np.array([length, w, h])

    def frame(self, t: float) -> Frame:
        """The box -> global transform ``t`` seconds after the scene's start."""
        return Frame(rotation_z(self.yaw), self.start + self.velocity * t)

    def contains(self, points: np.ndarray, t: float, margin: float = 0.0) -> np.ndarray:
        """Which global (N, 3) points lie in the box (grown by ``margin`` m on every side)."""
        local = self.frame(t).from_parent(points)
        return np.all(np.abs(local) <= self.half + margin, axis=1)

    def corners(self, t: float) -> np.ndarray:
        """The 8 box corners (global, (8, 3))."""
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
        return self.frame(t).to_parent(signs * self.half)


def layout(rng: np.random.Generator, ego: Ego, samples: int) -> list[Agent]:
    """2-4 vehicles and one pedestrian around the ego, none overlapping at any keyframe.

    Each vehicle sits 8-18 m from a distinct camera, within 15 degrees of its optical axis (so the
    camera facing it sees it), and drives along with the ego (speed within 0.2 m/s, heading within
    0.03 rad): it moves between keyframes, yet stays within 25 m of the ego. The pedestrian walks
    at 1.4 m/s along the sidewalk, 5-7 m to a side, starting 8-12 m ahead.
    """
    times = np.arange(samples) * SAMPLE_PERIOD_US / 1e6
    for _ in range(1000):
        agents = []
        count = int(rng.integers(2, 5))
        for index in rng.choice(len(CAMERAS), size=count, replace=False):
            position, yaw = CAMERA_MOUNTS[CAMERAS[index]]
            bearing = np.radians(yaw + rng.uniform(-15.0, 15.0))
            distance = rng.uniform(8.0, 18.0)
            category = "vehicle.truck" if rng.random() < 0.3 else "vehicle.car"
            centre = np.array(position) + distance * np.array([np.cos(bearing), np.sin(bearing), 0])
            agents.append(_agent(rng, category, centre, ego, rng.uniform(-0.2, 0.2), 0.03))
        side = rng.choice([-1.0, 1.0])
        centre = np.array([rng.uniform(8.0, 12.0), side * rng.uniform(5.0, 7.0), 0.0])
        agents.append(_agent(rng, "human.pedestrian.adult", centre, ego, 1.4 - ego.speed, 0.0))
        if _apart(agents, ego, times):
            return agents
    raise RuntimeError("no layout without overlaps found")


def _agent(
    rng: np.random.Generator,
    category: str,
    centre: np.ndarray,
    ego: Ego,
    relative_speed: float,
    max_heading: float,
) -> Agent:
    """An agent at ``centre`` (ego frame at the scene's start) heading like the ego, on the ground."""
    size = tuple(float(s) for s in np.array(CATEGORIES[category][2]) * rng.uniform(0.95, 1.05, 3))
    start = ego.pose(0.0).to_parent(centre[None])[0]
    start[2] = size[2] / 2  # on the ground, which is z = 0
    yaw = ego.yaw + rng.uniform(-max_heading, max_heading)
    return Agent(category, size, start, ego.speed + relative_speed, float(yaw))


def _apart(agents: list[Agent], ego: Ego, times: np.ndarray) -> bool:
    """Whether the agents' footprint circles keep 0.5 m apart, and off the ego's, at ``times``."""
    for t in times:
        pose = ego.pose(t)
        body = pose.to_parent(np.array([[1.4, 0.0, 0.0]]))[0]  # middle of the ego's body
        centres = [a.frame(t).translation for a in agents]
        radii = [float(np.hypot(*a.half[:2])) for a in agents]
        for i, centre in enumerate(centres):
            if np.hypot(*(centre - body)[:2]) < radii[i] + 2.6 + 0.5:
                return False
            for j in range(i):
                if np.hypot(*(centre - centres[j])[:2]) < radii[i] + radii[j] + 0.5:
                    return False
    return True


def lidar_scan(
    rng: np.random.Generator, agents: list[Agent], t: float, sensor: Frame
) -> np.ndarray:
    """One LIDAR_TOP sweep: (N, 5) float32 rows (x, y, z, intensity, ring) in the sensor frame.

    ``sensor`` maps the lidar frame to the global frame. The returns are the ground (the rings of
    the downward beams, within ~26 m, not under any box) and points on the boxes' sides and tops,
    slightly inside them (fewer the farther the box).
    """
    height = sensor.translation[2]  # the ground is z = 0
    ground = []
    for elevation in LIDAR_ELEVATIONS[LIDAR_ELEVATIONS < -4.0]:
        reach = height / np.tan(np.radians(-elevation)) * rng.uniform(0.99, 1.01, 32)
        azimuth = np.linspace(0, 2 * np.pi, 32, endpoint=False) + rng.uniform(0, 2 * np.pi / 32)
        local = np.stack([reach * np.cos(azimuth), reach * np.sin(azimuth), np.full(32, -height)])
        ground.append(local.T)
    points = sensor.to_parent(np.concatenate(ground))
    points[:, 2] = rng.normal(0.0, 0.02, len(points))
    for agent in agents:
        points = points[~agent.contains(points, t, margin=0.3)]
    intensity = [rng.uniform(1.0, 12.0, len(points))]
    surfaces = [points]
    for agent in agents:
        surface = _surface_points(rng, agent, t, sensor)
        surfaces.append(surface)
        low, high = (5.0, 40.0) if agent.category.startswith("human") else (15.0, 100.0)
        intensity.append(rng.uniform(low, high, len(surface)))
    local = sensor.from_parent(np.concatenate(surfaces))
    elevation = np.degrees(np.arctan2(local[:, 2], np.hypot(local[:, 0], local[:, 1])))
    step = LIDAR_ELEVATIONS[1] - LIDAR_ELEVATIONS[0]
    ring = np.clip(np.round((elevation - LIDAR_ELEVATIONS[0]) / step), 0, 31)
    scan = np.column_stack([local, np.round(np.concatenate(intensity)), ring])
    return scan.astype(np.float32)


def _surface_points(rng: np.random.Generator, agent: Agent, t: float, sensor: Frame) -> np.ndarray:
    """Global points on ``agent``'s box faces but the bottom, 3% inside them."""
    half = agent.half
    length, width, height = 2 * half
    areas = np.array(
        [length * width, width * height, width * height, length * height, length * height]
    )
    distance = np.linalg.norm(agent.frame(t).translation - sensor.translation)
    count = int(np.clip(40.0 * areas.sum() / distance, 8, 300))
    face = rng.choice(5, size=count, p=areas / areas.sum())
    local = rng.uniform(-1.0, 1.0, (count, 3)) * half * 0.97
    axis = np.array([2, 0, 0, 1, 1])[face]  # top, front, back, left, right
    sign = np.array([1.0, 1.0, -1.0, 1.0, -1.0])[face]
    local[np.arange(count), axis] = sign * half[axis] * 0.97
    return agent.frame(t).to_parent(local)


def radar_scan(
    rng: np.random.Generator, agents: list[Agent], t: float, sensor: Frame, ego: Ego
) -> tuple[np.ndarray, np.ndarray]:
    """One radar sweep: its ``RADAR_DTYPE`` returns (sensor frame) and their global positions.

    Every vehicle within 60 degrees of the radar's axis and 70 m gives 1-3 returns inside its box,
    on the side facing the radar, at the radar's height (z = 0 in the sensor frame, as in the
    release), moving (dyn_prop 0), valid; then come the ``RADAR_CLUTTER`` returns, 40-70 m away.
    ``vx, vy`` are velocities relative to the ego, ``vx_comp, vy_comp`` ego-motion compensated,
    both in the sensor frame.
    """
    rows: list[tuple[np.ndarray, np.ndarray, tuple[int, int, int], float]] = []
    for agent in agents:
        if not agent.category.startswith("vehicle"):
            continue
        box = agent.frame(t)
        centre = sensor.from_parent(box.translation[None])[0]
        if abs(np.arctan2(centre[1], centre[0])) > np.radians(60) or np.hypot(*centre[:2]) > 70:
            continue
        # where the ray from the box centre to the radar leaves the box (shrunk to 85%)
        towards = box.from_parent(sensor.translation[None])[0][:2]
        inner = 0.85 * agent.half
        side = towards * np.min(inner[:2] / np.maximum(np.abs(towards), 1e-9))
        low, high = (10.0, 25.0) if agent.category == "vehicle.truck" else (0.0, 12.0)
        for _ in range(int(rng.integers(1, 4))):
            local = np.zeros(3)
            local[:2] = np.clip(side + rng.uniform(-0.5, 0.5, 2), -inner[:2], inner[:2])
            local[2] = sensor.translation[2] - box.translation[2]  # the radar's height
            position = box.to_parent(local[None])[0]
            rows.append((position, agent.velocity, (0, 0, 3), rng.uniform(low, high)))
    for states in RADAR_CLUTTER:
        azimuth, reach = np.radians(rng.uniform(-50.0, 50.0)), rng.uniform(40.0, 70.0)
        local = np.array([reach * np.cos(azimuth), reach * np.sin(azimuth), 0.0])
        rows.append((sensor.to_parent(local[None])[0], np.zeros(3), states, rng.uniform(-5.0, 5.0)))
    scan = np.zeros(len(rows), dtype=RADAR_DTYPE)
    positions = np.array([row[0] for row in rows])
    local = sensor.from_parent(positions)
    scan["x"], scan["y"], scan["z"] = local.T
    velocity = np.array([row[1] for row in rows]) @ sensor.rotation  # global -> sensor axes
    relative = (np.array([row[1] for row in rows]) - ego.velocity) @ sensor.rotation
    scan["vx"], scan["vy"] = relative[:, 0], relative[:, 1]
    scan["vx_comp"], scan["vy_comp"] = velocity[:, 0], velocity[:, 1]
    states = np.array([row[2] for row in rows])
    scan["dyn_prop"], scan["invalid_state"], scan["ambig_state"] = states.T
    scan["id"] = np.arange(len(rows))
    scan["rcs"] = [row[3] for row in rows]
    scan["is_quality_valid"] = 1
    scan["pdh0"] = 1
    for field in ("x_rms", "y_rms", "vx_rms", "vy_rms"):
        scan[field] = rng.integers(3, 20, len(rows))
    return scan, positions


def write_radar_pcd(path: Path, scan: np.ndarray) -> None:
    """Writes ``RADAR_DTYPE`` returns as a binary PCD v0.7 file, as the release's RADAR_* files.

    The devkit's reader takes the header's lines by position (SIZE on the 4th, DATA on the 11th)
    and asserts that every field ends strictly before the end of the binary block, so the block
    is followed by a newline.
    """
    names = scan.dtype.names
    fields = [scan.dtype.fields[name][0] for name in names]
    header = [
        "# .PCD v0.7 - Point Cloud Data file format",
        "VERSION 0.7",
        "FIELDS " + " ".join(names),
        "SIZE " + " ".join(str(f.itemsize) for f in fields),
        "TYPE " + " ".join("F" if f.kind == "f" else "I" if f.kind == "i" else "U" for f in fields),
        "COUNT " + " ".join("1" for _ in fields),
        f"WIDTH {len(scan)}",
        "HEIGHT 1",
        "VIEWPOINT 0 0 0 1 0 0 0",
        f"POINTS {len(scan)}",
        "DATA binary",
    ]
    path.write_bytes(("\n".join(header) + "\n").encode("ascii") + scan.tobytes() + b"\n")


def camera_image(
    rng: np.random.Generator,
    agents: list[Agent],
    t: float,
    sensor: Frame,
    matrix: np.ndarray,
    image_size: tuple[int, int],
) -> Image.Image:
    """An RGB image: sky and road gradients split at the horizon, light noise, and each box in front
    of the camera drawn as the bright rectangle around its projected corners (farthest first)."""
    height, width = image_size
    rows = np.arange(height, dtype=np.float64)[:, None, None]
    horizon = matrix[1, 2]
    sky = np.array([150.0, 170.0, 200.0]) - 50.0 * np.clip(1 - rows / horizon, 0, 1)
    below = np.clip((rows - horizon) / (height - horizon), 0, 1)
    road = np.array([110.0, 110.0, 110.0]) - 40.0 * below
    pixels = np.where(rows < horizon, sky, road) + rng.normal(0.0, 3.0, (height, width, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    depth = [float(np.linalg.norm(a.frame(t).translation - sensor.translation)) for a in agents]
    for index in np.argsort(depth)[::-1]:
        corners = sensor.from_parent(agents[index].corners(t))
        if np.any(corners[:, 2] < 0.5):
            continue
        uv = corners @ matrix.T
        uv = uv[:, :2] / uv[:, 2:]
        left, top = np.maximum(uv.min(0), 0)
        right, bottom = np.minimum(uv.max(0), [width - 1, height - 1])
        if left < right and top < bottom:
            colour = COLOURS[agents[index].category]
            draw.rectangle((left, top, right, bottom), fill=colour)
    return image


def map_mask(size: int = 64) -> Image.Image:
    """A small semantic prior mask (mode L): a 255 drivable band across a 0 background."""
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[size // 3 : 2 * size // 3] = 255
    return Image.fromarray(mask)


def _write_json(path: Path, rows: list[dict]) -> None:
    """Writes a table as the release does: a JSON list of records."""
    path.write_text(json.dumps(rows, indent=0))


def _link(records: list[dict]) -> None:
    """Fills ``prev`` / ``next`` of time-ordered ``records`` ('' at the ends)."""
    for i, record in enumerate(records):
        record["prev"] = records[i - 1]["token"] if i > 0 else ""
        record["next"] = records[i + 1]["token"] if i + 1 < len(records) else ""


def _write_scene(
    root: Path,
    tables: dict[str, list[dict]],
    scene_index: int,
    samples: int,
    image_size: tuple[int, int],
    seed: int,
    sweeps: int,
) -> None:
    """Writes the files of scene ``SCENES[scene_index]`` and appends its records to ``tables``."""
    name, logfile, location, start_us = SCENES[scene_index]
    rng = np.random.default_rng([seed, scene_index])
    log_token = token(seed, "log", logfile)
    tables["log"].append(
        {
            "token": log_token,
            "logfile": logfile,
            "vehicle": logfile.split("-")[0],
            "date_captured": logfile[5:15],
            "location": location,
        }
    )
    start = np.array([rng.uniform(300.0, 1800.0), rng.uniform(300.0, 1800.0), 0.0])
    ego = Ego(start, float(rng.uniform(4.5, 5.5)), float(rng.uniform(-0.05, 0.05)))
    agents = layout(rng, ego, samples)

    scene_token = token(seed, "scene", name)
    sample_records = [
        {
            "token": token(seed, "sample", name, k),
            "timestamp": start_us + k * SAMPLE_PERIOD_US,
            "scene_token": scene_token,
        }
        for k in range(samples)
    ]
    _link(sample_records)
    tables["sample"].extend(sample_records)
    vehicles = sum(a.category.startswith("vehicle") for a in agents)
    tables["scene"].append(
        {
            "token": scene_token,
            "log_token": log_token,
            "nbr_samples": samples,
            "first_sample_token": sample_records[0]["token"],
            "last_sample_token": sample_records[-1]["token"],
            "name": name,
            "description": f"Follow traffic, {vehicles} vehicles around, pedestrian on sidewalk",
        }
    )

    # points in boxes at the keyframes, per sample and agent
    lidar_points = np.zeros((samples, len(agents)), dtype=int)
    radar_points = np.zeros((samples, len(agents)), dtype=int)
    for channel_index, channel in enumerate(CHANNELS):
        calibration = sensor_frame(channel)
        camera = channel in CAMERAS
        matrix = intrinsic(channel, image_size) if camera else None
        calibrated_token = token(seed, "calibrated_sensor", name, channel)
        tables["calibrated_sensor"].append(
            {
                "token": calibrated_token,
                "sensor_token": token(seed, "sensor", channel),
                **calibration.record(),
                "camera_intrinsic": matrix.tolist() if camera else [],
            }
        )
        period = LIDAR_PERIOD_US if channel == LIDAR else RADAR_PERIOD_US
        step = min(period, SAMPLE_PERIOD_US // sweeps)
        records = []
        for k, sample in enumerate(sample_records):
            keyframe_us = sample["timestamp"] + TIME_OFFSETS_US[channel]
            # the sweeps before a keyframe belong to its sample, the one that follows them
            lags = [0] if camera else list(range(sweeps - 1, -1, -1))
            for lag in lags:
                timestamp = keyframe_us - lag * step
                t = (timestamp - start_us) / 1e6
                pose = ego.pose(t)
                sensor = calibration.then(pose)
                folder = "samples" if lag == 0 else "sweeps"
                extension = "jpg" if camera else "pcd.bin" if channel == LIDAR else "pcd"
                filename = f"{folder}/{channel}/{logfile}__{channel}__{timestamp}.{extension}"
                (root / filename).parent.mkdir(parents=True, exist_ok=True)
                file_rng = np.random.default_rng([seed, scene_index, channel_index, timestamp])
                if camera:
                    image = camera_image(file_rng, agents, t, sensor, matrix, image_size)
                    image.save(root / filename, quality=95)
                elif channel == LIDAR:
                    scan = lidar_scan(file_rng, agents, t, sensor)
                    scan.tofile(root / filename)
                    if lag == 0:
                        positions = sensor.to_parent(scan[:, :3].astype(np.float64))
                        lidar_points[k] = [a.contains(positions, t).sum() for a in agents]
                else:
                    scan, positions = radar_scan(file_rng, agents, t, sensor, ego)
                    write_radar_pcd(root / filename, scan)
                    if lag == 0:
                        radar_points[k] += [a.contains(positions, t).sum() for a in agents]
                sample_data_token = token(seed, "sample_data", name, channel, timestamp)
                # as in the release, an ego pose per sample_data, sharing its token
                tables["ego_pose"].append(
                    {"token": sample_data_token, "timestamp": timestamp, **pose.record()}
                )
                records.append(
                    {
                        "token": sample_data_token,
                        "sample_token": sample["token"],
                        "ego_pose_token": sample_data_token,
                        "calibrated_sensor_token": calibrated_token,
                        "timestamp": timestamp,
                        "fileformat": "jpg" if camera else "pcd",
                        "is_key_frame": lag == 0,
                        "height": image_size[0] if camera else 0,
                        "width": image_size[1] if camera else 0,
                        "filename": filename,
                    }
                )
        _link(records)
        tables["sample_data"].extend(records)

    for i, agent in enumerate(agents):
        annotations = []
        for k, sample in enumerate(sample_records):
            t = k * SAMPLE_PERIOD_US / 1e6
            annotations.append(
                {
                    "token": token(seed, "sample_annotation", name, i, k),
                    "sample_token": sample["token"],
                    "instance_token": token(seed, "instance", name, i),
                    "visibility_token": str(rng.integers(2, 5)),
                    "attribute_tokens": [],
                    "translation": [float(v) for v in agent.frame(t).translation],
                    "size": list(agent.size),
                    "rotation": quaternion(agent.frame(t).rotation),
                    "num_lidar_pts": int(lidar_points[k, i]),
                    "num_radar_pts": int(radar_points[k, i]),
                }
            )
        _link(annotations)
        tables["sample_annotation"].extend(annotations)
        tables["instance"].append(
            {
                "token": token(seed, "instance", name, i),
                "category_token": token(seed, "category", agent.category),
                "nbr_annotations": len(annotations),
                "first_annotation_token": annotations[0]["token"],
                "last_annotation_token": annotations[-1]["token"],
            }
        )
    # the farthest vehicle of every keyframe is barely visible
    scene_annotations = tables["sample_annotation"][-len(agents) * samples :]
    for k in range(samples):
        t = k * SAMPLE_PERIOD_US / 1e6
        distance = [
            np.linalg.norm(a.frame(t).translation - ego.pose(t).translation)
            if a.category.startswith("vehicle")
            else -1.0
            for a in agents
        ]
        scene_annotations[int(np.argmax(distance)) * samples + k]["visibility_token"] = "1"


def write_nuscenes_fixture(
    root: Path,
    samples_per_scene: int = 3,
    image_size: tuple[int, int] = (90, 160),
    seed: int = 0,
    sweeps: int = 1,
) -> Path:
    """Writes a tiny nuScenes dataroot (version ``v1.0-mini``) under ``root``; returns ``root``.

    Two scenes, ``TRAIN_SCENE`` and ``VAL_SCENE`` (one log each, both on one map), each with
    ``samples_per_scene`` keyframes 0.5 s apart, the ego driving straight along global +x at ~5 m/s
    with a small yaw. Every keyframe has the 12 channels: 6 JPEG ``image_size`` (H, W) images, a
    LIDAR_TOP scan and 5 radar scans; with ``sweeps`` > 1, ``sweeps - 1`` lidar and radar sweeps
    precede each keyframe (``sweeps/``), chained with it by ``prev`` / ``next``. Each scene has 2-4
    vehicles (cars, trucks) within 25 m of the ego, each in the view of a distinct camera, and one
    pedestrian, annotated at every keyframe (the farthest vehicle with visibility "1"); the lidar
    and radar returns fall on them (``num_lidar_pts`` / ``num_radar_pts`` count them).

    Deterministic given ``seed`` (>= 0); the keyframes' files do not depend on ``sweeps``.
    """
    if samples_per_scene < 1 or sweeps < 1:
        raise ValueError("samples_per_scene and sweeps must be >= 1")
    root = Path(root)
    (root / VERSION).mkdir(parents=True, exist_ok=True)
    tables: dict[str, list[dict]] = {name: [] for name in TABLES}
    tables["category"] = [
        {"token": token(seed, "category", name), "name": name, "description": text, "index": index}
        for name, (text, index, _) in CATEGORIES.items()
    ]
    tables["attribute"] = [
        {"token": token(seed, "attribute", name), "name": name, "description": text}
        for name, text in ATTRIBUTES.items()
    ]
    tables["visibility"] = [
        {"token": key, "level": level, "description": text} for key, level, text in VISIBILITY
    ]
    tables["sensor"] = [
        {
            "token": token(seed, "sensor", channel),
            "channel": channel,
            "modality": modality(channel),
        }
        for channel in CHANNELS
    ]
    for scene_index in range(len(SCENES)):
        _write_scene(root, tables, scene_index, samples_per_scene, image_size, seed, sweeps)
    map_token = token(seed, "map")
    filename = f"maps/{map_token}.png"
    (root / "maps").mkdir(exist_ok=True)
    map_mask().save(root / filename)
    tables["map"] = [
        {
            "token": map_token,
            "log_tokens": [log["token"] for log in tables["log"]],
            "category": "semantic_prior",
            "filename": filename,
        }
    ]
    for name, rows in tables.items():
        _write_json(root / VERSION / f"{name}.json", rows)
    return root
