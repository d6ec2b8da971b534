"""What MCE's terms did during a run, read from its ``log.csv``, and the closing lines of
``python -m mce.train``: the MCE − baseline difference, the terms that were inactive, and the
commands to run next.

At some missing rates parts of MCE cannot act: where no training sample keeps two modalities,
no row drops a present modality (L_aux is 0) and every Shapley value is a singleton's utility;
where the model's utilities exceed the frozen unimodal models', B_m = max(U_m - phi_m, 0) / n_m
is 0 and so are that modality's L_single and L_aux weights. A user should hear of it.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TermActivity", "term_activity", "closing_lines", "INACTIVE_RATES_WARNING"]

INACTIVE_RATES_WARNING = (
    "no training sample has two modalities: L_aux and Shapley interactions are inactive at "
    "these rates (each Shapley value is a single modality's utility and L_sub only reweighs "
    "L_task); choose rates whose present fractions sum above 1, e.g. --missing-rates 0.5,0.2"
)


@dataclass(frozen=True)
class TermActivity:
    """Per-step activity of MCE's terms over a run.

    Attributes:
        steps: training steps logged.
        aux_zero: share of steps with L_aux = 0 (None: L_aux not trained).
        single_zero: share of steps with L_single = 0 (None: L_single not trained).
        b_zero: modality -> share of steps with B_m = 0 (empty: factor B not used).
    """

    steps: int
    aux_zero: float | None
    single_zero: float | None
    b_zero: Mapping[str, float]


def _zero_share(rows: Sequence[Mapping[str, float]], key: str) -> float | None:
    values = [row[key] for row in rows if key in row and not math.isnan(row[key])]
    if not values:
        return None
    return sum(1 for value in values if value == 0.0) / len(values)


def term_activity(rows: Sequence[Mapping[str, float]], modalities: Sequence[str]) -> TermActivity:
    """The activity of L_aux, L_single and B_m in a method's ``log.csv`` rows
    (:func:`mce.training.loggers.read_log`)."""
    b_zero = {}
    for name in modalities:
        share = _zero_share(rows, f"B/{name}")
        if share is not None:
            b_zero[name] = share
    return TermActivity(
        steps=len(rows),
        aux_zero=_zero_share(rows, "l_aux"),
        single_zero=_zero_share(rows, "l_single"),
        b_zero=b_zero,
    )


def _steps(share: float, steps: int) -> str:
    return f"{round(share * steps)} of {steps} steps"


def _activity_line(activity: TermActivity) -> str:
    inactive, active = [], []
    steps = activity.steps
    if activity.aux_zero is not None:
        part = f"L_aux 0 on {_steps(activity.aux_zero, steps)}"
        (inactive if activity.aux_zero > 0 else active).append(part)
    for name, share in activity.b_zero.items():
        part = f"B/{name} 0 on {_steps(share, steps)}"
        (inactive if share > 0 else active).append(part)
    if activity.single_zero is not None and activity.single_zero > 0:
        inactive.append(f"L_single 0 on {_steps(activity.single_zero, steps)}")
    if not inactive:
        return "mce terms: every term acted on every step (" + ", ".join(active) + ")"
    return "mce terms inactive at times: " + "; ".join(inactive) + " (" + ", ".join(active) + ")"


def closing_lines(
    scores: Mapping[str, Mapping[str, float]],
    activity: TermActivity | None,
    *,
    task: str,
    rates: Sequence[float],
    seed: int,
    out: str,
) -> list[str]:
    """What ``python -m mce.train`` prints after the table.

    Args:
        scores: {method: {combination or "average": score in %}}.
        activity: the MCE run's :func:`term_activity`, or None when MCE was not trained.
        task: the task as the run recorded it (for the commands): a built-in name or
            ``package.module:ATTRIBUTE``; another name (a ``Task`` object's) is written as
            ``package.module:ATTRIBUTE``, which the user fills in.
        rates: the missing rates trained with.
        seed: the run's seed.
        out: the run folder.
    """
    lines = []
    if "mce" in scores and "baseline" in scores:
        difference = scores["mce"]["average"] - scores["baseline"]["average"]
        setting = ",".join(f"{rate:g}" for rate in rates)
        lines.append(
            f"mce − baseline: {difference:+.2f} points on average, one seed ({seed}); one seed "
            "cannot tell such a difference from noise: `python -m mce.experiment --task "
            f"{_task_flag(task)} --settings {setting} --seeds 0-9` compares them over 10 seeds "
            "with confidence intervals and paired p-values"
            + ("" if _findable(task) else f" (the module and name of task {task!r})")
        )
    if activity is not None:
        lines.append(_activity_line(activity))
    parent = str(Path(out).parent)
    lines.append(
        f"next: `python -m mce.report {shlex.quote(out)}` draws the figures; "
        f"`tensorboard --logdir {shlex.quote(parent)}` shows the training curves"
    )
    return lines


def _findable(task: str) -> bool:
    """Whether ``--task`` finds the recorded ``task`` by its name: a built-in one or
    ``package.module:ATTRIBUTE`` (a ``Task`` object's own name is not enough)."""
    from mce.tasks import TASKS

    return task in TASKS or ":" in task


def _task_flag(task: str) -> str:
    """The value of ``--task`` that finds ``task`` again."""
    return shlex.quote(task) if _findable(task) else "package.module:ATTRIBUTE"
