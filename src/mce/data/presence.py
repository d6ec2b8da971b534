"""Presence files: which modalities each sample of a split keeps, read from a CSV instead of
drawn, to reproduce a published split (:func:`read_presence`;
:func:`mce.data.masks.presence_from_csv` turns the result into training masks).

Three layouts are read as published, told apart by the header:

- ours: ``sample_token`` (or ``id``), then one column per modality, named as the task names
  them, in any order; per sample a row of its id and 0 (missing) or 1 (present) per modality.
- PASSION's BraTS2020 splits (``datasets/BraTS/brats_split/Brats2020_imb_split_mr*.csv`` of
  PASSION's release, written by its ``generate_imb_mr.py``):
  ``data_name,mask_id,mask,pos_mask_ids``.
- MCE's nuScenes tables (``scene_seg/train_split/nuScenes_imb_*.csv`` of MCE's release):
  ``Camera,LiDAR,RADAR,Count``, matched to the samples by position.

:func:`read_presence` says what each column means and what is checked.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

from mce.data.dataset import MultimodalData

__all__ = ["PASSION_MASKS", "read_csv_rows", "read_presence"]

# PASSION's table of the 15 non-empty BraTS masks (``mask_array`` of its ``datasets_nii.py``):
# mask_id -> (flair, t1ce, t1, t2), True = present.
PASSION_MASKS: tuple[tuple[bool, bool, bool, bool], ...] = (
    (False, False, False, True),
    (False, True, False, False),
    (False, False, True, False),
    (True, False, False, False),
    (False, True, False, True),
    (False, True, True, False),
    (True, False, True, False),
    (False, False, True, True),
    (True, False, False, True),
    (True, True, False, False),
    (True, True, True, False),
    (True, False, True, True),
    (True, True, False, True),
    (False, True, True, True),
    (True, True, True, True),
)
PASSION_HEADER = ("data_name", "mask_id", "mask", "pos_mask_ids")
PASSION_MODALITIES = ("flair", "t1ce", "t1", "t2")  # the order of a row's mask
MCE_NUSCENES_HEADER = ("Camera", "LiDAR", "RADAR", "Count")
MCE_NUSCENES_MODALITIES = ("camera", "lidar", "radar")
ID_COLUMNS = ("sample_token", "id")

_BOOL = r"\s*(True|False)\s*"
_PASSION_MASK = re.compile(rf"\[{_BOOL},{_BOOL},{_BOOL},{_BOOL}\]")
_GRADE_PREFIX = re.compile(r"(?:HG|LG)_(.+)")  # RFNet's renaming: HG_/LG_ + the case folder
_NAMED = 3  # unknown ids named in an error


class _RowError(ValueError):
    """A row that cannot be read; the message says why (the caller adds file and line)."""


class _Layout(NamedTuple):
    """How one layout's rows read: ``parse(row) -> (id, presence per modality in
    ``modalities`` order)``; where ``by_position``, the id is None and row n is sample n."""

    name: str
    modalities: tuple[str, ...]
    parse: Callable[[list[str]], tuple[str | None, tuple[bool, ...]]]
    by_position: bool = False
    hint: str = ""  # what a split mismatch means for this layout


def read_presence(path: str | os.PathLike[str], data: MultimodalData) -> Tensor:
    """The presence bitmasks Tensor[N] int64 that the CSV ``path`` gives the samples of ``data``
    (bit m: ``data.modalities[m]`` is present), in ``data``'s order.

    The header tells the layout:

    - ``sample_token`` or ``id``, then one column per modality of ``data`` (its names, any
      order); per sample a row of its id and 0 (missing) or 1 (present) per modality.
    - ``data_name,mask_id,mask,pos_mask_ids``: PASSION's BraTS2020 splits
      (``Brats2020_imb_split_mr2258.csv``, ...: 219 rows, the training cases of PASSION's split,
      no others; its BraTS2018 files name cases ``Brats18_...``, which no sample here has).
      ``data_name`` is the case with RFNet's grade prefix, ``HG_BraTS20_Training_002`` or
      ``LG_...``, read without it: ``BraTS20_Training_002``, the case folder name that
      :mod:`mce.data.brats` uses as id. ``mask`` is a Python list of four booleans,
      True = present, in the order of PASSION's volumes (flair, t1ce, t1, t2):
      ``"[True, True, True, False]"`` misses T2. ``mask_id`` must be that list's index in
      PASSION's table of the 15 non-empty masks (:data:`PASSION_MASKS`).
      ``pos_mask_ids`` (the masks that PASSION's ``idt_drop`` mode may drop to) is not used.
      ``data`` must have the modalities flair, t1ce, t1 and t2.
    - ``Camera,LiDAR,RADAR,Count``: MCE's nuScenes tables (``nuScenes_imb_258.csv``, ...; the
      digits are the camera, LiDAR and radar missing rates in tenths). No ids: row n is the
      n-th sample of the training split in (scene token, timestamp) order, as MCE's loader
      indexes it and :func:`mce.data.nuscenes.split_tokens` orders ``data``; 28130 rows, the
      v1.0-trainval training split. Camera, LiDAR and RADAR are 0 (missing) or 1 (present)
      and ``Count`` their sum. ``data`` must have the modalities camera, lidar and radar.

    A file must list every sample of the split once and nothing else: the published files list
    their training split only, so an id of no sample of ``data`` is an error (a published
    split reproduces only on the same training samples).

    Raises:
        ValueError: each naming the file, and the line or the sample where there is one: the
            file cannot be read, is empty or has no known header; ``data``'s modalities are not
            the layout's; a row with the wrong number of fields or a value the layout does not
            allow (not 0/1, a ``mask`` not four True/False, a ``mask_id`` that disagrees with
            its mask, a ``Count`` that is not the row's sum); an id listed twice; a row that
            keeps no modality; ids of no sample of ``data`` (the first few named) or a row
            count other than the split's (by position); a sample of ``data`` with no row; a
            row that keeps a modality the data itself lacks; ``data`` without ids where rows
            name samples.
    """
    path = Path(path)
    where = f"presence CSV {path}"
    rows = read_csv_rows(path, where)
    layout = _layout([name.strip() for name in rows[0][1]], data, where)
    order = [data.modalities.index(name) for name in layout.modalities]
    ids: list[str | None] = []
    masks: list[int] = []
    line_of: dict[str, int] = {}
    for line, row in rows[1:]:
        try:
            sample, keeps = layout.parse(row)
        except _RowError as error:
            raise ValueError(f"{where}, line {line}: {error}") from error
        if sample is not None and sample in line_of:
            raise ValueError(
                f"{where}, line {line}: sample {sample} listed twice (first on line "
                f"{line_of[sample]})"
            )
        if not any(keeps):
            label = sample if sample is not None else _at(data, len(masks))
            raise ValueError(f"{where}, line {line}: sample {label} keeps no modality")
        if sample is not None:
            line_of[sample] = line
        ids.append(sample)
        masks.append(sum(1 << m for m, keep in zip(order, keeps) if keep))
    present = _match(ids, masks, data, layout, where)
    extra = present & ~data.present.cpu()  # kept by the file, absent from the data
    offenders = torch.nonzero(extra).flatten()
    if offenders.numel():
        n = int(offenders[0])
        lacking = [name for m, name in enumerate(data.modalities) if (int(extra[n]) >> m) & 1]
        raise ValueError(
            f"{where}: sample {_at(data, n)} keeps a modality the data lacks "
            f"({', '.join(lacking)}; {offenders.numel()} such samples)"
        )
    return present


def read_csv_rows(path: Path, where: str) -> list[tuple[int, list[str]]]:
    """The non-blank rows of a CSV with their line numbers, the header first; an unreadable or
    empty file is a ``ValueError`` starting with ``where``."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as file:  # -sig: a spreadsheet's BOM
            reader = csv.reader(file)
            rows = [(reader.line_num, row) for row in reader if any(f.strip() for f in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"{where} cannot be read: {error}") from error
    if not rows:
        raise ValueError(f"{where} is empty")
    return rows


def _layout(header: list[str], data: MultimodalData, where: str) -> _Layout:
    """The layout the header names, checked against ``data``'s modalities."""
    if tuple(header) == PASSION_HEADER:
        layout = _Layout(
            "PASSION's BraTS layout",
            PASSION_MODALITIES,
            _passion_row,
            hint="PASSION's files list only the training cases of its own split (train.txt): "
            "the brats task's training split, the train list of split.json in its cache "
            "folder, must hold the same cases",
        )
    elif tuple(header) == MCE_NUSCENES_HEADER:
        layout = _Layout(
            "MCE's nuScenes layout", MCE_NUSCENES_MODALITIES, _mce_nuscenes_row, by_position=True
        )
    elif header[0] in ID_COLUMNS and sorted(header[1:]) == sorted(data.modalities):
        return _Layout("", tuple(header[1:]), _ours_parser(len(header)))
    else:
        raise ValueError(
            f"{where}: unknown header {','.join(header)}; expected sample_token (or id) and the "
            f"columns {', '.join(data.modalities)}, PASSION's {','.join(PASSION_HEADER)} or "
            f"MCE's {','.join(MCE_NUSCENES_HEADER)}"
        )
    if sorted(layout.modalities) != sorted(data.modalities):
        raise ValueError(
            f"{where} is in {layout.name} (modalities {', '.join(layout.modalities)}), but the "
            f"data's modalities are {', '.join(data.modalities)}"
        )
    return layout


def _ours_parser(width: int) -> Callable[[list[str]], tuple[str | None, tuple[bool, ...]]]:
    def parse(row: list[str]) -> tuple[str | None, tuple[bool, ...]]:
        values = [field.strip() for field in row[1:]]
        if len(row) != width or any(value not in ("0", "1") for value in values):
            raise _RowError(f"expected {width} fields with 0/1 for each modality, got {row}")
        return row[0].strip(), tuple(value == "1" for value in values)

    return parse


def _passion_row(row: list[str]) -> tuple[str | None, tuple[bool, ...]]:
    if len(row) != len(PASSION_HEADER):
        raise _RowError(f"expected 4 fields ({','.join(PASSION_HEADER)}), got {row}")
    name, mask_id, mask = (field.strip() for field in row[:3])
    match = _PASSION_MASK.fullmatch(mask)
    if match is None:
        raise _RowError(
            f"mask must be a list of four True/False (flair, t1ce, t1, t2), got {mask!r}"
        )
    keeps = tuple(value == "True" for value in match.groups())
    if any(keeps) and (
        not mask_id.isdigit()
        or int(mask_id) >= len(PASSION_MASKS)
        or PASSION_MASKS[int(mask_id)] != keeps
    ):
        raise _RowError(
            f"mask_id {mask_id!r} disagrees with mask {mask} (PASSION's id of that mask is "
            f"{PASSION_MASKS.index(keeps)})"
        )
    grade = _GRADE_PREFIX.fullmatch(name)
    return (grade.group(1) if grade else name), keeps


def _mce_nuscenes_row(row: list[str]) -> tuple[str | None, tuple[bool, ...]]:
    values = [field.strip() for field in row]
    if len(values) != len(MCE_NUSCENES_HEADER) or any(v not in ("0", "1") for v in values[:3]):
        raise _RowError(f"expected 0/1 for Camera, LiDAR and RADAR and their Count, got {row}")
    keeps = tuple(value == "1" for value in values[:3])
    if values[3] != str(sum(keeps)):
        raise _RowError(
            f"Count {values[3]!r} is not the number of sensors present ({sum(keeps)})"
        )
    return None, keeps


def _match(
    ids: Sequence[str | None],
    masks: Sequence[int],
    data: MultimodalData,
    layout: _Layout,
    where: str,
) -> Tensor:
    """The rows' masks in ``data``'s order: by id, or by position where rows have none."""
    if layout.by_position:
        if len(masks) != len(data):
            raise ValueError(
                f"{where} ({layout.name}: row n is the n-th sample of the training split in "
                f"(scene, timestamp) order) has {len(masks)} rows for the {len(data)} samples "
                "of the split; it must have one row per sample of the same split"
            )
        return torch.tensor(masks, dtype=torch.int64)
    if not data.ids:
        raise ValueError(f"{where}: this task's samples have no ids to match the rows with")
    table = dict(zip(ids, masks))
    known = set(data.ids)
    unknown = [sample for sample in ids if sample not in known]
    if unknown:
        shown = ", ".join(str(sample) for sample in unknown[:_NAMED])
        raise ValueError(
            f"{where}: {len(unknown)} id(s) belong to no sample of this split: {shown}"
            f"{', ...' if len(unknown) > _NAMED else ''}; the file must list exactly the "
            f"split's samples{_hint(layout)}"
        )
    missing = [sample for sample in data.ids if sample not in table]
    if missing:
        raise ValueError(
            f"{where} has no row for {len(missing)} sample(s) of the split, e.g. {missing[0]}"
            f"{_hint(layout)}"
        )
    return torch.tensor([table[sample] for sample in data.ids], dtype=torch.int64)


def _hint(layout: _Layout) -> str:
    return f"; {layout.hint}" if layout.hint else ""


def _at(data: MultimodalData, n: int) -> str:
    """Sample n named by its id where it has one (and exists), else by its position."""
    return data.ids[n] if n < len(data.ids) else str(n)
