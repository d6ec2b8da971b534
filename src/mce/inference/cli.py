"""`python -m mce.predict RUN --out preds.csv`: predict with a run's trained model, on a split
of its task's data or on a folder of new files.

    python -m mce.predict RUN --out preds.csv                      # the test split
    python -m mce.predict RUN --new-files NEW --out preds.csv      # every sample of NEW
    python -m mce.predict RUN --new-files NEW --out maps/          # a task that predicts maps
    python -m mce.predict RUN --task my_tasks:TASK --out preds.csv # a run of your own task

A classification writes one CSV row per sample: ``id`` (the sample's id, or its index in the
split where the data names none), ``target`` (a split only), ``prediction``, ``score_<class>``
per class, ``present`` (the modalities used, joined by ``+``) and, with ``--attribution``,
``shapley_<modality>`` per modality (empty where the modality is absent). A task that predicts
maps (BraTS, nuScenes) writes one file per sample into the folder ``--out`` (its
``save_prediction``: a NIfTI label map, a BEV map) and ``predictions.csv`` listing them (``id``,
``present``, ``file``); it predicts new files only.

``--new-files`` reads every sample of a folder, without labels or split lists, with the task's
own reader and the run's preprocessing (:meth:`mce.tasks.Task.load_new`; statistics from the
run's data folder, or ``--data-dir``).

``--presence-csv`` chooses the samples and their modalities: an ``id`` column (``index`` and
``sample_token`` are read as ``id``) and either a 0/1 column per modality or a ``present``
column as written here (``image+audio``); the other columns written here are ignored, so a
predictions CSV reads back. Only the samples listed are predicted, in the file's order.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import sys
from pathlib import Path

import torch

from mce.data.dataset import MultimodalData
from mce.data.presence import MCE_NUSCENES_HEADER, PASSION_HEADER, read_csv_rows, read_presence
from mce.inference.predictor import Prediction, Predictor, load
from mce.tasks import TrainedOn, get_task
from mce.training.records import read_config
from mce.training.run_folder import write_csv

__all__ = ["build_parser", "main", "write_predictions", "presence_from_file", "ID_COLUMNS"]

PROG = "python -m mce.predict"
SPLITS = ("test", "validation", "train")
ID_COLUMNS = ("id", "index", "sample_token")  # a sample's id in a presence CSV; "id" is written
MAPS_INDEX = "predictions.csv"  # beside the maps of a dense task
_WRITTEN = re.compile(r"target|prediction|file|score_.+|shapley_.+")  # read back, ignored
_NAMED = 3  # unknown ids named in an error


class _Parser(argparse.ArgumentParser):
    """Errors as one line, exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="the run folder (config.json and the methods' weights)")
    parser.add_argument(
        "--out", required=True, help="the CSV to write (a task that predicts maps: a folder)"
    )
    parser.add_argument("--method", help="which trained method (default: mce, or the only one)")
    parser.add_argument(
        "--task",
        help="the run's task as package.module:ATTRIBUTE (a task of your own; default: the "
        "task config.json names)",
    )
    parser.add_argument(
        "--new-files",
        metavar="FOLDER",
        help="predict every sample of this folder of new files (no labels or split lists), "
        "read by the task's reader with the run's preprocessing",
    )
    parser.add_argument(
        "--data-dir",
        help="the run's data folder (default: the one it recorded): the split to predict, or "
        "the training data whose statistics preprocess new files",
    )
    parser.add_argument(
        "--split", choices=SPLITS, help="the split to predict (default: test; not with --new-files)"
    )
    parser.add_argument(
        "--presence-csv",
        help="the samples to predict and their modalities (id + a 0/1 column per modality, or "
        "a present column)",
    )
    parser.add_argument(
        "--attribution", action="store_true", help="Shapley value of each present modality"
    )
    parser.add_argument(
        "--shapley",
        choices=("exact", "mc"),
        default="exact",
        help="attribution over every subset (exact) or Monte Carlo permutations (default: exact)",
    )
    parser.add_argument("--mc-k", type=int, default=100, help="permutations per sample (mc)")
    parser.add_argument(
        "--batch-size", type=int, default=256, help="samples per forward (default: 256)"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.new_files and args.split:
        parser.error("--split and --new-files exclude each other")
    try:
        task = get_task(args.task) if args.task else None
        predictor = load(args.run, args.method, task=task, device=args.device)
        data, labelled = _data(predictor, Path(args.run), args)
        if args.presence_csv:
            data = presence_from_file(args.presence_csv, data)
        if predictor.is_dense:
            _predict_maps(predictor, data, Path(args.out), args.batch_size)
        else:
            result = predictor.predict_data(
                data,
                batch_size=args.batch_size,
                attribution=args.attribution,
                shapley=args.shapley,
                mc_k=args.mc_k,
            )
            write_predictions(Path(args.out), predictor, data, result, labelled)
    except (ValueError, ImportError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{len(data)} predictions of {predictor.method} in {args.out}")
    return 0


def _data(
    predictor: Predictor, run: Path, args: argparse.Namespace
) -> tuple[MultimodalData, bool]:
    """The samples to predict, every one named by an id, and whether they have targets."""
    config = read_config(run)
    folder = args.data_dir or config.get("data_dir")
    task = predictor.task
    if not predictor.is_classification and not predictor.is_dense:
        raise ValueError(
            f"task {task.name!r} is not a classification; {PROG} writes classification "
            "predictions and maps only"
        )
    if args.new_files:
        trained_on = TrainedOn(Path(folder) if folder else None, config.get("fold"))
        return task.load_new(Path(args.new_files), trained_on), False
    if predictor.is_dense:
        raise ValueError(
            f"task {task.name!r} predicts maps, which {PROG} writes for new files: "
            f"{PROG} {args.run} --new-files FOLDER --out MAPS_FOLDER"
        )
    if task.needs_data_dir and not folder:
        raise ValueError(f"task {task.name!r} needs --data-dir")
    splits = task.splits(Path(folder) if folder else None, config.get("fold"))
    split = args.split or "test"
    data = getattr(splits, split)
    if data is None:
        raise ValueError(f"task {task.name!r} has no {split} split")
    if not data.ids:  # named by their index, for the presence CSV
        data = dataclasses.replace(data, ids=tuple(str(n) for n in range(len(data))))
    return data, True


def presence_from_file(path: str | Path, data: MultimodalData) -> MultimodalData:
    """The samples of ``data`` that a presence CSV lists, in its order, with the modalities it
    gives them (see the module's description; PASSION's and MCE's published layouts, which
    must list every sample, are read by :func:`mce.data.presence.read_presence`).

    Raises:
        ValueError: the file cannot be read; a header without one id column, or without a
            0/1 column per modality or a ``present`` column (or with both), or with an unknown
            column; a row with the wrong number of fields, a value that is not 0/1, an unknown
            modality in ``present``, an id listed twice, a row that keeps no modality or one
            the sample lacks; ids of no sample (the first few named); no row.
    """
    path = Path(path)
    where = f"presence CSV {path}"
    rows = read_csv_rows(path, where)
    header = [name.strip() for name in rows[0][1]]
    if tuple(header) in (PASSION_HEADER, MCE_NUSCENES_HEADER):
        return data.with_presence(read_presence(path, data))
    parse, id_column = _row_parser(header, data.modalities, where)
    position = {sample: n for n, sample in enumerate(data.ids)}
    picked: list[int] = []
    masks: list[int] = []
    unknown: list[str] = []
    line_of: dict[str, int] = {}
    for line, row in rows[1:]:
        if len(row) != len(header):
            raise ValueError(f"{where}, line {line}: expected {len(header)} fields, got {row}")
        sample = row[id_column].strip()
        if sample not in position:
            unknown.append(sample)
            continue
        if sample in line_of:
            raise ValueError(
                f"{where}, line {line}: sample {sample} listed twice (first on line "
                f"{line_of[sample]})"
            )
        line_of[sample] = line
        mask = parse(row, f"{where}, line {line}")
        if not mask:
            raise ValueError(f"{where}, line {line}: sample {sample} keeps no modality")
        lacking = mask & ~int(data.present[position[sample]])
        if lacking:
            names = [name for m, name in enumerate(data.modalities) if lacking >> m & 1]
            raise ValueError(
                f"{where}, line {line}: sample {sample} keeps {', '.join(names)}, which its "
                "data lacks"
            )
        picked.append(position[sample])
        masks.append(mask)
    if unknown:
        shown = ", ".join(unknown[:_NAMED]) + (", ..." if len(unknown) > _NAMED else "")
        raise ValueError(f"{where}: {len(unknown)} id(s) name no sample to predict: {shown}")
    if not picked:
        raise ValueError(f"{where} lists no sample")
    chosen = data.subset(torch.tensor(picked, dtype=torch.int64))
    return chosen.with_presence(torch.tensor(masks, dtype=torch.int64))


def _row_parser(header: list[str], modalities: tuple[str, ...], where: str):
    """(row, where) -> presence bitmask, and the id column, for a presence CSV's header."""
    ids = [n for n, name in enumerate(header) if name in ID_COLUMNS]
    columns = {name: header.index(name) for name in modalities if name in header}
    known = {*ID_COLUMNS, *modalities, "present"}
    unknown = [name for name in header if name not in known and not _WRITTEN.fullmatch(name)]
    expected = (
        f"expected an id column and a 0/1 column per modality ({', '.join(modalities)}) or a "
        "present column (modalities joined by +)"
    )
    if len(ids) != 1 or unknown:
        problem = f"unknown column(s) {', '.join(unknown)}" if unknown else "no single id column"
        raise ValueError(f"{where}: {problem} in its header {','.join(header)}; {expected}")
    if columns and "present" in header:
        raise ValueError(f"{where}: give a 0/1 column per modality or a present column, not both")
    if columns and len(columns) != len(modalities):
        missing = [name for name in modalities if name not in columns]
        raise ValueError(f"{where}: no column for modality {', '.join(missing)}; {expected}")
    if not columns and "present" not in header:
        raise ValueError(
            f"{where}: no modality column in its header {','.join(header)}; {expected}"
        )
    if columns:

        def parse(row: list[str], at: str) -> int:
            values = [row[columns[name]].strip() for name in modalities]
            if any(value not in ("0", "1") for value in values):
                raise ValueError(f"{at}: expected 0/1 for each modality, got {row}")
            return sum(1 << m for m, value in enumerate(values) if value == "1")

        return parse, ids[0]
    column = header.index("present")

    def parse_present(row: list[str], at: str) -> int:
        names = [name.strip() for name in row[column].split("+") if name.strip()]
        strange = [name for name in names if name not in modalities]
        if strange:
            raise ValueError(
                f"{at}: present names {', '.join(strange)}, not a modality "
                f"({', '.join(modalities)})"
            )
        return sum(1 << modalities.index(name) for name in set(names))

    return parse_present, ids[0]


def _used(modalities: tuple[str, ...], mask: int) -> str:
    return "+".join(name for m, name in enumerate(modalities) if mask >> m & 1)


def _predict_maps(predictor: Predictor, data: MultimodalData, out: Path, batch_size: int) -> None:
    """Each sample's map written by the task's ``save_prediction`` into ``out``, listed in
    ``out/predictions.csv``."""
    task = predictor.task
    if task.save_prediction is None:
        raise ValueError(f"task {task.name!r} predicts maps but defines no save_prediction")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; task {task.name!r} writes its maps in a folder")
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    step = 1 if predictor.window is not None else batch_size  # whole volumes: one at a time
    for first in range(0, len(data), step):
        part = data.subset(torch.arange(first, min(first + step, len(data))))
        result = predictor.predict_data(part, batch_size=step)
        assert result.prediction is not None and result.scores is not None
        for k in range(len(part)):
            sample = part.subset(torch.tensor([k]))
            path = task.save_prediction(out, sample, result.prediction[k], result.scores[k])
            used = _used(predictor.modalities, int(result.present[k]))
            file = Path(path).relative_to(out).as_posix()
            rows.append({"id": sample.ids[0], "present": used, "file": file})
    write_csv(out / MAPS_INDEX, ("id", "present", "file"), rows)


def write_predictions(
    path: Path,
    predictor: Predictor,
    data: MultimodalData,
    result: Prediction,
    labelled: bool = True,
) -> None:
    """Write one CSV row per sample (see the module's description), atomically; ``target``
    only where ``labelled``. ``data.ids`` name the samples (their index where it has none)."""
    modalities = predictor.modalities
    assert result.scores is not None and result.prediction is not None
    classes = result.scores.shape[1]
    header = ["id", *(["target"] if labelled else []), "prediction"]
    header += [f"score_{c}" for c in range(classes)]
    header += ["present"]
    if result.shapley is not None:
        header += [f"shapley_{name}" for name in modalities]
    rows = []
    targets = data.target.tolist()
    scores = result.scores.tolist()
    shapley = result.shapley.tolist() if result.shapley is not None else None
    for n in range(len(data)):
        row = [data.ids[n] if data.ids else str(n)]
        row += [targets[n]] if labelled else []
        row += [int(result.prediction[n])]
        row += [f"{score:.6g}" for score in scores[n]]
        row += [_used(modalities, int(result.present[n]))]
        if shapley is not None:
            row += ["" if math.isnan(value) else f"{value:.6g}" for value in shapley[n]]
        rows.append(dict(zip(header, row)))
    write_csv(path, header, rows)
