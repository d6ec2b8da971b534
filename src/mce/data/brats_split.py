"""The paper's BraTS2020 train/validation/test split of case ids: drawn (seeded), saved, reloaded.

219/50/100 of the 369 training cases (Section 4.1), scaled proportionally for other folders.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from mce.support.checkpoint import write_atomic

__all__ = ["SPLIT_SIZES", "BratsSplit", "brats_split", "load_split", "save_split", "split_sizes"]

SPLIT_SIZES = (219, 50, 100)  # the paper's train / validation / test case counts (369 cases)


class BratsSplit(NamedTuple):
    """Case ids of the train, validation and test splits (each sorted)."""

    train: tuple[str, ...]
    validation: tuple[str, ...]
    test: tuple[str, ...]


def split_sizes(count: int, sizes: Sequence[int] = SPLIT_SIZES) -> tuple[int, int, int]:
    """``sizes`` scaled to ``count`` cases by largest remainder, each kept at least 1.

    ``count == sum(sizes)`` gives ``sizes``; any other count gives the proportional sizes
    (floors, then the leftover cases to the largest fractional parts, earlier splits first on
    ties), after which an empty split takes one case from the largest.

    Raises:
        ValueError: ``count`` < 3, or ``sizes`` is not three positive ints.
    """
    if len(sizes) != 3 or any(
        isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s <= 0 for s in sizes
    ):
        raise ValueError(f"sizes must be three positive ints, got {tuple(sizes)!r}")
    if count < 3:
        raise ValueError(f"a train/validation/test split needs at least 3 cases, got {count}")
    total = int(sum(sizes))
    exact = [count * int(s) / total for s in sizes]
    out = [int(x) for x in exact]
    order = sorted(range(3), key=lambda i: (-(exact[i] - out[i]), i))
    for i in order[: count - sum(out)]:
        out[i] += 1
    for i in range(3):
        if out[i] == 0:
            out[max(range(3), key=lambda j: out[j])] -= 1
            out[i] = 1
    return out[0], out[1], out[2]


def brats_split(
    case_ids: Iterable[str], seed: int = 0, sizes: Sequence[int] = SPLIT_SIZES
) -> BratsSplit:
    """The seeded train/validation/test split of the paper (219/50/100 of 369 cases).

    The ids are sorted, permuted by ``np.random.default_rng(seed)``, and cut into
    :func:`split_sizes` pieces, so the split depends only on the set of ids and the seed.

    Args:
        case_ids: the case ids (no duplicates), e.g. from :func:`preprocess_brats`.
        seed: the permutation's seed.
        sizes: the sizes for ``sum(sizes)`` cases; other counts are scaled proportionally.

    Returns:
        ``BratsSplit(train, validation, test)``, each a sorted tuple of ids.

    Raises:
        ValueError: duplicate ids, fewer than 3 ids, or bad ``sizes``.

    Example:
        >>> split = brats_split([f"BraTS20_Training_{i:03d}" for i in range(1, 370)])
        >>> [len(part) for part in split]
        [219, 50, 100]
    """
    ids = sorted(case_ids)
    if len(set(ids)) != len(ids):
        repeated = next(a for a, b in itertools.pairwise(ids) if a == b)
        raise ValueError(f"case_ids lists {repeated!r} more than once")
    n_train, n_val, _ = split_sizes(len(ids), sizes)
    order = np.random.default_rng(seed).permutation(len(ids))
    shuffled = [ids[i] for i in order]
    parts = shuffled[:n_train], shuffled[n_train : n_train + n_val], shuffled[n_train + n_val :]
    return BratsSplit(*(tuple(sorted(part)) for part in parts))


def save_split(path: str | os.PathLike[str], split: BratsSplit) -> None:
    """Writes ``split`` as JSON ``{"train": [...], "validation": [...], "test": [...]}``."""
    data = {name: list(ids) for name, ids in zip(BratsSplit._fields, split)}
    _check_split(data, f"split {tuple(len(ids) for ids in split)}")
    text = json.dumps(data, indent=1).encode()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda file: file.write(text))


def load_split(path: str | os.PathLike[str]) -> BratsSplit:
    """Reads a split written by :func:`save_split`.

    Raises:
        ValueError: the file is missing, not JSON, lacks a split, lists a non-string id, or
            lists an id twice (within or across splits).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"BraTS split file {path} is missing or not JSON: {error}") from error
    _check_split(data, f"BraTS split file {path}")
    return BratsSplit(*(tuple(data[name]) for name in BratsSplit._fields))


def _check_split(data: object, where: str) -> None:
    if not isinstance(data, dict) or set(data) != set(BratsSplit._fields):
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{where} must map exactly {list(BratsSplit._fields)}, got {keys}")
    seen: dict[str, str] = {}
    for name in BratsSplit._fields:
        ids = data[name]
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError(f"{where}: {name!r} must be a list of case ids")
        for case in ids:
            if case in seen:
                raise ValueError(f"{where}: case {case!r} is in {seen[case]!r} and {name!r}")
            seen[case] = name
