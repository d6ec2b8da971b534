"""A tiny IEMOCAP feature folder in the real on-disk layout, for tests.

Import it from a test in ``tests/data`` as ``from iemocap_fixture import write_iemocap_fixture``
(pytest puts the test file's folder on ``sys.path``); from ``tests/`` as
``from data.iemocap_fixture import write_iemocap_fixture``.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

WIDTHS = {"acoustic": 130, "lexical": 1024, "visual": 342}
FILES = {"acoustic": "A/comparE.h5", "lexical": "L/bert_large.h5", "visual": "V/denseface.h5"}
# inclusive frame-count ranges of the written utterances
LENGTHS = {"acoustic": (5, 40), "lexical": (4, 25), "visual": (3, 30)}
NUM_CLASSES = 4
SIGNAL_DIMS = 3  # dims per class carrying the class offset, in every modality
CONSTANT_DIM = 129  # an acoustic dim that is constant: zero std in every fold


def utterance_id(index: int) -> str:
    """Ids shaped like the real ones, e.g. ``Ses01F_impro01_F000``."""
    session = index % 5 + 1
    gender = "FM"[index // 5 % 2]
    speaker = "FM"[index % 2]
    return f"Ses{session:02d}{gender}_impro{index // 10 % 9 + 1:02d}_{speaker}{index:03d}"


def _features(rng: np.random.Generator, modality: str, label: int, length: int) -> np.ndarray:
    width = WIDTHS[modality]
    x = rng.normal(size=(length, width))
    x[:, label * SIGNAL_DIMS : (label + 1) * SIGNAL_DIMS] += 2.0
    if modality == "acoustic":  # raw scale far from standard, so normalisation matters
        x = 3.0 + 2.5 * x
        x[:, CONSTANT_DIM] = 7.0
    return x.astype(np.float32)


def _split(rng: np.random.Generator, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Stratified ~60/20/20 split of the utterance indices (disjoint, no split empty)."""
    parts: dict[str, list[int]] = {"trn": [], "val": [], "tst": []}
    for c in range(NUM_CLASSES):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_val = max(1, round(0.2 * len(members)))
        n_test = max(1, len(members) - round(0.6 * len(members)) - n_val)
        n_train = len(members) - n_val - n_test
        parts["trn"] += members[:n_train].tolist()
        parts["val"] += members[n_train : n_train + n_val].tolist()
        parts["tst"] += members[n_train + n_val :].tolist()
    return {k: rng.permutation(np.array(v, dtype=np.int64)) for k, v in parts.items()}


def write_iemocap_fixture(
    root: Path,
    *,
    utterances: int = 48,
    folds: tuple[int, ...] = (1, 2),
    seed: int = 0,
    max_len: dict[str, int] | None = None,
) -> Path:
    """Writes a small IEMOCAP feature folder under ``root`` and returns ``root``.

    Args:
        root: the folder to write (created if needed).
        utterances: how many utterances (at least 12); labels cycle over the 4 classes.
        folds: the folds to write targets and normalisation groups for (each in 1..10).
        seed: seed of features, lengths and splits.
        max_len: per modality, an upper bound on the frame counts drawn (defaults in
            ``LENGTHS``); the lower bound stays (capped at the upper one).

    Returns:
        ``root``, holding ``A/comparE.h5``, ``A/comparE_mean_std.h5``, ``V/denseface.h5``,
        ``L/bert_large.h5`` and ``target/{fold}/{trn,val,tst}_{label,int2name}.npy``. Class c
        adds 2 to dims ``3c..3c+2`` of every modality; acoustic dim 129 is constant.
    """
    if utterances < 3 * NUM_CLASSES:
        raise ValueError(f"utterances must be at least {3 * NUM_CLASSES} (3 per class)")
    root = Path(root)
    rng = np.random.default_rng(seed)
    ranges = dict(LENGTHS)
    for name, high in (max_len or {}).items():
        low = min(ranges[name][0], high)
        ranges[name] = (low, high)
    ids = [utterance_id(i) for i in range(utterances)]
    labels = np.arange(utterances) % NUM_CLASSES
    features: dict[str, list[np.ndarray]] = {m: [] for m in WIDTHS}
    for i in range(utterances):
        for modality in WIDTHS:
            low, high = ranges[modality]
            length = int(rng.integers(low, high + 1))
            features[modality].append(_features(rng, modality, int(labels[i]), length))

    for modality, relative in FILES.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(root / relative, "w") as file:
            for name, array in zip(ids, features[modality]):
                file.create_dataset(name, data=array)

    with h5py.File(root / "A/comparE_mean_std.h5", "w") as stats:
        for fold in folds:
            split = _split(np.random.default_rng([seed, fold]), labels)
            frames = np.concatenate([features["acoustic"][i] for i in split["trn"]]).astype(
                np.float64
            )
            group = stats.create_group(str(fold))
            group.create_dataset("mean", data=frames.mean(axis=0).astype(np.float32))
            group.create_dataset("std", data=frames.std(axis=0).astype(np.float32))
            folder = root / "target" / str(fold)
            folder.mkdir(parents=True, exist_ok=True)
            for prefix, index in split.items():
                one_hot = np.eye(NUM_CLASSES, dtype=np.float32)[labels[index]]
                names = np.array([[ids[i].encode()] for i in index])
                np.save(folder / f"{prefix}_label.npy", one_hot)
                np.save(folder / f"{prefix}_int2name.npy", names)
    return root
