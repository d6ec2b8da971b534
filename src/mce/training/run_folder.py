"""Guarding a run folder: one run at a time, files that are readable or named as not, no
temporary files left behind.

A run holds an exclusive lock (``fcntl.flock`` on ``.lock``, which records the holder's PID) for its
whole life, so a second run started with the same ``--out`` is refused instead of interleaving
``log.csv`` and overwriting the checkpoints. Every file of the folder is written atomically
(:func:`mce.support.checkpoint.write_atomic`) and every one that cannot be read is reported with its
path and what to do.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from mce.support.checkpoint import TEMPORARY_SUFFIX, write_atomic

__all__ = [
    "LOCK",
    "FolderInUse",
    "lock_folder",
    "read_json",
    "write_text",
    "write_csv",
    "remove_temporaries",
]

LOCK = ".lock"

log = logging.getLogger(__name__)


class FolderInUse(ValueError):
    """Another process holds the run folder's lock."""


@contextlib.contextmanager
def lock_folder(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s exclusive lock for the duration (creating the folder if needed).

    When the holder wrote nothing else, the lock file is removed on exit, and the folder too if
    this call created it: a run that failed before starting leaves the folder as it was.

    Raises:
        FolderInUse: another process holds the lock (its PID is named).
    """
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(handle, 32).decode(errors="replace").strip() or "unknown"
        os.close(handle)
        raise FolderInUse(
            f"{folder} is in use by another run (PID {holder}); wait for it to end, or choose "
            "another --out"
        ) from None
    try:
        os.ftruncate(handle, 0)
        os.pwrite(handle, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        if [entry.name for entry in folder.iterdir()] == [LOCK]:  # the run wrote nothing
            path.unlink(missing_ok=True)
            if created:
                folder.rmdir()
        os.close(handle)


def read_json(path: Path, what: str) -> dict[str, Any]:
    """The JSON object in ``path``.

    Raises:
        ValueError: naming ``path`` when it is missing, unreadable or not a JSON object, and
            saying what to do (``what`` ends the message).
    """
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path} is missing; {what}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is unreadable ({error}); {what}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} does not hold a JSON object; {what}")
    return value


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (the old file or the new one, never a part)."""
    write_atomic(path, lambda file: file.write(text.encode()))


def write_csv(path: Path, fields: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """Write a CSV of ``rows`` (dicts keyed by ``fields``; keys beyond them ignored) atomically."""
    text = io.StringIO()
    writer = csv.DictWriter(text, list(fields), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, text.getvalue())


def remove_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files that atomic writes interrupted by a kill left in ``folder``
    and its subfolders (call it while holding the folder's lock); returns them."""
    stale = [p for p in folder.rglob(f".*{TEMPORARY_SUFFIX}") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        log.info("removed %d temporary file(s) left by an interrupted write in %s", len(stale), folder)
    return stale
