"""BraTS2020 (Section 4.1): read, validate, crop and normalise cases, cache them, split them.

Expected layout under ``root`` (the official ``MICCAI_BraTS2020_TrainingData`` folder)::

    BraTS20_Training_001/BraTS20_Training_001_{t1,t1ce,flair,t2,seg}.nii.gz
    BraTS20_Training_002/...
    ...                                     (369 cases; other files and folders are ignored)

A case folder is any folder named ``BraTS20_Training_<digits>``; its five files must carry the
folder's name. ``.nii.gz`` is looked for first, then ``.nii`` (some copies ship uncompressed
files; some copies of the release also name case 355's segmentation
``W39_1998.09.19_Segm.nii``: rename it to ``BraTS20_Training_355_seg.nii``).

Modalities come in the fixed order ``MODALITIES = ("t1", "t1ce", "flair", "t2")``: channel ``c``
of a case's image is ``MODALITIES[c]``. (The paper's missing-rate presets treat T1 and T1c as one
rate group; that grouping belongs to the task, not to this reader. mmFormer stacks
``flair, t1ce, t1, t2`` instead.)

Preprocessing of one case (:func:`read_case`), as mmFormer's ``preprocess.py`` except where noted:

1. The brain mask is the set of voxels where any of the four sequences is non-zero.
2. Every sequence and the label map are cropped to the mask's bounding box, widened by
   ``margin`` voxels per side (clipped to the volume; default 0). mmFormer widens each axis to at
   least 128 instead; random or sliding 128^3 windows are the task's business.
3. Each sequence is z-scored with the mean and standard deviation of its brain voxels; voxels
   outside the mask are set to 0 (mmFormer leaves them at the constant ``-mean/std``). A sequence
   that is constant over the brain (std 0) is an error, not a silent division by 1.
4. Segmentation labels {0, 1, 2, 4} (background, NCR/NET, edema, enhancing tumour) become the
   class indices {0, 1, 2, 3}: 4 is remapped to 3, as mmFormer does, so the label map can index a
   4-class softmax directly. :func:`regions` turns class maps into the evaluated regions
   WT = {1, 2, 3}, TC = {1, 3}, ET = {3} (labels {1, 2, 4}, {1, 4}, {4}).

Every volume of a case, the label map included, is first reoriented to the closest canonical
(RAS+) orientation by ``nibabel.as_closest_canonical`` (flips and axis permutations of the stored
voxels, no resampling), so a case stored in another orientation gives the same arrays as one
stored in the usual one. Arrays are in that reoriented grid: for BraTS 240 x 240 x 155, named
``[D, H, W]`` below; ``bbox`` and ``source_shape`` refer to it.

Decoding 5 ``.nii.gz`` files per case costs about a second, so :func:`preprocess_brats` (or
:class:`BratsCache`) writes each preprocessed case once to ``cache_dir/<case>.npz`` and later
loads take a single ``np.load``; see :class:`BratsCache` for how stale and corrupt cache files
are detected and rebuilt.

The paper's 219/50/100 train/validation/test split is drawn by :func:`brats_split` (seeded) and
written and read back by :func:`save_split` / :func:`load_split`.

New cases, without a segmentation (:func:`list_new_cases`, :func:`read_new_case`): any folder
holding some of the four sequences named ``<folder>_{t1,t1ce,flair,t2}.nii[.gz]`` (e.g. the
official ``BraTS20_Validation_XXX`` folders); a sequence whose file is missing is absent from
the case. :func:`write_label_map` writes a predicted class map of such a case as a NIfTI file
in the grid (shape, orientation, affine) of its sequences as stored, with the BraTS labels.

Every problem with the data raises ``ValueError`` naming the case and the file: a missing or
unreadable file, a file named for another case, sequences of different shapes or affines (after
the reorientation), a non-3-D volume, NaN or inf in a sequence, a label outside {0, 1, 2, 4}, an
empty brain mask, or a sequence constant over the brain.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TypeVar

import numpy as np
import torch

from mce.data.brats_split import (  # re-exported: the reader's public names
    SPLIT_SIZES,
    BratsSplit,
    brats_split,
    load_split,
    save_split,
    split_sizes,
)
from mce.support.checkpoint import write_atomic
from mce.support.optional import require

__all__ = [
    "MODALITIES",
    "REGIONS",
    "SPLIT_SIZES",
    "BratsCache",
    "BratsCase",
    "BratsSplit",
    "NewCase",
    "brats_split",
    "case_files",
    "list_cases",
    "list_new_cases",
    "load_split",
    "preprocess_brats",
    "read_case",
    "read_new_case",
    "regions",
    "save_split",
    "split_sizes",
    "write_label_map",
]

MODALITIES = ("t1", "t1ce", "flair", "t2")
SEG = "seg"
LABEL_VALUES = (0, 1, 2, 4)  # BraTS segmentation labels; label LABEL_VALUES[k] -> class k
CLASSES = ("background", "NCR/NET", "edema", "enhancing tumour")
REGIONS = ("WT", "TC", "ET")
# region -> the class indices (after 4 -> 3) it unites
REGION_CLASSES: dict[str, tuple[int, ...]] = {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}
CASE_PATTERN = re.compile(r"BraTS20_Training_\d+")
EXTENSIONS = (".nii.gz", ".nii")
AFFINE_ATOL = 1e-3  # mm; the largest entry-wise affine difference accepted between a case's files
CACHE_FORMAT = 2  # bump when the preprocessing changes: every cache file is then rebuilt
MANIFEST = "manifest.json"
_ARRAYS = ("image", "label", "bbox", "source_shape")

_T = TypeVar("_T", np.ndarray, torch.Tensor)


@dataclass(frozen=True)
class BratsCase:
    """One preprocessed case.

    Attributes:
        case_id: the case folder's name, e.g. ``BraTS20_Training_001``.
        image: float32 [4, D, H, W], the sequences in ``MODALITIES`` order, cropped, z-scored
            over the brain, 0 outside it.
        label: uint8 [D, H, W], class indices 0..3 (BraTS label 4 -> 3).
        bbox: int64 [3, 2], per axis the ``[start, stop)`` of the crop in the source grid.
        source_shape: the source volumes' shape (D, H, W) before the crop.
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray
    bbox: np.ndarray
    source_shape: tuple[int, int, int]

    @property
    def brain(self) -> np.ndarray:
        """bool [D, H, W]: the brain mask (voxels where any sequence was non-zero)."""
        return np.any(self.image != 0, axis=0)


