"""Importing the packages of optional extras, with an error that says which extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, extra: str, purpose: str, package: str | None = None) -> ModuleType:
    """``module`` imported, or an ImportError naming ``pip install 'mce[extra]'``.

    Args:
        module: e.g. "h5py" or "monai.inferers".
        extra: the optional extra that installs it, e.g. "iemocap".
        purpose: what needs it, e.g. "reading IEMOCAP".
        package: its name on PyPI when it differs from the module's (nuscenes-devkit).
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:  # pragma: no cover - depends on the environment
        package = package or module.partition(".")[0]
        raise ImportError(
            f"{purpose} needs {package}: pip install 'mce[{extra}]' (or pip install {package})"
        ) from error
