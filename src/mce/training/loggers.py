"""Step logs to CSV and TensorBoard."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mce.training.run_folder import write_csv

__all__ = ["RunLogger", "read_log", "write_hparams", "flat_hparams"]


def read_log(path: Path) -> list[dict[str, float]]:
    """The training-step rows of a ``log.csv`` as numbers (an empty cell is NaN); the rows that
    hold only a per-epoch validation score are left out."""
    with path.open(newline="") as file:
        rows = [
            {
                key: float(value) if value not in ("", None) else math.nan
                for key, value in row.items()
            }
            for row in csv.DictReader(file)
        ]
    return [row for row in rows if not math.isnan(row.get("loss", math.nan))]


class RunLogger:
    """Appends one CSV row per step to ``log.csv`` and writes TensorBoard scalars to ``tb/``.

    Validation (:meth:`log_validation`) goes to ``log.csv`` as the average score in [0, 1] and
    to TensorBoard in percent, as the console shows it, for the average and every modality
    combination.
    """

    def __init__(
        self, run_dir: Path, resume_step: int = 0, extra_fields: Sequence[str] = ()
    ) -> None:
        """``extra_fields``: CSV columns logged on some rows only (e.g. a per-epoch validation
        score), added to the header that the first row's keys make."""
        from torch.utils.tensorboard import SummaryWriter

        self.csv_path = run_dir / "log.csv"
        self.fields: list[str] | None = None
        self.extra_fields = tuple(extra_fields)
        if resume_step and self.csv_path.exists():
            self._truncate_after(resume_step)
        elif self.csv_path.exists():
            self.csv_path.unlink()
        self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=resume_step or None)

    def _truncate_after(self, step: int) -> None:
        """Drop rows logged after the checkpoint being resumed (they will be logged again).

        Raises:
            ValueError: naming ``log.csv`` when it cannot be read as this logger's CSV.
        """
        try:
            with self.csv_path.open(newline="") as file:
                rows = list(csv.DictReader(file))
            kept = [row for row in rows if int(row["step"]) < step]
        except (OSError, UnicodeDecodeError, csv.Error, KeyError, TypeError, ValueError) as error:
            raise ValueError(
                f"{self.csv_path} is unreadable ({type(error).__name__}: {error}); move it away "
                "to resume with a new log (the steps before the checkpoint are then missing "
                "from it)"
            ) from None
        if rows:  # rewritten atomically: a kill now keeps the whole old log
            self.fields = list(rows[0].keys())
            write_csv(self.csv_path, self.fields, kept)

    def log(self, step: int, epoch: int, values: dict[str, float]) -> None:
        """One row of ``values`` in ``log.csv``, and each value as a TensorBoard scalar."""
        self._append({"step": step, "epoch": epoch, **values})
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def log_validation(
        self, step: int, epoch: int, key: str, scores: Mapping[str, float]
    ) -> None:
        """An epoch's validation ``scores`` ({combination or "average": score in [0, 1]}):
        the average under ``key`` in ``log.csv``; in TensorBoard, in percent, the average as
        ``key`` and each combination as ``key/<combination>``."""
        self._append({"step": step, "epoch": epoch, key: scores["average"]})
        for name, value in scores.items():
            tag = key if name == "average" else f"{key}/{name}"
            self.writer.add_scalar(tag, 100.0 * value, step)

    def _append(self, row: dict[str, Any]) -> None:
        new_file = not self.csv_path.exists()
        if self.fields is None:
            self.fields = list(row) + [f for f in self.extra_fields if f not in row]
        with self.csv_path.open("a", newline="") as file:
            writer = csv.DictWriter(file, self.fields, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerow(row)

    def close(self) -> None:
        self.writer.close()


def flat_hparams(values: dict[str, Any], prefix: str = "") -> dict[str, int | float | str | bool]:
    """Nested settings as the flat scalars TensorBoard's hparams take: nested keys joined by
    ``/``, sequences and None as text."""
    flat: dict[str, int | float | str | bool] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_hparams(value, f"{name}/"))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        elif isinstance(value, (list, tuple)):
            flat[name] = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
        else:
            flat[name] = str(value)
    return flat


def write_hparams(run_dir: Path, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
    """Record a run's settings and final scores in TensorBoard's hparams view (``run_dir/tb``,
    with :meth:`SummaryWriter.add_hparams`)."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(run_dir / "tb")) as writer:
        writer.add_hparams(flat_hparams(hparams), metrics, run_name="hparams")
