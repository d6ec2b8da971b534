"""nuScenes (Section 4.1, Tables 1 and 3): vehicle segmentation in bird's-eye view from camera,
LiDAR and radar, after Simple-BEV.

``--data-dir`` is the dataroot nuscenes-devkit opens (see :mod:`mce.data.nuscenes`;
``pip install ".[nuscenes]"``). Training uses the official train split, and every score the val
split (as Simple-BEV and the paper). The BEV frame is a reference camera's: the front camera's
in evaluation, and in training one of the six cameras drawn at random per sample and step
(:class:`RandomReferenceCamera`, Simple-BEV's augmentation; ``reference=front`` turns it off).
Since the training inputs then change every step, factor B's upper bounds U are scored on each
batch's own inputs (:class:`mce.training.pretrain.BatchUpperBounds`: a no-grad unimodal forward per
modality and step).

Modalities are (camera, lidar, radar), the paper's (C, L, R), so the presets a-f mean what
Table 3 means. Recipe: a ResNet-18 camera trunk (stride-8 features; ImageNet weights from a
local torchvision ``resnet18`` state-dict file with ``--task-option camera_weights=PATH``,
random initialisation otherwise) lifted to the voxel grid by projecting voxel centres into each
camera (bilinear sampling, mean over the cameras that see a voxel) and compressed over height;
LiDAR occupancy and radar features rasterised to the same grid on the model's device; each
modality ends in BEV features [128, 200, 200]; the reconstruction Transformer works per BEV cell;
concatenation fusion, a ResNet-style BEV decoder, one logit per cell. Loss: Simple-BEV's
segmentation BCE (pos_weight 2.13, mean over the visible cells) without its learned uncertainty
weight (x10 and exp(-w)) and without its centre and offset heads; utility: the IoU of a row's
prediction (sigmoid > 0.5) over the visible cells. Evaluation: dataset-level IoU (sum of
intersections over sum of unions, Simple-BEV's protocol) per combination and the average over
the 7.

Storage (option ``storage``): "stream" (the default) reads each batch's images and point clouds
from the dataroot when it is needed, the next four on background threads while the current one
trains (and ``workers`` threads across a batch's samples), and holds only the targets, calibrations
and footprints in memory (read from the tables at start; about 100 KB a sample); "memory" reads
every split once at start and holds it (images as uint8: about 6.5 MB a sample at 448 x 800, 2.1 GB
for v1.0-mini's training split, too much for v1.0-trainval's 28,130). Both give the same batches.
Upper-bound models move their batches to the device one at a time and are scored one sample at a
time.

Options (``--task-option NAME=VALUE``, :class:`NuScenesOptions`): ``image_height`` (448),
``image_width`` (800), ``cells`` (200 BEV cells a side over 100 m), ``height_bins`` (8), ``dim``
(128), ``lidar_sweeps`` (1), ``radar_sweeps`` (5), ``camera_weights`` ("": random init),
``version`` ("": the one version folder found), ``workers`` (4 threads reading samples),
``reference`` ("random": a random reference camera in training; "front": the front camera always),
``storage`` ("stream" or "memory"), ``check_files`` ("true": at start, every file the two splits
read is checked to exist and be non-empty, one stat a file, so that a missing file is named before
training rather than when the streaming loader reaches it; "false" skips it). E.g.
``image_height=56 image_width=96 cells=32 dim=16`` for a CPU run. ``workers``, ``storage`` and
``check_files`` change how the data is read, not what a run computes: the upper-bound cache ignores
them, and a run resumes (or an experiment reuses its cells) with other values of them.

Modules: :mod:`~mce.tasks.nuscenes.options` (the options), :mod:`~mce.tasks.nuscenes.data`
(the splits), :mod:`~mce.tasks.nuscenes.augmentation` (the random reference camera),
:mod:`~mce.tasks.nuscenes.model` (the network), :mod:`~mce.tasks.nuscenes.loss` (loss and
utility), :mod:`~mce.tasks.nuscenes.evaluator` (evaluation), :mod:`~mce.tasks.nuscenes.recipe`
(the task).
"""

from mce.tasks.nuscenes.augmentation import RADAR_VELOCITIES, RandomReferenceCamera
from mce.tasks.nuscenes.data import (
    RADAR_CHANNELS,
    VEHICLE_STATE,
    VEHICLES,
    _stack,
    _streamed,
    load_splits,
)
from mce.tasks.nuscenes.evaluator import BevEvaluator, evaluate_bev
from mce.tasks.nuscenes.loss import POS_WEIGHT, bev_loss, intersection_union, iou_utility
from mce.tasks.nuscenes.model import LightHead, bev_grid, build_model, build_unimodal
from mce.tasks.nuscenes.options import REFERENCES, STORAGES, SWITCHES, NuScenesOptions
from mce.tasks.nuscenes.recipe import OPTIONS, TASK, nuscenes_task

__all__ = [
    "TASK",
    "OPTIONS",
    "NuScenesOptions",
    "nuscenes_task",
    "bev_loss",
    "iou_utility",
    "intersection_union",
    "BevEvaluator",
    "evaluate_bev",
    "RandomReferenceCamera",
    "LightHead",
    "bev_grid",
    "build_model",
    "build_unimodal",
    "load_splits",
    "POS_WEIGHT",
    "RADAR_CHANNELS",
    "RADAR_VELOCITIES",
    "REFERENCES",
    "STORAGES",
    "SWITCHES",
    "VEHICLES",
    "VEHICLE_STATE",
    "_stack",
    "_streamed",
]
