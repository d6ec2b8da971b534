"""The paper's published numbers: Tables 2, 3, 4, 5 and 8 and Figure 7 of Zhao, Zhang & Zou
(Pattern Recognition 2025), typed exactly as printed in ``paper_values.json`` (package data),
so that a summary can print them beside its measured cells.

A :class:`PublishedTable` is one table of one task (Table 2 has two: nuScenes and IEMOCAP). Its
values are looked up by method (our variant or method name: ``mce``, ``baseline``, ``t2-h``,
``redcore``, ...), setting (a letter ``a``-``f`` or the missing rates) and metric; they are in
percent as printed (IoU 39.80, accuracy 60.93, Dice 84.00), Table 8's cost columns in their own
units (``time_ms``, ``flops_g``, ``gpu_memory_mb``). Each table also carries what the paper's
text claims about it (:class:`Claim`), which :meth:`Claim.holds` checks on any means, the
published ones or measured ones. The module reads JSON only (no torch).

Example:
    >>> from mce.experiment.published import published_table
    >>> t5 = published_table("table5")
    >>> t5.value("mce", (0.2, 0.5, 0.8))
    PublishedValue(mean=60.93, std=1.39, ci=None, runs=10)
    >>> str(published_table("table2", task="iemocap").value("mce", "a"))
    '60.93 ± 1.39 [59.94, 61.92]'
    >>> all(claim.holds(t5.mean) for claim in t5.claims)
    True
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache, lru_cache
from importlib import resources
from types import MappingProxyType
from typing import Any

__all__ = [
    "CLAIM_KINDS",
    "TABLE2_TASKS",
    "TABLES",
    "Claim",
    "PublishedTable",
    "PublishedValue",
    "published_table",
    "published_tables",
]

DATA = "paper_values.json"
TABLES = ("table2", "table3", "table4", "table5", "table8", "fig7")
TABLE2_TASKS = ("nuscenes", "iemocap")
CLAIM_KINDS = ("best_at_every_setting", "ordering", "above", "difference", "cost_ratio")
_RATE_TOLERANCE = 1e-9

Means = Callable[[str, str, str], float | None]
"""``means(method, setting_letter, metric)``: a mean, or None where there is none."""


@dataclass(frozen=True)
class PublishedValue:
    """One printed cell.

    Attributes:
        mean: the printed mean (percent for scores).
        std: the printed standard deviation over runs, or None where none is printed.
        ci: the printed 95% confidence interval ``(lo, hi)``, or None.
        runs: the runs the paper states behind the cell, or None where it states none.
        text: the cell as printed, e.g. ``"84.00 ± 0.15"`` (what ``str()`` gives).
    """

    mean: float
    std: float | None = None
    ci: tuple[float, float] | None = None
    runs: int | None = None
    text: str = field(default="", compare=False, repr=False)

    def __str__(self) -> str:
        return self.text or f"{self.mean:g}"


@dataclass(frozen=True)
class Claim:
    """A claim of the paper's text about a table, in a form a machine can check.

    Attributes:
        id: a short slug, unique within its table.
        kind: one of :data:`CLAIM_KINDS`: ``best_at_every_setting``, ``ordering`` and ``above``
            (``method``'s mean above each of ``others``' at every setting and metric listed),
            ``difference`` (``method - others[0] == value`` within ``tolerance``), ``cost_ratio``
            (``method / others[0] == value`` within ``tolerance``, absolute on the ratio).
        text: the claim, quoted or closely paraphrased.
        line: its line (1-based) in the paper's extracted text.
        quote: an exact excerpt of that line.
        method: the method the claim is about.
        others: the methods it is compared with (None: the text does not name them).
        settings: the setting letters it covers (None: the text does not give them).
        metrics: the metrics it covers.
        value: the stated difference or ratio (``difference``, ``cost_ratio``), else None.
        tolerance: how far from ``value`` still agrees, else None.
        holds_in_tables: whether the paper's own printed numbers bear it out (None for a
            figure, which has none).
        note: where the claim and the printed numbers part, or what the text leaves open.
    """

    id: str
    kind: str
    text: str
    line: int
    quote: str
    method: str
    others: tuple[str, ...] | None
    settings: tuple[str, ...] | None
    metrics: tuple[str, ...]
    value: float | None = None
    tolerance: float | None = None
    holds_in_tables: bool | None = None
    note: str | None = None

    def holds(self, means: Means) -> bool | None:
        """Whether the claim holds on ``means(method, setting_letter, metric)``, e.g.
        :meth:`PublishedTable.mean` or a summary's measured means.

        Returns:
            True or False; None when a mean it needs is missing or the claim names no
            ``others`` or ``settings`` (Figure 7).
        """
        if self.others is None or self.settings is None:
            return None
        verdicts = []
        for setting in self.settings:
            for metric in self.metrics:
                mine = means(self.method, setting, metric)
                theirs = [means(other, setting, metric) for other in self.others]
                if mine is None or any(value is None for value in theirs):
                    return None
                verdicts.append(self._compare(mine, theirs))
        return all(verdicts)

    def _compare(self, mine: float, theirs: list[float]) -> bool:
        if self.kind == "difference":
            assert self.value is not None and self.tolerance is not None
            return abs(mine - theirs[0] - self.value) <= self.tolerance
        if self.kind == "cost_ratio":
            assert self.value is not None and self.tolerance is not None
            return theirs[0] != 0 and abs(mine / theirs[0] - self.value) <= self.tolerance
        return all(mine > other for other in theirs)


@dataclass(frozen=True, eq=False)
class PublishedTable:
    """One published table of one task.

    Attributes:
        name: ``table2``, ``table3``, ``table4``, ``table5``, ``table8`` or ``fig7``.
        task: the mce task it is about (``nuscenes``, ``brats``, ``iemocap``, ``avmnist``).
        dataset: the dataset as the paper names it.
        caption: the caption as printed.
        line: the caption's line in the paper's extracted text.
        figure: True for a figure (no values).
        metrics: the metric keys of its values (``iou``, ``accuracy``, ``dice_wt``, ...).
        modalities: the printed modality groups the rates of a setting refer to, e.g.
            ``("T1/T1c", "Flair", "T2")``.
        task_modalities: the task's modalities of each group, e.g.
            ``(("t1", "t1ce"), ("flair",), ("t2",))``.
        settings: setting letter -> missing rates, one per group.
        labels: method key -> its row label as printed.
        combinations: how many modality subsets each value averages, or None.
        runs: the runs the paper states, or None where it states none.
        seed: the seed the paper states, or None.
        training: the task's column of Table 1 (schedule, epochs, iterations, batch_size,
            optimizer, scheduler, learning_rate, evaluation, device).
        claims: what the text claims about the table.
        notes: ambiguities and cross-references, in words.
        rows: Table 2's row letter -> method key (empty for the other tables).
        values: method -> setting letter -> metric -> value (empty for a figure).
    """

    name: str
    task: str
    dataset: str
    caption: str
    line: int
    figure: bool
    metrics: tuple[str, ...]
    modalities: tuple[str, ...]
    task_modalities: tuple[tuple[str, ...], ...]
    settings: Mapping[str, tuple[float, ...]]
    labels: Mapping[str, str]
    combinations: int | None
    runs: int | None
    seed: int | None
    training: Mapping[str, Any]
    claims: tuple[Claim, ...]
    notes: tuple[str, ...]
    rows: Mapping[str, str]
    values: Mapping[str, Mapping[str, Mapping[str, PublishedValue]]]

    @property
    def methods(self) -> tuple[str, ...]:
        """The methods with values, in the printed order."""
        return tuple(self.values)

    def setting(self, setting: str | Sequence[float]) -> str | None:
        """The letter of a setting given as a letter or as missing rates: one per printed group
        (``(0.8, 0.5, 0.2)``) or one per task modality (``(0.8, 0.8, 0.5, 0.2)`` for BraTS,
        where T1 and T1c share a rate). None when the table has no such setting."""
        if isinstance(setting, str):
            return setting if setting in self.settings else None
        rates = [float(rate) for rate in setting]
        width = sum(len(group) for group in self.task_modalities)
        if len(rates) == width != len(self.modalities):
            grouped, start = [], 0
            for group in self.task_modalities:
                shared = rates[start : start + len(group)]
                if any(not math.isclose(r, shared[0], abs_tol=_RATE_TOLERANCE) for r in shared):
                    return None
                grouped.append(shared[0])
                start += len(group)
            rates = grouped
        for letter, printed in self.settings.items():
            if len(printed) == len(rates) and all(
                math.isclose(a, b, abs_tol=_RATE_TOLERANCE) for a, b in zip(printed, rates)
            ):
                return letter
        return None

    def value(
        self, method: str, setting: str | Sequence[float], metric: str | None = None
    ) -> PublishedValue | None:
        """The printed value of ``method`` at ``setting`` (a letter or missing rates, see
        :meth:`setting`) for ``metric``.

        Args:
            method: a method key (:attr:`methods`).
            setting: a setting letter or missing rates.
            metric: one of :attr:`metrics`; may be left out when the table has only one.

        Returns:
            The value, or None where the paper prints none (a method or setting not in the
            table, or a figure).

        Raises:
            ValueError: ``metric`` is not one of the table's metrics, or is left out of a table
                with several.
        """
        metric = self._metric(metric)
        letter = self.setting(setting)
        if letter is None:
            return None
        return self.values.get(method, {}).get(letter, {}).get(metric)

    def mean(
        self, method: str, setting: str | Sequence[float], metric: str | None = None
    ) -> float | None:
        """The printed mean of :meth:`value`, or None; usable as :meth:`Claim.holds`' means."""
        found = self.value(method, setting, metric)
        return None if found is None else found.mean

    def _metric(self, metric: str | None) -> str:
        if metric is None:
            if len(self.metrics) != 1:
                msg = f"{self.name} has metrics {', '.join(self.metrics)}: pass metric="
                raise ValueError(msg)
            return self.metrics[0]
        if metric not in self.metrics:
            msg = f"{self.name} has no metric {metric!r}; its metrics: {', '.join(self.metrics)}"
            raise ValueError(msg)
        return metric


