"""IEMOCAP (Section 4.1) from the MMIN/RedCore feature release, one cross-validation fold.

Expected layout under ``root`` (as the authors' and RedCore's loaders read it):

    A/comparE.h5            one dataset per utterance id, (T_a, 130) ComParE LLDs + deltas
    A/comparE_mean_std.h5   groups '1'..'10', each with ``mean`` (130,) and ``std`` (130,):
                            the fold's training-frame statistics
    V/denseface.h5          one dataset per utterance id, (T_v, 342) DenseFace features
    L/bert_large.h5         one dataset per utterance id, (T_l, 1024) BERT-large tokens
    target/{fold}/{trn,val,tst}_label.npy      one-hot (N, 4)
    target/{fold}/{trn,val,tst}_int2name.npy   (N, 1) byte strings, the utterance ids

Modalities come in the paper's order ``("acoustic", "lexical", "visual")`` (A, L, V). Each
modality's input is a float32 tensor [N, T_max, F] padded with zeros after each utterance's true
length, which is kept in ``MultimodalData.lengths[name]``. Only the acoustic features are
normalised, ``(x - mean) / std`` with the fold's statistics (zero std read as 1); visual and
lexical features are used raw, as in the reference code.

New utterances, without labels or split lists (:func:`read_iemocap_files`): a folder holding
some of the three feature files; an utterance lacks the modalities whose file does not hold it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
import torch

from mce.data.dataset import MultimodalData
from mce.support.optional import require

if TYPE_CHECKING:
    import h5py

MODALITIES = ("acoustic", "lexical", "visual")
NUM_CLASSES = 4
NUM_FOLDS = 10
# modality -> (file under root, feature width)
FEATURE_FILES: dict[str, tuple[str, int]] = {
    "acoustic": ("A/comparE.h5", 130),
    "lexical": ("L/bert_large.h5", 1024),
    "visual": ("V/denseface.h5", 342),
}
MEAN_STD_FILE = "A/comparE_mean_std.h5"
# split field -> file prefix in target/{fold}/
SPLITS = {"train": "trn", "validation": "val", "test": "tst"}
_MISSING_SHOWN = 3


@dataclass(frozen=True)
class IemocapSplits:
    """The three splits of one fold, and the utterance ids of their samples, in order.

    Attributes:
        train: the fold's training split.
        validation: the fold's validation split (model selection).
        test: the fold's test split.
        ids: split name ("train", "validation", "test") -> utterance id of each sample.
    """

    train: MultimodalData
    validation: MultimodalData
    test: MultimodalData
    ids: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def _h5py() -> ModuleType:
    return require("h5py", "iemocap", "reading IEMOCAP")


def _load_npy(path: Path, allow_pickle: bool) -> np.ndarray:
    if not path.is_file():
        raise ValueError(f"IEMOCAP target file {path} does not exist")
    try:
        return np.load(path, allow_pickle=allow_pickle)
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise ValueError(
                f"IEMOCAP target file {path} holds Python objects (pickled); if you trust the "
                "file, pass allow_pickle=True"
            ) from error
        message = f"IEMOCAP target file {path} is corrupt or not a .npy file: {error}"
        raise ValueError(message) from error
    except (OSError, EOFError) as error:
        message = f"IEMOCAP target file {path} is corrupt or not a .npy file: {error}"
        raise ValueError(message) from error


def _names(path: Path, array: np.ndarray) -> list[str]:
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(
            f"IEMOCAP int2name file {path} has shape {list(array.shape)}, expected [N, 1]"
        )
    names = []
    for row, item in enumerate(array.tolist()):
        if isinstance(item, bytes):
            try:
                item = item.decode()
            except UnicodeDecodeError as error:
                message = f"IEMOCAP int2name file {path}: row {row} is not UTF-8"
                raise ValueError(message) from error
        if not isinstance(item, str) or not item:
            raise ValueError(
                f"IEMOCAP int2name file {path}: row {row} is {item!r}, expected an utterance id"
            )
        names.append(item)
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"IEMOCAP int2name file {path} lists utterance {name!r} twice")
        seen.add(name)
    return names


def _targets(path: Path, labels: np.ndarray, count: int, names_path: Path) -> np.ndarray:
    if labels.ndim != 2 or labels.shape[1] != NUM_CLASSES:
        raise ValueError(
            f"IEMOCAP label file {path} has shape {list(labels.shape)}, expected one-hot "
            f"[N, {NUM_CLASSES}]"
        )
    if labels.shape[0] != count:
        raise ValueError(
            f"IEMOCAP label file {path} has {labels.shape[0]} rows but {names_path} names "
            f"{count} utterances"
        )
    if labels.dtype.kind not in "biuf":
        raise ValueError(f"IEMOCAP label file {path} has dtype {labels.dtype}, expected numbers")
    binary = (labels == 0) | (labels == 1)
    bad = ~binary.all(axis=1) | (labels.sum(axis=1) != 1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"IEMOCAP label file {path}: row {row} is {labels[row].tolist()}, not one-hot "
            f"({int(bad.sum())} such rows)"
        )
    return labels.argmax(axis=1).astype(np.int64)


def _open_h5(path: Path, kind: str = "feature") -> h5py.File:
    h5py = _h5py()
    if not path.is_file():
        raise ValueError(f"IEMOCAP {kind} file {path} does not exist")
    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise ValueError(f"IEMOCAP {kind} file {path} is corrupt or not HDF5: {error}") from error


def _mean_std(path: Path, fold: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    h5py = _h5py()
    with _open_h5(path, "normalisation") as file:
        try:
            group = file.get(str(fold))
            if not isinstance(group, h5py.Group):
                raise ValueError(  # noqa: TRY004 - bad data, not a bad argument
                    f"IEMOCAP normalisation file {path} has no group {str(fold)!r} for fold "
                    f"{fold} (groups: {sorted(file.keys())})"
                )
            stats = {}
            for key in ("mean", "std"):
                item = group.get(key)
                if not isinstance(item, h5py.Dataset):
                    raise ValueError(  # noqa: TRY004 - bad data, not a bad argument
                        f"IEMOCAP normalisation file {path}: group {str(fold)!r} has no dataset "
                        f"{key!r}"
                    )
                value = np.asarray(item[()], dtype=np.float64)
                if value.shape != (width,):
                    raise ValueError(
                        f"IEMOCAP normalisation file {path}: {fold}/{key} has shape "
                        f"{list(value.shape)}, expected [{width}]"
                    )
                if not np.isfinite(value).all():
                    raise ValueError(
                        f"IEMOCAP normalisation file {path}: {fold}/{key} holds NaN or inf"
                    )
                stats[key] = value
        except OSError as error:
            raise ValueError(f"IEMOCAP normalisation file {path} is corrupt: {error}") from error
    if (stats["std"] < 0).any():
        raise ValueError(f"IEMOCAP normalisation file {path}: {fold}/std has negative values")
    std = np.where(stats["std"] == 0, 1.0, stats["std"])
    return stats["mean"], std


def _float32(path: Path, name: str, values: np.ndarray, after: str = "") -> np.ndarray:
    """``values`` as float32; a value beyond float32's range is an error, not an inf."""
    with np.errstate(over="ignore"):
        out = values.astype(np.float32)
    if not np.isfinite(out).all():
        largest = float(np.abs(values).max())
        raise ValueError(
            f"IEMOCAP feature file {path}: utterance {name!r} holds a value beyond float32's "
            f"range{after} (magnitude up to {largest:.3g})"
        )
    return out


