"""What a run folder says about the run: ``config.json`` (the resolved configuration, package
version and git commit) and ``results.json`` / ``results.md`` (scores with their unit, the
missing rates actually trained on, timings)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from mce.methods import METHODS
from mce.methods.mce import MCEConfig
from mce.support.checkpoint import write_atomic
from mce.training.config import HyperParameters, TrainConfig
from mce.training.run_folder import read_json, write_text

__all__ = [
    "RunRecord",
    "write_config",
    "read_config",
    "config_from_dict",
    "ablation_label",
    "package_version",
    "git_commit",
    "save_model",
    "WEIGHTS",
]

CONFIG = "config.json"
WEIGHTS = "model.safetensors"  # the final weights of a method, in <run>/<method>/
RESULTS = "results.json"
# where python -m mce.report's figures section of results.md begins
FIGURES_MARKER = "<!-- mce.report: figures (rebuilt by python -m mce.report) -->"


def package_version() -> str:
    try:
        return metadata.version("mce")
    except metadata.PackageNotFoundError:
        from mce.support.version import __version__

        return __version__


def git_commit() -> str | None:
    """The commit of the clone the package runs from (with ``-dirty`` for uncommitted
    changes), or None for an installed copy."""
    root = Path(__file__).resolve().parents[3]  # src/mce/training/records.py
    if not (root / ".git").exists() or not (root / "CMakeLists.txt").is_file():
        return None
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def config_differences(
    saved: dict[str, Any], config: TrainConfig, runtime_options: Collection[str] = ()
) -> list[str]:
    """The settings (top-level keys, or a method's name for its options) in which a saved
    ``config.json`` differs from ``config``.

    ``out`` is ignored (a folder may be spelt differently), so is ``missing_rates_stated``
    (with the same rates it changes only the masks, which a resumed run checks itself), and so
    are the task options named in ``runtime_options`` (the task's
    :attr:`~mce.tasks.Task.runtime_options`). A setting the saved file lacks (it was written
    before the setting existed) counts as what that run did: its default, or
    (``validation_share``) 0; a method's options it lacks do not count: the run was written
    before that method existed, so it did not train it (another ``method`` differs by itself).
    A file that kept each method's options at the top level (``"mce"``, ``"redcore"``) is read
    as such.
    """
    saved = _with_method_options(saved)
    now = json.loads(json.dumps(config.to_dict()))
    defaults = json.loads(json.dumps(_defaults(config.task).to_dict()))
    differ = []
    ignored = {"out", "method_options", "missing_rates_stated"}
    for key in sorted((set(saved) | set(now)) - ignored):
        before, after = saved.get(key, _BEFORE.get(key, defaults.get(key))), now.get(key)
        if key == "task_options":  # options free to differ are not compared
            before, after = (
                {k: v for k, v in (options or {}).items() if k not in runtime_options}
                for options in (before, after)
            )
        if _differs(before, after, defaults.get(key)):
            differ.append(key)
    options = saved.get("method_options", {})
    for method, value in now.get("method_options", {}).items():
        default = defaults["method_options"].get(method)
        if method in options and _differs(options[method], value, default):
            differ.append(method)
    return differ


# what runs written before a setting existed did, where it is not the setting's default
_BEFORE = {"validation_share": 0.0}  # no samples held out


def _defaults(task: str) -> TrainConfig:
    """Every setting at its default, every registered method's options at their type's."""
    options = {name: spec.options() for name, spec in METHODS.items() if spec.options}
    return TrainConfig(task=task, hparams=HyperParameters(), method_options=options)


def _differs(before: Any, now: Any, default: Any) -> bool:
    """Whether a saved value differs from the current one; a saved object lacking some keys
    takes them from ``default``."""
    if isinstance(before, dict) and isinstance(default, dict):
        before = {**default, **before}
    return before != now


def _with_method_options(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved config with its methods' options under ``method_options`` (files that kept
    them at the top level, under each method's name, are read that way)."""
    if "method_options" in saved:
        return saved
    own = {spec.name for spec in dataclasses.fields(TrainConfig)}
    moved = {
        key: value for key, value in saved.items() if key in METHODS and key not in own
    }
    rest = {key: value for key, value in saved.items() if key not in moved}
    return {**rest, "method_options": moved}


def write_config(
    out: Path, config: TrainConfig, resume: bool, runtime_options: Collection[str] = ()
) -> None:
    """Write ``config.json``; on resume, first check that the settings are the saved ones
    (``runtime_options``: task options free to differ, see :func:`config_differences`).

    Raises:
        ValueError: when resuming with settings that differ from the saved run's.
    """
    path = out / CONFIG
    current = config.to_dict()
    if resume:
        saved = read_config(out)
        differ = config_differences(saved, config, runtime_options)
        if differ:
            raise ValueError(
                f"--resume with settings that differ from the run in {out} "
                f"({', '.join(differ)}; see {path}); use the same options or a new --out"
            )
        current["out"] = saved.get("out", current["out"])
    record = {"config": current, "mce_version": package_version(), "git_commit": git_commit()}
    write_text(path, json.dumps(record, indent=2) + "\n")


def read_config(out: Path) -> dict[str, Any]:
    """The settings saved in ``out/config.json``.

    Raises:
        ValueError: naming the file when it is missing or unreadable.
    """
    saved = read_json(
        out / CONFIG,
        "the run's settings are lost: start it again in a new --out (its checkpoints cannot be "
        "resumed without them)",
    )
    config = saved.get("config")
    if not isinstance(config, dict):
        raise ValueError(f"{out / CONFIG} holds no 'config' object; start the run in a new --out")
    return config


def config_from_dict(saved: dict[str, Any]) -> TrainConfig:
    """The :class:`TrainConfig` that a ``config.json``'s ``config`` object records (read with
    :func:`read_config`; method options kept at the top level by older files are read too).
    Settings the file lacks take their defaults; settings it names that no longer exist
    are ignored.

    Raises:
        ValueError: a value of the wrong type, naming the setting.
    """
    saved = _with_method_options(saved)
    own = {spec.name for spec in dataclasses.fields(TrainConfig)}
    values = {key: value for key, value in saved.items() if key in own}
    if values.get("hparams") is not None:
        values["hparams"] = _options(HyperParameters, values["hparams"])
    options = {}
    for name, recorded in (values.get("method_options") or {}).items():
        spec = METHODS.get(name)
        if spec is not None and spec.options is not None and isinstance(recorded, dict):
            options[name] = _options(spec.options, recorded)
    values["method_options"] = options
    return TrainConfig(**values)


def _options(kind: type, recorded: dict[str, Any]) -> Any:
    """An options dataclass from its recorded fields (JSON lists back to tuples)."""
    fields = {spec.name for spec in dataclasses.fields(kind)}
    values = {
        key: tuple(value) if isinstance(value, list) else value
        for key, value in recorded.items()
        if key in fields
    }
    return kind(**values)


def ablation_label(config: MCEConfig) -> str:
    """Which MCE terms a run switched off, e.g. ``"no A, no L_aux"``; empty for full MCE."""
    off = [
        label
        for flag, label in (
            (config.use_a, "A"),
            (config.use_b, "B"),
            (config.use_single, "L_single"),
            (config.use_sub, "L_sub"),
            (config.use_aux, "L_aux"),
        )
        if not flag
    ]
    return ", ".join(f"no {label}" for label in off)


@dataclass
class RunRecord:
    """The results of one run, written as ``results.json`` and ``results.md``.

    Scores are percentages in both files; ``average`` is the unweighted mean over the non-empty
    modality combinations. ``metrics`` holds the task's extra split-level metrics (one table
    each after the main one) and ``selection`` which epoch was tested.
    """

    task: str
    metric: str
    config: TrainConfig
    modalities: Sequence[str]
    test_samples: int
    missing_rates: dict[str, Any]
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    # {method: {combination: test samples that scored it}} (the table's n column; which
    # samples count is config.score_on)
    samples: dict[str, dict[str, int]] = field(default_factory=dict)
    timing_s: dict[str, dict[str, float]] = field(default_factory=dict)
    # {method: {modality: score in %}} of each unimodal head on the test split (Fig. 9)
    heads: dict[str, dict[str, float]] = field(default_factory=dict)
    upper_bounds: dict[str, dict[str, Any]] = field(default_factory=dict)
    # {method: {metric: {combination or "average": value in %}}} of the task's extra metrics
    metrics: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    # {"mode": "last" | "validation", "metric": name or None,
    #  "best_epoch": {method: epoch (1-based)}, "validation_score": {method: % or None},
    #  "early_stop": patience or None, "stopped_epoch": {method: epoch or None}}
    selection: dict[str, Any] = field(default_factory=dict)
    # data-parallel runs only: {"world_size": ranks, "backend": "nccl" | "gloo",
    #  "batch_statistics": "global"} (B and the loss denominators from the global batch)
    distributed: dict[str, Any] = field(default_factory=dict)
    # the samples scored after every epoch: {"source": "task" (its validation split),
    #  "training share" or None (none), "share": held-out share or None, "samples": count,
    #  "held_out_of_training": samples taken from the training split and not trained on}
    validation: dict[str, Any] = field(default_factory=dict)

    def column(self, method: str) -> str:
        options = self.config.options_for(method)
        label = ablation_label(options) if isinstance(options, MCEConfig) else ""
        return f"{method} [{label}]" if label else method

    @property
    def title(self) -> str:
        return self.title_of(self.metric)

    def title_of(self, metric: str) -> str:
        """The title line of ``metric``'s table."""
        return (
            f"{self.task}: {metric} (%) on every modality combination of the test split "
            f"({self.test_samples} samples)"
        )

    @property
    def metric_names(self) -> list[str]:
        """The extra metrics recorded, in order of first appearance."""
        names: list[str] = []
        for by_metric in self.metrics.values():
            names += [name for name in by_metric if name not in names]
        return names

    def metric_scores(self, metric: str) -> dict[str, dict[str, float]]:
        """{method: {combination: %}} of one extra metric (methods that recorded it)."""
        return {m: values[metric] for m, values in self.metrics.items() if metric in values}

    @property
    def average_note(self) -> str:
        scored = [len(scores) - 1 for scores in self.scores.values()]  # all but "average"
        combinations = max(scored, default=(1 << len(self.modalities)) - 1)
        note = (
            f"average: the unweighted mean over the {combinations} non-empty modality combinations"
        )
        if not self.samples:
            return note
        if self.config.score_on == "complete":
            which = "the test samples holding all of its modalities (--score-on complete)"
        else:
            which = (
                "the test samples holding any of its modalities, each given those it has "
                "(--score-on available)"
            )
        return f"{note}; n: the samples that scored each combination, {which}"

    @property
    def combination_samples(self) -> dict[str, int]:
        """{combination: samples that scored it} (the first method's; every method is scored
        on the same test samples)."""
        return next(iter(self.samples.values()), {})

    def table(
        self, scores: dict[str, dict[str, float]] | None = None, metric: str | None = None
    ) -> str:
        """Rows: combinations and average; columns: methods. Default: the utility's scores;
        ``scores`` and ``metric`` give another metric's table."""
        scores = self.scores if scores is None else scores
        metric = self.metric if metric is None else metric
        methods = list(scores)
        combos = list(next(iter(scores.values())))
        samples = self.combination_samples
        header = " | ".join(f"{self.column(m)} ({metric})" for m in methods)
        header += " | n" if samples else ""
        columns = len(methods) + bool(samples)
        lines = [f"| combination | {header} |", "|---|" + "---|" * columns]
        for combo in combos:
            cells = " | ".join(f"{scores[m][combo]:.2f}" for m in methods)
            if samples:
                cells += f" | {samples.get(combo, '')}"
            label = f"**{combo}**" if combo == "average" else combo
            lines.append(f"| {label} | {cells} |")
        return "\n".join(lines)

    def details(self) -> list[str]:
        """The training conditions behind the table: missing rates and upper bounds."""
        rates = self.missing_rates
        stated = ", ".join(f"{k} {v:g}" for k, v in rates.get("stated", {}).items())
        actual = ", ".join(f"{k} {v:.4g}" for k, v in rates.get("actual", {}).items())
        if rates.get("source") == "data":
            line = (
                f"missing rates of the training split: the data's own, no masks drawn: {actual} "
                f"({rates.get('training_samples', '?')} samples)"
            )
        else:
            line = (
                f"missing rates of the training split: stated {stated}; actual {actual} "
                f"({rates.get('training_samples', '?')} samples, "
                f"{rates.get('dropped_samples', 0)} dropped)"
            )
        lines = [line]
        if self.upper_bounds:
            bounds = ", ".join(
                f"{name} {100 * fit['heldout_utility']:.2f} held-out"
                + (
                    f", {100 * fit['training_utility']:.2f} training"
                    if fit.get("training_utility") is not None
                    else ""
                )
                for name, fit in self.upper_bounds.items()
            )
            lines.append(f"upper bounds (frozen unimodal models, {self.metric} %): {bounds}")
        if self.distributed:
            lines.append(
                f"data parallel over {self.distributed['world_size']} ranks "
                f"({self.distributed['backend']}); factor B and the loss terms from "
                "global-batch statistics"
            )
        if self.validation.get("held_out_of_training"):
            lines.append(
                f"{self.validation['held_out_of_training']} training samples held out (share "
                f"{self.validation['share']:g}) to score every epoch, not trained on"
            )
        if self.selection.get("mode") == "validation":
            chosen = ", ".join(
                f"{m} epoch {epoch} (validation {self.selection['validation_score'][m]:.2f})"
                for m, epoch in self.selection["best_epoch"].items()
            )
            lines.append(
                f"tested epoch: the best validation {self.selection['metric']} (%, averaged over "
                f"the combinations): {chosen}"
            )
        if self.selection.get("early_stop"):
            stopped = ", ".join(
                f"{m} after epoch {epoch}" if epoch else f"{m} trained every epoch"
                for m, epoch in self.selection.get("stopped_epoch", {}).items()
            )
            lines.append(
                f"early stopping after {self.selection['early_stop']} epoch(s) without a better "
                f"validation score: {stopped}"
            )
        return lines

    def markdown(self) -> str:
        details = "\n".join(f"- {line}" for line in self.details())
        text = f"{self.title}\n\n{self.table()}\n\n{self.average_note}\n"
        for metric in self.metric_names:
            table = self.table(self.metric_scores(metric), metric)
            text += f"\n{self.title_of(metric)}\n\n{table}\n"
        return f"{text}\n{details}\n"

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "methods": {m: self.column(m) for m in self.scores},
            "metric": self.metric,
            "unit": "%",
            "average": self.average_note,
            "test_samples": self.test_samples,
            "seed": self.config.seed,
            "missing_rates": self.missing_rates,
            "timing_s": self.timing_s,
            "config": self.config.to_dict(),
            "scores": self.scores,
            "samples": self.samples,
            "score_on": self.config.score_on,
            "metrics": self.metrics,
            "selection": self.selection,
            "validation": self.validation,
            "unimodal_heads": self.heads,
            "upper_bounds": self.upper_bounds,
            **({"distributed": self.distributed} if self.distributed else {}),
        }

    def write(self, out: Path) -> None:
        """Write ``results.json`` and ``results.md`` atomically; a figures section that
        ``python -m mce.report`` added to an earlier ``results.md`` is kept."""
        write_text(out / "results.json", json.dumps(self.to_dict(), indent=2) + "\n")
        markdown = self.markdown()
        previous = out / "results.md"
        if previous.is_file():
            text = previous.read_text(errors="replace")
            if FIGURES_MARKER in text:
                markdown = markdown.rstrip("\n") + "\n\n" + text[text.index(FIGURES_MARKER) :]
        write_text(previous, markdown)


def save_model(folder: Path, model: torch.nn.Module, config: TrainConfig, method: str) -> None:
    """Write ``model``'s weights (the run's record of what was tested; :func:`mce.load` reads
    them) as ``<folder>/<method>/model.safetensors`` (atomically), with
    the config in the file's metadata, and ``<folder>/config.json`` when the folder has none.
    """
    folder = Path(folder)
    from safetensors.torch import save

    state = {
        key: value.detach().to("cpu").clone().contiguous()
        for key, value in model.state_dict().items()
    }
    metadata = {
        "format": "mce",
        "method": method,
        "task": config.task,
        "config": json.dumps(config.to_dict()),
    }
    data = save(state, metadata=metadata)
    write_atomic(folder / method / WEIGHTS, lambda file: file.write(data))
    if not (folder / CONFIG).is_file():
        write_config(folder, config, resume=False)