def published_table(name: str, task: str | None = None) -> PublishedTable:
    """One published table: ``table2`` (pass ``task``: ``nuscenes`` or ``iemocap``),
    ``table3``, ``table4``, ``table5``, ``table8`` or ``fig7``.

    Args:
        name: one of :data:`TABLES`.
        task: for ``table2``, one of :data:`TABLE2_TASKS`; for the others None or their task.

    Raises:
        ValueError: an unknown table, a missing or unknown Table 2 task, or a task the table
            is not about; the message names the known ones.
    """
    if name not in TABLES:
        raise ValueError(f"unknown published table {name!r}; known: {', '.join(TABLES)}")
    if name == "table2":
        if task not in TABLE2_TASKS:
            got = "no task" if task is None else f"task {task!r}"
            msg = f"table2 has one table per task ({', '.join(TABLE2_TASKS)}), got {got}"
            raise ValueError(msg)
    else:
        own = _raw()["tables"][name]["task"]
        if task is not None and task != own:
            raise ValueError(f"{name} is a table of task {own!r}, not {task!r}")
    return _table(name, task)


def published_tables(task: str | None = None) -> tuple[PublishedTable, ...]:
    """Every published table (Table 2 once per task), or those of ``task`` only (none for a
    task the paper has no table of)."""
    tables = []
    for name in TABLES:
        for each in TABLE2_TASKS if name == "table2" else (None,):
            table = published_table(name, each)
            if task is None or table.task == task:
                tables.append(table)
    return tuple(tables)