def _as_float32(
    path: Path, name: str, array: np.ndarray, normalise: tuple[np.ndarray, np.ndarray] | None
) -> np.ndarray:
    """``array`` as float32, then normalised ``(x - mean) / std`` (in float64) when
    ``normalise`` gives (mean, std); checked against float32's range at both steps."""
    out = _float32(path, name, array)
    if normalise is None:
        return out
    mean, std = normalise
    with np.errstate(over="ignore"):
        normalised = (array.astype(np.float64) - mean) / std
    return _float32(path, name, normalised, " after normalisation with the fold's mean and std")


def _read_features(
    path: Path,
    width: int,
    wanted: list[list[str]],
    max_frames: int | None,
    normalise: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[list[np.ndarray]]:
    """Every split's utterance arrays float32 [T, width] from one h5 file, opened once;
    normalised ``(x - mean) / std`` when ``normalise`` gives (mean, std)."""
    h5py = _h5py()
    with _open_h5(path) as file:
        try:
            keys = set(file.keys())
            for names in wanted:
                missing = [name for name in names if name not in keys]
                if missing:
                    more = len(missing) - _MISSING_SHOWN
                    extra = f" (and {more} more)" if more > 0 else ""
                    shown = ", ".join(repr(name) for name in missing[:_MISSING_SHOWN])
                    raise ValueError(f"IEMOCAP feature file {path} has no utterance {shown}{extra}")
            out = []
            for names in wanted:
                arrays = []
                for name in names:
                    item = file[name]
                    if not isinstance(item, h5py.Dataset):
                        raise ValueError(  # noqa: TRY004 - bad data, not a bad argument
                            f"IEMOCAP feature file {path}: utterance {name!r} is not a dataset"
                        )
                    if item.ndim != 2:
                        raise ValueError(
                            f"IEMOCAP feature file {path}: utterance {name!r} has shape "
                            f"{list(item.shape)}, expected [T, {width}]"
                        )
                    if item.shape[1] != width:
                        raise ValueError(
                            f"IEMOCAP feature file {path}: utterance {name!r} has width "
                            f"{item.shape[1]}, expected {width} (shape {list(item.shape)})"
                        )
                    if item.shape[0] == 0:
                        raise ValueError(
                            f"IEMOCAP feature file {path}: utterance {name!r} has no frames"
                        )
                    if item.dtype.kind not in "biuf":
                        raise ValueError(
                            f"IEMOCAP feature file {path}: utterance {name!r} has dtype "
                            f"{item.dtype}, expected numbers"
                        )
                    array = item[()] if max_frames is None else item[:max_frames]
                    if not np.isfinite(array).all():
                        raise ValueError(
                            f"IEMOCAP feature file {path}: utterance {name!r} holds NaN or inf"
                        )
                    arrays.append(_as_float32(path, name, array, normalise))
                out.append(arrays)
        except OSError as error:
            raise ValueError(f"IEMOCAP feature file {path} is corrupt: {error}") from error
    return out


def _pad(arrays: list[np.ndarray], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = np.array([a.shape[0] for a in arrays], dtype=np.int64)
    padded = np.zeros((len(arrays), int(lengths.max(initial=0)), width), dtype=np.float32)
    for row, array in enumerate(arrays):
        padded[row, : array.shape[0]] = array
    return torch.from_numpy(padded), torch.from_numpy(lengths)


def load_iemocap(
    root: str | Path,
    fold: int,
    *,
    max_frames: Mapping[str, int] | None = None,
    allow_pickle: bool = False,
) -> IemocapSplits:
    """One cross-validation fold of IEMOCAP: train, validation and test splits in memory.

    Args:
        root: the feature folder (``feature_root`` of the reference config), laid out as in the
            module docstring.
        fold: the cross-validation fold, 1 to 10 (``cvNo``).
        max_frames: optional cap on the frames kept per utterance, per modality name (e.g.
            ``{"acoustic": 400}``); frames past the cap are dropped and the stored length is the
            capped one. Default None: every utterance keeps its true length.
        allow_pickle: let ``np.load`` read target files stored as pickled object arrays. Only
            for files you trust; the released files hold plain arrays.

    Returns:
        The three splits. Each has modalities ``MODALITIES``, inputs float32 [N, T_max, F]
        (zeros after each utterance's length), ``lengths[name]`` int64 [N], targets int64 [N]
        (argmax of the one-hot labels) and every modality present.

    Raises:
        ValueError: naming the file (and the utterance id, where one is at fault) when a folder
            or file is missing, a file is corrupt, the fold is outside 1..10 or absent, an
            utterance is missing from a feature file or has the wrong rank or width, no frames,
            NaN/inf values or a value beyond float32's range (as read, or after the acoustic
            normalisation), the fold's normalisation group is missing, labels are not one-hot
            over 4 classes or do not match the ids in number, or the splits share utterances.
        TypeError: when ``fold`` is not an integer.
    """
    root = Path(root)
    if isinstance(fold, bool) or not isinstance(fold, (int, np.integer)):
        raise TypeError(f"IEMOCAP fold must be an integer in 1..{NUM_FOLDS}, got {fold!r}")
    fold = int(fold)
    if not 1 <= fold <= NUM_FOLDS:
        raise ValueError(f"IEMOCAP fold must be in 1..{NUM_FOLDS}, got {fold}")
    caps = dict(max_frames or {})
    unknown = set(caps) - set(MODALITIES)
    if unknown:
        raise ValueError(
            f"max_frames names unknown modalities {sorted(unknown)}; "
            f"expected some of {list(MODALITIES)}"
        )
    for name, cap in caps.items():
        if isinstance(cap, bool) or not isinstance(cap, (int, np.integer)) or cap < 1:
            raise ValueError(f"max_frames[{name!r}] must be a positive integer, got {cap!r}")
    if not root.is_dir():
        raise ValueError(f"IEMOCAP feature folder {root} does not exist")
    for relative, _ in FEATURE_FILES.values():
        if not (root / relative).is_file():
            raise ValueError(f"IEMOCAP feature file {root / relative} does not exist")
    if not (root / MEAN_STD_FILE).is_file():
        raise ValueError(f"IEMOCAP normalisation file {root / MEAN_STD_FILE} does not exist")
    target_dir = root / "target" / str(fold)
    if not target_dir.is_dir():
        raise ValueError(f"IEMOCAP target folder {target_dir} for fold {fold} does not exist")

    names: dict[str, list[str]] = {}
    targets: dict[str, np.ndarray] = {}
    for split, prefix in SPLITS.items():
        names_path = target_dir / f"{prefix}_int2name.npy"
        label_path = target_dir / f"{prefix}_label.npy"
        names[split] = _names(names_path, _load_npy(names_path, allow_pickle))
        if not names[split]:
            raise ValueError(f"IEMOCAP int2name file {names_path} names no utterance")
        labels = _load_npy(label_path, allow_pickle)
        targets[split] = _targets(label_path, labels, len(names[split]), names_path)
    splits = list(SPLITS)
    for i, first in enumerate(splits):
        for second in splits[i + 1 :]:
            shared = set(names[first]) & set(names[second])
            if shared:
                raise ValueError(
                    f"IEMOCAP fold {fold} ({target_dir}): {first} and {second} share "
                    f"{len(shared)} utterances, e.g. {min(shared)!r}"
                )

    mean, std = _mean_std(root / MEAN_STD_FILE, fold, FEATURE_FILES["acoustic"][1])
    wanted = [names[split] for split in splits]
    inputs: dict[str, dict[str, torch.Tensor]] = {split: {} for split in splits}
    lengths: dict[str, dict[str, torch.Tensor]] = {split: {} for split in splits}
    for modality in MODALITIES:
        relative, width = FEATURE_FILES[modality]
        normalise = (mean, std) if modality == "acoustic" else None
        arrays = _read_features(root / relative, width, wanted, caps.get(modality), normalise)
        for split, split_arrays in zip(splits, arrays):
            inputs[split][modality], lengths[split][modality] = _pad(split_arrays, width)

    data = {}
    for split in splits:
        target = torch.from_numpy(targets[split])
        present = torch.full_like(target, (1 << len(MODALITIES)) - 1)
        data[split] = MultimodalData(
            MODALITIES,
            {m: inputs[split][m] for m in MODALITIES},
            target,
            present,
            lengths={m: lengths[split][m] for m in MODALITIES},
        )
    return IemocapSplits(
        data["train"],
        data["validation"],
        data["test"],
        ids={split: tuple(names[split]) for split in splits},
    )


def fold_statistics(path: str | Path, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) [130] of the acoustic features over a fold's training frames, read from a
    ``comparE_mean_std.h5`` (zero std read as 1).

    Raises:
        ValueError: the file is missing or corrupt, or has no group for the fold (named).
    """
    return _mean_std(Path(path), fold, FEATURE_FILES["acoustic"][1])


def read_iemocap_files(
    root: str | Path, acoustic_statistics: tuple[np.ndarray, np.ndarray] | None = None
) -> MultimodalData:
    """Every utterance of a folder of new IEMOCAP features, without labels or split lists.

    Args:
        root: a folder holding some of ``A/comparE.h5``, ``L/bert_large.h5`` and
            ``V/denseface.h5`` (one dataset per utterance id, as the release); an utterance
            lacks the modalities whose file does not hold it.
        acoustic_statistics: (mean, std) that normalise the acoustic features, the training
            fold's (:func:`fold_statistics`); required when ``A/comparE.h5`` is there.

    Returns:
        The utterances in id order, inputs and lengths as :func:`load_iemocap` gives them
        (zeros and length 0 where absent), ``ids`` the utterance ids, targets -1.

    Raises:
        ValueError: no feature file, acoustic features without statistics, or what
            :func:`load_iemocap` raises for a bad feature file or utterance (named).
    """
    root = Path(root)
    files = {m: root / FEATURE_FILES[m][0] for m in MODALITIES}
    files = {m: path for m, path in files.items() if path.is_file()}
    if not files:
        listed = ", ".join(relative for relative, _ in FEATURE_FILES.values())
        raise ValueError(f"IEMOCAP folder {root} holds none of the feature files {listed}")
    if "acoustic" in files and acoustic_statistics is None:
        raise ValueError(
            f"IEMOCAP folder {root} has acoustic features: they need the training fold's mean "
            f"and std ({MEAN_STD_FILE})"
        )
    names: dict[str, list[str]] = {}
    for modality, path in files.items():
        with _open_h5(path) as file:
            names[modality] = sorted(file.keys())
    ids = sorted(set().union(*names.values()))
    if not ids:
        raise ValueError(f"IEMOCAP folder {root}: its feature files hold no utterance")
    row = {name: n for n, name in enumerate(ids)}
    inputs, lengths = {}, {}
    present = torch.zeros(len(ids), dtype=torch.int64)
    for m, modality in enumerate(MODALITIES):
        width = FEATURE_FILES[modality][1]
        arrays = [np.zeros((0, width), dtype=np.float32)] * len(ids)
        if modality in files:
            normalise = acoustic_statistics if modality == "acoustic" else None
            read = _read_features(files[modality], width, [names[modality]], None, normalise)[0]
            for name, array in zip(names[modality], read):
                arrays[row[name]] = array
                present[row[name]] |= 1 << m
        padded, counts = _pad(arrays, width)
        if padded.shape[1] == 0:  # absent everywhere: one frame of zeros
            padded = torch.zeros(len(ids), 1, width)
        inputs[modality], lengths[modality] = padded, counts
    return MultimodalData(
        MODALITIES,
        inputs,
        torch.full((len(ids),), -1, dtype=torch.int64),
        present,
        lengths,
        ids=tuple(ids),
    )
