"""Atomic checkpoints holding everything an exact resume needs."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

__all__ = [
    "DiskFull",
    "disk_full_message",
    "is_disk_full",
    "load_checkpoint",
    "save_atomic",
    "write_atomic",
    "TEMPORARY_SUFFIX",
]

TEMPORARY_SUFFIX = ".partial"  # of the temporary file an atomic write renames into place


class DiskFull(OSError):
    """An atomic write ran out of disk space (the temporary file is removed)."""

    def __str__(self) -> str:
        return str(self.strerror)


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error``, or an exception it was raised from or while handling
    (``__cause__``, ``__context__``, followed to the end), is an ``OSError`` with errno
    ENOSPC. ``torch.save`` on a full disk raises ``RuntimeError: [enforce fail at
    inline_container.cc] unexpected pos ...`` whose context is that ``OSError``."""
    pending, seen = [error], set()
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno == errno.ENOSPC:
            return True
        pending += [current.__cause__, current.__context__]
    return False


def disk_full_message(
    folder: Path, again: str = "run again, with --resume to continue from the last checkpoint"
) -> str:
    """The one-line message of a full disk under ``folder`` (a run's, an experiment's) for a
    write that did not go through :func:`write_atomic`; ``again`` says how to continue."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    free = shutil.disk_usage(existing).free
    return (
        f"no space left on the device of {folder} ({_size(free)} free): free space there (or "
        f"choose another --out) and {again}"
    )


def write_atomic(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """``write(file)`` to a temporary file beside ``path``, fsync, then rename over ``path``: a
    reader sees the old file or the new one, never a partial file.

    Raises:
        DiskFull: the disk filled up, whatever error ``write`` raised for it (see
            :func:`is_disk_full`); the message names the folder, the bytes written before it
            did, and the space free; the temporary file is removed, ``path`` is unchanged.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX, dir=path.parent
    )
    written = 0
    try:
        os.fchmod(handle, 0o666 & ~_umask())  # mkstemp's 0600 would hide the file from others
        with os.fdopen(handle, "wb") as file:
            try:
                write(file)
                file.flush()
                os.fsync(file.fileno())
            finally:
                written = max(written, file.tell())
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if is_disk_full(error):
            free = shutil.disk_usage(path.parent).free
            raise DiskFull(
                errno.ENOSPC,
                f"no space left on the device of {path.parent} writing {path.name}, which "
                f"needs more than the {_size(written)} written when it filled ({_size(free)} "
                "free now): free space there (or choose another --out) and run again, with "
                "--resume to continue from the last checkpoint",
            ) from error
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _size(num_bytes: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if num_bytes < 1024 or unit == "GB":
            return f"{num_bytes:.0f} {unit}" if unit == "bytes" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    raise AssertionError("unreachable")


def save_atomic(state: dict[str, Any], path: str | Path) -> None:
    """``torch.save`` written atomically (see :func:`write_atomic`)."""
    write_atomic(path, lambda file: torch.save(state, file))


def load_checkpoint(path: str | Path, advice: str = "") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_atomic` (tensors and plain containers only).

    Args:
        path: the file.
        advice: what the user can do about an unreadable file, appended to the error.

    Raises:
        ValueError: naming the file when it is missing or corrupt.
    """
    path = Path(path)
    advice = f"; {advice}" if advice else ""
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist{advice}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise ValueError(
            f"checkpoint {path} is corrupt or not an mce checkpoint ({error}){advice}"
        ) from error
