"""`python -m mce.predict RUN --out preds.csv`: predict a split of the run's task with its
trained model, one CSV row per sample.

Columns: ``index`` (or ``id`` when the data names its samples), ``target``, ``prediction``,
``score_<class>`` per class, ``present`` (the modalities used, joined by ``+``) and, with
``--attribution``, ``shapley_<modality>`` per modality (empty where the modality is absent).
``--presence-csv`` chooses each sample's modalities (header ``id`` or ``sample_token``, then a
0/1 column per modality; samples without ids are named by their index in the split).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import sys
from pathlib import Path

from mce.checkpoint import write_atomic
from mce.data.dataset import MultimodalData
from mce.data.masks import presence_from_csv
from mce.inference import Prediction, Predictor, load
from mce.records import read_config

__all__ = ["build_parser", "main", "write_predictions"]

PROG = "python -m mce.predict"
SPLITS = ("test", "validation", "train")


class _Parser(argparse.ArgumentParser):
    """Errors as one line, exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="the run folder (config.json and the methods' weights)")
    parser.add_argument("--out", required=True, help="the CSV to write")
    parser.add_argument("--method", help="which trained method (default: mce, or the only one)")
    parser.add_argument(
        "--data-dir", help="data folder of tasks that read files (default: the run's)"
    )
    parser.add_argument("--split", choices=SPLITS, default="test", help="the split to predict")
    parser.add_argument(
        "--presence-csv", help="which modalities each sample has (id + 0/1 columns)"
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
    args = build_parser().parse_args(argv)
    try:
        predictor = load(args.run, args.method, device=args.device)
        if not predictor.is_classification:
            raise ValueError(
                f"task {predictor.task.name!r} is not a classification; {PROG} writes "
                "classification predictions only"
            )
        data = _split(predictor, Path(args.run), args.data_dir, args.split)
        if not data.ids:  # name the samples by their index, for the presence CSV
            data = dataclasses.replace(data, ids=tuple(str(n) for n in range(len(data))))
            named = False
        else:
            named = True
        if args.presence_csv:
            data = presence_from_csv(args.presence_csv, data).data
        result = predictor.predict_data(
            data,
            batch_size=args.batch_size,
            attribution=args.attribution,
            shapley=args.shapley,
            mc_k=args.mc_k,
        )
        write_predictions(Path(args.out), predictor, data, result, named)
    except (ValueError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{len(data)} predictions of {predictor.method} in {args.out}")
    return 0


def _split(predictor: Predictor, run: Path, data_dir: str | None, split: str) -> MultimodalData:
    config = read_config(run)
    folder = data_dir or config.get("data_dir")
    task = predictor.task
    if task.needs_data_dir and not folder:
        raise ValueError(f"task {task.name!r} needs --data-dir")
    splits = task.splits(Path(folder) if folder else None, config.get("fold"))
    data = getattr(splits, split)
    if data is None:
        raise ValueError(f"task {task.name!r} has no {split} split")
    return data


def write_predictions(
    path: Path, predictor: Predictor, data: MultimodalData, result: Prediction, named: bool
) -> None:
    """Write one CSV row per sample (see the module's description), atomically."""
    modalities = predictor.modalities
    assert result.scores is not None and result.prediction is not None
    classes = result.scores.shape[1]
    header = ["id" if named else "index", "target", "prediction"]
    header += [f"score_{c}" for c in range(classes)]
    header += ["present"]
    if result.shapley is not None:
        header += [f"shapley_{name}" for name in modalities]
    rows = [header]
    targets = data.target.tolist()
    scores = result.scores.tolist()
    shapley = result.shapley.tolist() if result.shapley is not None else None
    for n in range(len(data)):
        mask = int(result.present[n])
        used = "+".join(name for m, name in enumerate(modalities) if mask >> m & 1)
        row = [data.ids[n] if named else str(n), targets[n], int(result.prediction[n])]
        row += [f"{score:.6g}" for score in scores[n]]
        row += [used]
        if shapley is not None:
            row += ["" if math.isnan(value) else f"{value:.6g}" for value in shapley[n]]
        rows.append(row)

    def write(file) -> None:
        import io

        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows(rows)
        file.write(text.getvalue().encode())

    write_atomic(path, write)


if __name__ == "__main__":
    sys.exit(main())
