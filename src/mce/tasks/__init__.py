"""Per-data-set recipes: model, data, metric, hyper-parameters (Table 1 of the paper).

Built-in tasks are looked up by name; a user's own task by ``package.module:ATTRIBUTE``.

A recipe puts the other parts together (data readers, model, methods, evaluation, the
hyper-parameters of :mod:`mce.training.config`) but never runs itself: it imports nothing of the
driver (the rest of :mod:`mce.training`), inference or the experiments.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

from mce.tasks.base import (
    NO_TARGET,
    Splits,
    Task,
    TrainedOn,
    classification_loss,
    classification_utility,
)

__all__ = [
    "Task",
    "Splits",
    "TrainedOn",
    "NO_TARGET",
    "TASKS",
    "get_task",
    "task_from_arguments",
    "classification_loss",
    "classification_utility",
]

# name -> module holding TASK; imported on first use (some tasks need optional packages)
TASKS = {
    "digits": "mce.tasks.digits",
    "avmnist": "mce.tasks.avmnist",
    "iemocap": "mce.tasks.iemocap",
    "brats": "mce.tasks.brats",
    "nuscenes": "mce.tasks.nuscenes",
}


def _load_attribute(spec: str) -> object:
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"task {spec!r} must be package.module:ATTRIBUTE")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"task {spec!r}: cannot import module {module_name!r}: {error}") from error
    if not hasattr(module, attribute):
        raise ValueError(f"task {spec!r}: module {module_name!r} has no attribute {attribute!r}")
    return getattr(module, attribute)


def get_task(name: str, options: Mapping[str, Any] | None = None) -> Task:
    """The built-in task called ``name``, or the ``Task`` at ``package.module:ATTRIBUTE``,
    configured with ``options`` (see :meth:`Task.with_options`).

    Raises:
        ValueError: naming the known tasks, or what could not be imported; an unknown option.
    """
    if ":" in name:
        task = _load_attribute(name)
        if callable(task) and not isinstance(task, Task):
            task = task()
        if not isinstance(task, Task):
            raise ValueError(
                f"task {name!r} is a {type(task).__name__}, not an mce.tasks.Task "
                "(or a function returning one)"
            )
        return task.with_options(options or {})
    if name not in TASKS:
        raise ValueError(
            f"unknown task {name!r}; known tasks: {', '.join(TASKS)} "
            "(or package.module:ATTRIBUTE for your own)"
        )
    return importlib.import_module(TASKS[name]).TASK.with_options(options or {})


def task_from_arguments(name: str, option_items: Sequence[str]) -> tuple[Task, dict[str, Any]]:
    """The task of ``--task NAME`` configured by ``--task-option NAME=VALUE`` items, and all of
    its options resolved and typed (for the run's config).

    Raises:
        ValueError: an item that is not NAME=VALUE, or what :func:`get_task` raises.
    """
    given: dict[str, Any] = {}
    for item in option_items:
        option, equals, value = item.partition("=")
        if not equals or not option:
            raise ValueError(f"--task-option {item!r}: expected NAME=VALUE")
        given[option] = value
    task = get_task(name, given)
    return task, dict(task.options)
