"""Atomic checkpoints holding everything an exact resume needs."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

__all__ = ["load_checkpoint", "save_atomic", "write_atomic"]


def write_atomic(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """``write(file)`` to a temporary file beside ``path``, fsync, then rename over ``path``: a
    reader sees the old file or the new one, never a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def save_atomic(state: dict[str, Any], path: str | Path) -> None:
    """``torch.save`` written atomically (see :func:`write_atomic`)."""
    write_atomic(path, lambda file: torch.save(state, file))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_atomic` (tensors and plain containers only).

    Raises:
        ValueError: naming the file when it is missing or corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise ValueError(
            f"checkpoint {path} is corrupt or not an mce checkpoint: {error}"
        ) from error