@lru_cache(maxsize=1)
def _raw() -> dict[str, Any]:
    """The JSON, numbers as Decimal so that the printed digits survive (``84.00``)."""
    text = resources.files(__package__).joinpath(DATA).read_text(encoding="utf-8")
    return json.loads(text, parse_float=Decimal)


@cache
def _table(name: str, task: str | None) -> PublishedTable:
    entry = _raw()["tables"][name]
    common: dict[str, Any] = {key: entry[key] for key in ("caption", "line", "figure")}
    notes = list(entry.get("notes", ()))
    rows: dict[str, str] = {}
    if name == "table2":
        rows = {letter: row["method"] for letter, row in entry["rows"].items()}
        body = entry["tasks"][task]
        notes += body["notes"]
    else:
        body = entry
    values = {
        method: MappingProxyType(
            {
                letter: MappingProxyType(
                    {metric: _value(cell) for metric, cell in by_metric.items()}
                )
                for letter, by_metric in by_setting.items()
            }
        )
        for method, by_setting in (body["values"] or {}).items()
    }
    return PublishedTable(
        name=name,
        task=body["task"],
        dataset=body["dataset"],
        caption=common["caption"],
        line=common["line"],
        figure=common["figure"],
        metrics=tuple(body["metrics"]),
        modalities=tuple(body["modalities"]),
        task_modalities=tuple(tuple(group) for group in body["task_modalities"]),
        settings=MappingProxyType(
            {letter: tuple(float(r) for r in rates) for letter, rates in body["settings"].items()}
        ),
        labels=MappingProxyType(dict(body["labels"])),
        combinations=body["combinations"],
        runs=body["runs"],
        seed=body["seed"],
        training=MappingProxyType(
            {k: float(v) if isinstance(v, Decimal) else v for k, v in body["training"].items()}
        ),
        claims=tuple(_claim(raw) for raw in body["claims"]),
        notes=tuple(notes),
        rows=MappingProxyType(rows),
        values=MappingProxyType(values),
    )


def _value(cell: Mapping[str, Any]) -> PublishedValue:
    mean, std, ci = cell["mean"], cell["std"], cell["ci"]
    text = str(mean)
    if std is not None:
        text += f" ± {std}"
    if ci is not None:
        text += f" [{ci[0]}, {ci[1]}]"
    return PublishedValue(
        mean=float(mean),
        std=None if std is None else float(std),
        ci=None if ci is None else (float(ci[0]), float(ci[1])),
        runs=cell["runs"],
        text=text,
    )


def _claim(raw: Mapping[str, Any]) -> Claim:
    def names(key: str) -> tuple[str, ...] | None:
        return None if raw[key] is None else tuple(raw[key])

    def number(key: str) -> float | None:
        return None if raw[key] is None else float(raw[key])

    return Claim(
        id=raw["id"],
        kind=raw["kind"],
        text=raw["text"],
        line=raw["line"],
        quote=raw["quote"],
        method=raw["method"],
        others=names("others"),
        settings=names("settings"),
        metrics=tuple(raw["metrics"]),
        value=number("value"),
        tolerance=number("tolerance"),
        holds_in_tables=raw["holds_in_tables"],
        note=raw["note"],
    )