def _nibabel() -> ModuleType:
    return require("nibabel", "brats", "reading BraTS")


def list_cases(root: str | os.PathLike[str]) -> list[str]:
    """The sorted case ids (folder names ``BraTS20_Training_<digits>``) under ``root``.

    Raises:
        ValueError: ``root`` is not a folder or holds no case folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"BraTS root {root} is not a folder")
    cases = sorted(p.name for p in root.iterdir() if p.is_dir() and CASE_PATTERN.fullmatch(p.name))
    if not cases:
        raise ValueError(
            f"BraTS root {root} holds no case folder (expected BraTS20_Training_XXX/ folders, "
            "e.g. the MICCAI_BraTS2020_TrainingData folder)"
        )
    return cases


def case_files(case_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """The five files of one case: ``MODALITIES`` then ``"seg"`` -> path.

    Raises:
        ValueError: a file is missing (naming the case, the file, and any file of that kind
            that carries another case's name).
    """
    case_dir = Path(case_dir)
    case = case_dir.name
    if not case_dir.is_dir():
        raise ValueError(f"BraTS case {case}: folder {case_dir} does not exist")
    files = {}
    for kind in (*MODALITIES, SEG):
        path = _find_file(case_dir, kind)
        if path is None:
            raise ValueError(
                f"BraTS case {case}: file {case}_{kind}.nii.gz is missing in {case_dir}"
            )
        files[kind] = path
    return files


def _find_file(case_dir: Path, kind: str) -> Path | None:
    """``<folder>_<kind>.nii.gz`` (or ``.nii``) in a case folder, None when the folder holds no
    file of that kind.

    Raises:
        ValueError: the folder holds a file of that kind under another name (another case's,
            or other capitals), which would otherwise be taken for a missing sequence.
    """
    case = case_dir.name
    found = [case_dir / f"{case}_{kind}{ext}" for ext in EXTENSIONS]
    found = [path for path in found if path.is_file()]
    if found:
        return found[0]
    others = sorted(
        p.name
        for p in case_dir.iterdir()
        if any(p.name.lower().endswith(f"_{kind}{ext}") for ext in EXTENSIONS)
    )
    if others:
        raise ValueError(
            f"BraTS case {case}: file {case}_{kind}.nii.gz is missing in {case_dir}, which holds "
            f"{', '.join(others)}: file names must start with the folder's name, in lower case "
            f"after it ({case}_{kind}.nii.gz)"
        )
    return None


def _read_volume(case: str, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(data, affine, stored affine) of one NIfTI file reoriented to the closest canonical
    (RAS+) orientation; the data as stored (scaled), squeezed to 3-D; the file's own affine."""
    nibabel = _nibabel()
    try:
        stored = nibabel.load(path)
        image = nibabel.as_closest_canonical(stored)
        affine = np.asarray(image.affine, dtype=np.float64)
        data = np.asarray(image.dataobj)
    except Exception as error:  # gzip, zlib, nibabel and numpy all raise here
        raise ValueError(
            f"BraTS case {case}: file {path.name} is unreadable (corrupt or not NIfTI): {error}"
        ) from error
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(
            f"BraTS case {case}: file {path.name} has shape {list(data.shape)}, expected a 3-D "
            "volume"
        )
    return data, affine, np.asarray(stored.affine, dtype=np.float64)


def _read_grid(
    case: str, files: Mapping[str, Path]
) -> tuple[dict[str, np.ndarray], tuple[int, ...], np.ndarray]:
    """({kind: data}, the shared shape, the first file's stored affine) of a case's files,
    checked to share one grid and one (canonical) affine."""
    volumes: dict[str, np.ndarray] = {}
    first = next(iter(files.values()))
    shape: tuple[int, ...] = ()
    affine = stored = np.eye(4)
    for kind, path in files.items():
        data, this_affine, this_stored = _read_volume(case, path)
        if not volumes:
            shape, affine, stored = data.shape, this_affine, this_stored
        elif data.shape != shape:
            raise ValueError(
                f"BraTS case {case}: file {path.name} has shape {list(data.shape)} but "
                f"{first.name} has {list(shape)}; a case's volumes must share one grid"
            )
        elif not np.allclose(this_affine, affine, rtol=0.0, atol=AFFINE_ATOL):
            worst = float(np.abs(this_affine - affine).max())
            raise ValueError(
                f"BraTS case {case}: file {path.name} has an affine that differs from "
                f"{first.name}'s by up to {worst:.3g} (tolerance {AFFINE_ATOL}); a case's "
                "volumes must be co-registered"
            )
        volumes[kind] = data
    return volumes, shape, stored


def _crop_zscore(
    case: str, volumes: Mapping[str, np.ndarray], files: Mapping[str, Path], margin: int
) -> tuple[np.ndarray, np.ndarray]:
    """(image float32 [4, d, h, w], box int [3, 2]): the brain's bounding box (nonzero in any
    present sequence, plus ``margin``) of the finite ``volumes``, each present sequence z-scored
    over the brain, an absent one zero."""
    brain = np.any(np.stack([volume != 0 for volume in volumes.values()]), axis=0)
    if not brain.any():
        raise ValueError(
            f"BraTS case {case}: empty brain mask: every voxel of "
            f"{', '.join(files[kind].name for kind in volumes)} is 0"
        )
    box = _bbox(brain, margin)
    window = tuple(slice(int(a), int(b)) for a, b in box)
    brain = brain[window]
    image = np.zeros((len(MODALITIES), *brain.shape), dtype=np.float32)
    for channel, kind in enumerate(MODALITIES):
        if kind not in volumes:
            continue
        voxels = volumes[kind][window][brain].astype(np.float64)
        mean, std = voxels.mean(), voxels.std()
        if not std > 0:
            raise ValueError(
                f"BraTS case {case}: file {files[kind].name} is constant ({mean:g}) over the "
                "brain mask (std 0); it cannot be z-scored"
            )
        image[channel][brain] = ((voxels - mean) / std).astype(np.float32)
    return image, box


def _check_margin(margin: object) -> None:
    if isinstance(margin, bool) or not isinstance(margin, int) or margin < 0:
        raise ValueError(f"margin must be a non-negative int, got {margin!r}")


def _label_classes(case: str, path: Path, seg: np.ndarray) -> np.ndarray:
    """uint8 class map (label 4 -> 3) of a segmentation volume; checks its values."""
    if seg.dtype.kind == "f":
        finite = np.isfinite(seg)
        integral = finite & (seg == np.round(np.where(finite, seg, 0)))
        if not integral.all():
            index = tuple(int(i) for i in np.argwhere(~integral)[0])
            raise ValueError(
                f"BraTS case {case}: file {path.name} holds the non-integer label "
                f"{seg[index]!r} at voxel {list(index)}, expected labels {list(LABEL_VALUES)}"
            )
    elif seg.dtype.kind not in "iub":
        raise ValueError(
            f"BraTS case {case}: file {path.name} has dtype {seg.dtype}, expected labels"
        )
    bad = ~np.isin(seg, LABEL_VALUES)
    if bad.any():
        values = np.unique(seg[bad])
        shown = ", ".join(str(int(v)) for v in values[:5])
        raise ValueError(
            f"BraTS case {case}: file {path.name} holds label value(s) {shown} "
            f"({int(bad.sum())} voxels); BraTS labels are {list(LABEL_VALUES)}"
        )
    classes = seg.astype(np.uint8)
    classes[classes == 4] = 3
    return classes


def _finite_volume(case: str, path: Path, data: np.ndarray) -> np.ndarray:
    """A sequence's voxels as float32, checked: numbers, every one finite."""
    if data.dtype.kind not in "iufb":
        raise ValueError(
            f"BraTS case {case}: file {path.name} has dtype {data.dtype}, expected numbers"
        )
    volume = data.astype(np.float32, copy=False)
    if not np.isfinite(volume).all():
        count = int((~np.isfinite(volume)).sum())
        raise ValueError(f"BraTS case {case}: file {path.name} holds NaN or inf in {count} voxels")
    return volume


def _bbox(mask: np.ndarray, margin: int) -> np.ndarray:
    """int64 [ndim, 2] ``[start, stop)`` of the mask's non-zero voxels, widened by margin."""
    box = np.empty((mask.ndim, 2), dtype=np.int64)
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(mask.any(axis=others))
        box[axis] = max(int(hit[0]) - margin, 0), min(int(hit[-1]) + 1 + margin, mask.shape[axis])
    return box


def read_case(case_dir: str | os.PathLike[str], *, margin: int = 0) -> BratsCase:
    """Decodes, checks, crops and normalises one case folder (no cache; see the module doc).

    Args:
        case_dir: the case folder, e.g. ``root / "BraTS20_Training_001"``; its name is the
            case id.
        margin: voxels added on each side of the brain's bounding box (clipped to the volume).

    Returns:
        The case: image float32 [4, D, H, W] in ``MODALITIES`` order, label uint8 [D, H, W]
        with classes 0..3, and the crop box in the source grid.

    Raises:
        ValueError: naming the case and the file, for any problem listed in the module doc.

    Example:
        >>> case = read_case(root / "BraTS20_Training_001")  # doctest: +SKIP
        >>> case.image.shape, case.label.dtype  # doctest: +SKIP
        ((4, 137, 171, 138), dtype('uint8'))
    """
    _check_margin(margin)
    case_dir = Path(case_dir)
    case = case_dir.name
    files = case_files(case_dir)
    data, shape, _ = _read_grid(case, files)
    label = _label_classes(case, files[SEG], data.pop(SEG))
    volumes = {kind: _finite_volume(case, files[kind], data[kind]) for kind in MODALITIES}
    image, box = _crop_zscore(case, volumes, files, margin)
    label = np.ascontiguousarray(label[tuple(slice(int(a), int(b)) for a, b in box)])
    source = tuple(int(s) for s in shape)
    return BratsCase(case, image, label, box, source)  # type: ignore[arg-type]


def regions(label: _T) -> _T:
    """The evaluated tumour regions of a class map: WT {1,2,3}, TC {1,3}, ET {3}.

    Args:
        label: class indices 0..3 as :func:`read_case` returns them (BraTS label 4 already
            remapped to 3), int or uint array or tensor [..., D, H, W].

    Returns:
        bool, [..., 3, D, H, W], the regions in ``REGIONS`` order (WT, TC, ET); ET ⊆ TC ⊆ WT.
        numpy in, numpy out; torch in, torch out (same device).

    Raises:
        ValueError: ``label`` has fewer than 3 axes or a value outside 0..3 (4 means the BraTS
            labels were passed instead of the class indices).

    Example:
        >>> regions(np.array([[[0, 1, 2, 3]]], dtype=np.uint8))[:, 0, 0]
        array([[False,  True,  True,  True],
               [False,  True, False,  True],
               [False, False, False,  True]])
    """
    if label.ndim < 3:
        raise ValueError(f"label must have shape [..., D, H, W], got {list(label.shape)}")
    if label.numel() if isinstance(label, torch.Tensor) else label.size:
        low, high = int(label.min()), int(label.max())
        if low < 0 or high > 3:
            raise ValueError(
                f"label holds values in [{low}, {high}], expected class indices 0..3 (BraTS "
                "label 4 is class 3: pass read_case's label)"
            )
    wt, tc, et = label > 0, (label == 1) | (label == 3), label == 3
    if isinstance(label, torch.Tensor):
        return torch.stack([wt, tc, et], dim=-4)
    return np.stack([wt, tc, et], axis=-4)


# ---- new cases --------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewCase:
    """One case of new files (no segmentation), preprocessed as :func:`read_case`.

    Attributes:
        case_id: the case folder's name.
        image: float32 [4, D, H, W] in ``MODALITIES`` order, cropped to the brain of the
            sequences present and z-scored over it; zeros for a missing sequence.
        present: per modality of ``MODALITIES``, whether its file is there.
        bbox: int64 [3, 2], per axis the ``[start, stop)`` of the crop in the canonical grid.
        source_shape: the canonical grid's shape (D, H, W) before the crop.
        affine: float64 [4, 4], the sequences' affine as stored (before the reorientation).
    """

    case_id: str
    image: np.ndarray
    present: tuple[bool, ...]
    bbox: np.ndarray
    source_shape: tuple[int, int, int]
    affine: np.ndarray


def _sequence_files(case_dir: Path) -> dict[str, Path]:
    """The sequences of a case folder found under their names (``.nii.gz`` first).

    Raises:
        ValueError: a sequence file under another name (:func:`_find_file`).
    """
    found = {kind: _find_file(case_dir, kind) for kind in MODALITIES}
    return {kind: path for kind, path in found.items() if path is not None}


def list_new_cases(root: str | os.PathLike[str]) -> list[str]:
    """The sorted names of the folders under ``root`` that hold a sequence file named after
    them (``<folder>_t1.nii.gz``, ...).

    Raises:
        ValueError: ``root`` is not a folder or holds no such folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"BraTS folder {root} is not a folder")
    cases = sorted(p.name for p in root.iterdir() if p.is_dir() and _sequence_files(p))
    if not cases:
        raise ValueError(
            f"BraTS folder {root} holds no case folder (a folder CASE holding some of "
            "CASE_t1.nii.gz, CASE_t1ce.nii.gz, CASE_flair.nii.gz, CASE_t2.nii.gz)"
        )
    return cases


def read_new_case(case_dir: str | os.PathLike[str], *, margin: int = 0) -> NewCase:
    """Decodes, checks, crops and normalises the sequences of one case folder, as
    :func:`read_case` but without a segmentation and with any sequence possibly missing.

    Raises:
        ValueError: naming the case and the file: no sequence file, or a problem listed in
            the module doc.
    """
    _check_margin(margin)
    case_dir = Path(case_dir)
    case = case_dir.name
    files = _sequence_files(case_dir)
    if not files:
        raise ValueError(
            f"BraTS case {case}: no sequence file ({case}_t1.nii.gz, ...) in {case_dir}"
        )
    data, shape, stored = _read_grid(case, files)
    volumes = {kind: _finite_volume(case, files[kind], volume) for kind, volume in data.items()}
    image, box = _crop_zscore(case, volumes, files, margin)
    present = tuple(kind in volumes for kind in MODALITIES)
    source = tuple(int(s) for s in shape)
    return NewCase(case, image, present, box, source, stored)  # type: ignore[arg-type]


def write_label_map(
    path: str | os.PathLike[str],
    classes: np.ndarray,
    bbox: np.ndarray,
    source_shape: tuple[int, int, int],
    affine: np.ndarray,
) -> None:
    """Write a class map of a case's crop as a NIfTI label map in its files' own grid.

    Args:
        path: the file to write (``.nii.gz`` compresses it).
        classes: class indices 0..3 [d, h, w] of the crop ``bbox`` (its shape).
        bbox: int [3, 2], the crop in the canonical grid (:attr:`NewCase.bbox`).
        source_shape: the canonical grid's shape.
        affine: the case's files' affine as stored: the map takes their orientation, shape
            and affine, with the BraTS labels {0, 1, 2, 4} (class 3 written as 4) as uint8.

    The file is written atomically (a reader never sees a partial map).

    Raises:
        ValueError: ``classes`` is not integer, not the crop's shape or holds a value outside
            0..3; ``bbox`` is not a crop inside ``source_shape``; ``affine`` is not 4 x 4.
    """
    nibabel = _nibabel()
    from nibabel.orientations import (
        apply_orientation,
        axcodes2ornt,
        io_orientation,
        ornt_transform,
    )

    box = np.asarray(bbox, dtype=np.int64)
    shape = tuple(int(s) for s in source_shape)
    if box.shape != (3, 2) or len(shape) != 3 or not all(
        0 <= a <= b <= s for (a, b), s in zip(box.tolist(), shape)
    ):
        raise ValueError(f"bbox {box.tolist()} is not a crop [3, 2] of the grid {list(shape)}")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be 4 x 4, got shape {list(affine.shape)}")
    crop = tuple(int(b - a) for a, b in box)
    classes = np.asarray(classes)
    if not np.issubdtype(classes.dtype, np.integer):
        raise ValueError(f"classes must hold integer class indices 0..3, got {classes.dtype}")
    if classes.shape != crop:
        raise ValueError(f"classes has shape {list(classes.shape)}, the crop {list(crop)}")
    if classes.size and (classes.min() < 0 or classes.max() > 3):
        raise ValueError("classes must hold class indices 0..3")
    full = np.zeros(shape, dtype=np.uint8)
    full[tuple(slice(int(a), int(b)) for a, b in box)] = np.asarray(LABEL_VALUES, np.uint8)[
        classes.astype(np.int64)
    ]
    to_stored = ornt_transform(axcodes2ornt(("R", "A", "S")), io_orientation(affine))
    stored = np.ascontiguousarray(apply_orientation(full, to_stored)).astype(np.uint8)
    image = nibabel.Nifti1Image(stored, affine)
    image.header.set_data_dtype(np.uint8)
    data = image.to_bytes()
    if str(path).endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    write_atomic(path, lambda file: file.write(data))


# ---- cache ------------------------------------------------------------------------------------


def _stat(path: Path) -> list[int]:
    info = path.stat()
    return [info.st_size, info.st_mtime_ns]


class BratsCache:
    """Preprocessed cases of ``root`` stored once under ``cache_dir``, loaded with ``np.load``.

    Layout: ``cache_dir/<case>.npz`` (uncompressed ``image``, ``label``, ``bbox``,
    ``source_shape``) and ``cache_dir/manifest.json``, which records the cache format, the
    ``margin``, and per case the size and mtime (ns) of each of its 5 source files and of its
    cache file, and the sha256 of the cache file's arrays (their names, dtypes, shapes and
    bytes). Files are written to a temporary name, fsynced and renamed, so an interrupted run
    leaves no half-written cache file under a real name.

    A case's cache file is *fresh* when the manifest has its entry, the format and margin match,
    and every recorded size and mtime equals the file's current one; otherwise it is rebuilt
    from the source. Editing, replacing or touching a source file, and writing to a cache file,
    therefore rebuild the case. A cache file whose bytes changed with its size and mtime kept
    fails the zip CRC check or, when its arrays were rewritten as a valid file, the sha256
    check when :meth:`load` reads it, and is rebuilt with a warning: a cache file is never
    silently reused. A changed ``margin`` (or format) rebuilds every case: use one ``cache_dir``
    per margin.

    ``cache_dir`` is an explicit argument because the data folder is often read-only; a cache
    inside ``root`` must be hidden (``root/.mce_cache``) or at least not named like a case.

    Args:
        root: the BraTS2020 training folder (see the module doc).
        cache_dir: where the cache lives (created if needed).
        margin: the crop margin of :func:`read_case`.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        cache_dir: str | os.PathLike[str],
        *,
        margin: int = 0,
    ) -> None:
        if isinstance(margin, bool) or not isinstance(margin, int) or margin < 0:
            raise ValueError(f"margin must be a non-negative int, got {margin!r}")
        self.root = Path(root)
        self.cache_dir = Path(cache_dir)
        self.margin = margin
        self._manifest: dict[str, dict[str, list[int] | dict[str, list[int]]]] = {}
        self._manifest_read = False

    @property
    def manifest_path(self) -> Path:
        return self.cache_dir / MANIFEST

    def cache_path(self, case_id: str) -> Path:
        """``cache_dir/<case_id>.npz``."""
        return self.cache_dir / f"{case_id}.npz"

    def case_ids(self) -> list[str]:
        """The case ids found under ``root`` (:func:`list_cases`)."""
        return list_cases(self.root)

    def _read_manifest(self) -> None:
        """Loads the manifest's entries that match this cache's format and margin."""
        self._manifest, self._manifest_read = {}, True
        path = self.manifest_path
        if not path.is_file():
            return
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            data = f"{type(error).__name__}: {error}"
        if not isinstance(data, dict) or not isinstance(data.get("cases"), dict):
            warnings.warn(
                f"BraTS cache manifest {path} is unreadable ({str(data)[:200]}); every case is "
                "rebuilt",
                stacklevel=3,
            )
            return
        if data.get("format") == CACHE_FORMAT and data.get("margin") == self.margin:
            self._manifest = data["cases"]

    def _write_manifest(self) -> None:
        data = {"format": CACHE_FORMAT, "margin": self.margin, "cases": self._manifest}
        text = json.dumps(data, indent=1, sort_keys=True).encode()
        write_atomic(self.manifest_path, lambda file: file.write(text))

    def _sources_stat(self, case_id: str) -> dict[str, list[int]]:
        files = case_files(self.root / case_id)
        return {path.name: _stat(path) for path in files.values()}

    def is_fresh(self, case_id: str) -> bool:
        """Whether ``case_id``'s cache file can be used as is (stat checks only, no read)."""
        if not self._manifest_read:
            self._read_manifest()
        entry = self._manifest.get(case_id)
        path = self.cache_path(case_id)
        if not isinstance(entry, dict) or not path.is_file():
            return False
        try:
            sources = self._sources_stat(case_id)
        except (OSError, ValueError):
            return False  # a missing source: rebuilding reports it by name
        return entry.get("sources") == sources and entry.get("cache") == _stat(path)

    def build(self, case_id: str) -> BratsCase:
        """Preprocesses ``case_id`` from the source, writes its cache file and manifest entry."""
        sources = self._sources_stat(case_id)
        case = read_case(self.root / case_id, margin=self.margin)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        path = self.cache_path(case_id)
        arrays = {
            "image": case.image,
            "label": case.label,
            "bbox": case.bbox,
            "source_shape": np.asarray(case.source_shape, dtype=np.int64),
        }
        write_atomic(path, lambda file: np.savez(file, **arrays))
        self._read_manifest()  # another process may have added entries meanwhile
        self._manifest[case_id] = {
            "sources": sources,
            "cache": _stat(path),
            "sha256": _arrays_sha256(arrays),
        }
        self._write_manifest()
        return case

    def preprocess(self, case_ids: Iterable[str] | None = None) -> list[str]:
        """Builds every case (default: all under ``root``) whose cache file is not fresh.

        Returns:
            The case ids, sorted.

        Raises:
            ValueError: from :func:`read_case`, naming the case and the file.
        """
        ids = self.case_ids() if case_ids is None else sorted(case_ids)
        self._read_manifest()
        for case_id in ids:
            if not self.is_fresh(case_id):
                self.build(case_id)
        return ids

    def load(self, case_id: str) -> BratsCase:
        """The preprocessed case, from its cache file; built first when missing or stale.

        A cache file that fails to load (bad zip, CRC mismatch, missing or malformed array, or
        arrays whose sha256 is not the manifest's) is rebuilt from the source with a
        ``UserWarning``.
        """
        if not self.is_fresh(case_id):
            self._read_manifest()  # another process may have rebuilt it
            if not self.is_fresh(case_id):
                return self.build(case_id)
        path = self.cache_path(case_id)
        try:
            return _load_npz(case_id, path, self._manifest[case_id].get("sha256"))
        except ValueError as error:
            warnings.warn(f"{error}; rebuilding it from {self.root / case_id}", stacklevel=2)
            return self.build(case_id)


