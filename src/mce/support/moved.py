"""The import paths of the modules that moved into packages in mce 0.2, kept for one release.

``from mce.shapley import shapley_values`` still works and warns (``DeprecationWarning``) with
the new path, ``mce.science.shapley``; so do ``import mce.shapley``, attribute access on it,
``from mce.shapley import *``, patching through it (``monkeypatch.setattr("mce.config.X", ...)``
patches the module itself) and unpickling an object saved under an old path. Type checkers do
not see the old paths (no files stand there). The old paths go in mce 0.3.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import warnings
from types import ModuleType
from typing import Any

__all__ = ["MOVED", "MovedModule", "install"]

MOVED: dict[str, str] = {
    "mce.shapley": "mce.science.shapley",
    "mce.sampling": "mce.science.sampling",
    "mce.lce": "mce.science.lce",
    "mce.rce": "mce.science.rce",
    "mce.model": "mce.nn.model",
    "mce.dense": "mce.nn.dense",
    "mce.cli": "mce.training.cli",
    "mce.run": "mce.training.run",
    "mce.trainer": "mce.training.trainer",
    "mce.pretrain": "mce.training.pretrain",
    "mce.records": "mce.training.records",
    "mce.run_folder": "mce.training.run_folder",
    "mce.activity": "mce.training.activity",
    "mce.config": "mce.training.config",
    "mce.loggers": "mce.training.loggers",
    "mce.evaluate": "mce.evaluation.combinations",
    "mce.metrics": "mce.evaluation.metrics",
    "mce.segmentation": "mce.tasks.brats.segmentation",
    "mce.stats": "mce.experiment.stats",
    "mce.reference": "mce.ops.reference",
    "mce.checkpoint": "mce.support.checkpoint",
    "mce.seeding": "mce.support.seeding",
    "mce.distributed": "mce.support.distributed",
    "mce.bits": "mce.support.bits",
    "mce.typing": "mce.support.typing",
    "mce.grid": "mce.support.grid",
    "mce.data.grid": "mce.support.grid",
}


class MovedModule(ModuleType):
    """Stands at an old module path: each attribute read warns and comes from the new module."""

    def __init__(self, old: str, new: str) -> None:
        super().__init__(old, f"Moved to :mod:`{new}`; this path goes in mce 0.3.")
        self.__dict__["_new"] = new
        self.__dict__["__spec__"] = importlib.machinery.ModuleSpec(old, None)

    def _target(self) -> ModuleType:
        new = self.__dict__["_new"]
        warnings.warn(
            f"{self.__name__} moved to {new}: import from {new} (the old path goes in mce 0.3)",
            DeprecationWarning,
            stacklevel=3,
        )
        return importlib.import_module(new)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name != "__all__":  # module scans pass by quietly
            raise AttributeError(name)
        return getattr(self._target(), name)

    def __setattr__(self, name: str, value: Any) -> None:  # patching an old path patches the module
        setattr(self._target(), name, value)

    def __delattr__(self, name: str) -> None:
        delattr(self._target(), name)

    def __dir__(self) -> list[str]:
        return dir(importlib.import_module(self.__dict__["_new"]))


def install() -> None:
    """Register a :class:`MovedModule` at every old path not already imported, and as the
    attribute of its already imported parent package unless the parent has that name already
    (``mce.run`` stays the function)."""
    for old, new in MOVED.items():
        module = sys.modules.setdefault(old, MovedModule(old, new))
        parent, _, name = old.rpartition(".")
        if parent in sys.modules and name not in vars(sys.modules[parent]):
            setattr(sys.modules[parent], name, module)
