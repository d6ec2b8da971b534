"""Running an experiment: every unfinished cell of the grid, then the summary and figures."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from mce.experiment.grid import RESULTS, ExperimentSpec, cells_of
from mce.experiment.summary import SUMMARY, summarize_experiment, write_summary
from mce.tasks import Task, get_task
from mce.training.config import TrainConfig
from mce.training.records import CONFIG, config_differences
from mce.training.run import run as train_run
from mce.training.run_folder import read_json, write_text

log = logging.getLogger("mce.experiment")

EXPERIMENT = "experiment.json"


def _check_spec(out: Path, spec: ExperimentSpec, runtime_options: frozenset[str]) -> None:
    """An experiment folder keeps its task and shared settings (but for the task's
    ``runtime_options``); the grid may grow."""
    path = out / EXPERIMENT
    if not path.is_file():
        return
    saved = read_json(path, "delete it to start the experiment's record again (its cells stay)")
    now = json.loads(json.dumps(spec.to_dict()))
    defaults: dict[str, Any] = {  # older files
        "task_options": {},
        "drop_all_missing": False,
        "mask_scheme": "exact",
    }
    keys = (
        "task",
        "overrides",
        "device",
        "data_dir",
        "task_options",
        "drop_all_missing",
        "mask_scheme",
    )
    for record in (saved, now):  # options that change how data is read, not the results
        options = record.get("task_options") or {}
        record["task_options"] = {k: v for k, v in options.items() if k not in runtime_options}
    differ = [key for key in keys if saved.get(key, defaults.get(key)) != now.get(key)]
    if differ:
        raise ValueError(
            f"{out} holds an experiment with other {', '.join(differ)} (see {path}); "
            "use the same options or another --out"
        )


def _check_finished(cell_dir: Path, config: TrainConfig, runtime_options: frozenset[str]) -> None:
    saved = json.loads((cell_dir / CONFIG).read_text()).get("config", {})
    differ = config_differences(saved, config, runtime_options)
    if differ:
        raise ValueError(
            f"finished cell {cell_dir} was run with other settings ({', '.join(differ)}); "
            "use another --out or delete the cell"
        )


class _TqdmHandler(logging.Handler):
    """Log records written above the progress bars (:func:`tqdm.write`) on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must not break the run
            self.handleError(record)


def _say(line: str) -> None:
    """One progress line on stderr, above the progress bars."""
    tqdm.write(line, file=sys.stderr)


@contextlib.contextmanager
def _cell_output(progress: bool) -> Iterator[None]:
    """While a cell runs: its printed table swallowed (it is in the cell's folder) and, with
    ``progress``, the INFO lines of the ``mce`` loggers shown above the progress bars (its
    pretraining, epochs and warnings); without, only what the logging setup lets through."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        if progress:
            logger = logging.getLogger("mce")
            handler = _TqdmHandler(logging.INFO)
            handler.setFormatter(logging.Formatter("  %(levelname)s %(name)s: %(message)s"))
            level, propagate = logger.level, logger.propagate
            logger.setLevel(logging.INFO)
            logger.propagate = False  # shown once, by this handler
            logger.addHandler(handler)

            def restore() -> None:
                logger.removeHandler(handler)
                logger.setLevel(level)
                logger.propagate = propagate

            stack.callback(restore)
        yield


def run_experiment(
    spec: ExperimentSpec,
    out: str | Path | None = None,
    *,
    progress: bool = True,
    figures: bool = True,
    task: Task | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Run every unfinished cell of the grid, then write the summary (and figures).

    Args:
        spec: the grid and what its cells share.
        out: the experiment folder (default ``runs/experiment-<task>``; the same folder again
            continues the experiment: finished cells are reused, interrupted ones resumed).
        progress: a progress bar over the cells, a line when each cell starts, the cell's own
            bars (upper-bound pretraining, each epoch, evaluation) and the INFO lines of the
            ``mce`` loggers; False: only one line per cell, its result (on stderr either way).
        figures: build the figures of :mod:`mce.experiment.report` (needs matplotlib; skipped with a
            warning without it).
        task: a ``Task`` object to use instead of looking ``spec.task`` up.
        threads: CPU threads of torch's kernels in every cell (``TrainConfig.threads``; None:
            torch's own choice). Not recorded: it changes the time, not the results.

    Returns:
        The summary, as written to ``summary.json``.

    Raises:
        ValueError: the folder holds an experiment or finished cells with other settings.
    """
    started = time.perf_counter()
    task = task if task is not None else get_task(spec.task, spec.task_options)
    task = dataclasses.replace(task, load=functools.lru_cache(maxsize=1)(task.load))  # once
    out = Path(out if out is not None else f"runs/experiment-{task.name}")
    out.mkdir(parents=True, exist_ok=True)
    _check_spec(out, spec, task.runtime_options)
    write_text(out / EXPERIMENT, json.dumps(spec.to_dict(), indent=2) + "\n")
    cells = cells_of(spec, task)
    pending, reused = [], 0
    for cell in cells:
        folder = cell.folder(out)
        if (folder / RESULTS).is_file():
            _check_finished(folder, cell.config(spec, out), task.runtime_options)
            reused += 1
        else:
            pending.append(cell)
    bar = tqdm(total=len(cells), initial=reused, desc="cells", unit="cell", disable=not progress)
    with bar:
        for number, cell in enumerate(pending, reused + 1):
            name = f"cell {number}/{len(cells)} {cell.variant.name} {cell.setting} {cell.replicate}"
            bar.set_postfix_str(f"{cell.variant.name} {cell.setting} {cell.replicate}")
            if progress:
                _say(f"{name}: started")
            folder = cell.folder(out)
            resume = (folder / CONFIG).is_file()
            config = dataclasses.replace(
                cell.config(spec, out), progress=progress, threads=threads
            )
            cell_started = time.perf_counter()
            with _cell_output(progress):
                scores = train_run(config, resume=resume, task=task)
            seconds = time.perf_counter() - cell_started
            average = (scores or {}).get(cell.variant.method, {}).get("average")
            result = "no scores" if average is None else f"average {average:.2f} %"
            _say(f"{name}: {task.metric_name} {result} ({seconds:.1f} s)")
            bar.update(1)
    summary = summarize_experiment(out, spec, task)
    summary["wall_time_s"] = round(time.perf_counter() - started, 3)
    summary["cells_computed"] = len(pending)
    summary["cells_reused"] = reused
    write_summary(out, summary)
    if figures:
        try:
            from mce.experiment.report import build_report

            build_report(out)
        except ImportError as error:  # matplotlib is the optional extra "report"
            log.warning("figures skipped (%s); pip install 'mce[report]'", error)
    return json.loads((out / SUMMARY).read_text())