def _arrays_sha256(arrays: Mapping[str, np.ndarray]) -> str:
    """The sha256 (hex) of a cache file's arrays: each one's name, dtype, shape and bytes, in
    the order ``image``, ``label``, ``bbox``, ``source_shape``."""
    digest = hashlib.sha256()
    for key in _ARRAYS:
        array = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}|{array.dtype.str}|{list(array.shape)}|".encode())
        digest.update(array)
    return digest.hexdigest()


def _load_npz(case_id: str, path: Path, sha256: object) -> BratsCase:
    """Reads a cache file fully (zip CRCs checked) and checks its arrays and their sha256."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in _ARRAYS}
    except Exception as error:  # zipfile, zlib, numpy and OS errors alike
        raise ValueError(
            f"BraTS case {case_id}: cache file {path} is corrupt ({type(error).__name__}: {error})"
        ) from error
    image, label, bbox, source = (arrays[key] for key in _ARRAYS)
    if (
        image.dtype != np.float32
        or image.ndim != 4
        or image.shape[0] != len(MODALITIES)
        or label.dtype != np.uint8
        or label.shape != image.shape[1:]
        or bbox.shape != (3, 2)
        or source.shape != (3,)
    ):
        raise ValueError(f"BraTS case {case_id}: cache file {path} holds malformed arrays")
    found = _arrays_sha256(arrays)
    if found != sha256:
        raise ValueError(
            f"BraTS case {case_id}: cache file {path} fails its sha256 check (its arrays are "
            f"not the ones written: sha256 {found[:12]}..., the manifest's {str(sha256)[:12]}...)"
        )
    return BratsCase(case_id, image, label, bbox, tuple(int(s) for s in source))  # type: ignore[arg-type]


def preprocess_brats(
    root: str | os.PathLike[str], cache_dir: str | os.PathLike[str], *, margin: int = 0
) -> list[str]:
    """Preprocesses every case under ``root`` into ``cache_dir`` once (see :class:`BratsCache`).

    Args:
        root: the BraTS2020 training folder.
        cache_dir: where ``<case>.npz`` and ``manifest.json`` go (explicit: ``root`` is often
            read-only).
        margin: the crop margin of :func:`read_case`.

    Returns:
        The sorted case ids; load one with ``BratsCache(root, cache_dir).load(case_id)``.

    Raises:
        ValueError: naming the case and the file, for any problem listed in the module doc.

    Example:
        >>> ids = preprocess_brats(root, tmp / "brats_cache")  # doctest: +SKIP
        >>> train, validation, test = brats_split(ids, seed=0)  # doctest: +SKIP
    """
    return BratsCache(root, cache_dir, margin=margin).preprocess()
