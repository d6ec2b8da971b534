"""Per-data-set recipes: model, data, metric, hyper-parameters (Table 1 of the paper)."""

from __future__ import annotations

from mce.tasks.base import Task

__all__ = ["Task", "TASKS", "get_task"]


def _digits() -> Task:
    from mce.tasks.digits import TASK

    return TASK


def _avmnist() -> Task:
    from mce.tasks.avmnist import TASK

    return TASK


TASKS = {"digits": _digits, "avmnist": _avmnist}


def get_task(name: str) -> Task:
    """The task called ``name``; ValueError listing the known ones otherwise."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[name]()
