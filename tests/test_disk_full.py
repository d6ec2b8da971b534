"""A full disk is one line naming the folder, whichever error torch raises for it, and a run
resumed once space is freed finishes: with torch's own error shape (monkeypatched) and on a
real small filesystem (a 300 kB tmpfs, where mounting is permitted)."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import subprocess
import sys
import types

import pytest
import torch
from torch import nn

from mce.nn.fusion import ConcatFusion
from mce.nn.model import MultimodalModel
from mce.support import checkpoint
from mce.support.checkpoint import (
    TEMPORARY_SUFFIX,
    DiskFull,
    is_disk_full,
    save_atomic,
    write_atomic,
)
from mce.tasks.digits import TASK as DIGITS
from mce.train import main

TORCH_MESSAGE = "[enforce fail at inline_container.cc:672] . unexpected pos 261056 vs 260944"
ARGV = ["--method", "baseline", "--epochs", "1", "--batch-size", "512", "--no-progress"]


def _torch_disk_full() -> RuntimeError:
    """What ``torch.save`` raises on a full disk: a RuntimeError whose context is the
    OSError(ENOSPC) of the file's write."""
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError(TORCH_MESSAGE)  # noqa: B904 - torch's shape: context, no cause
    except RuntimeError as error:
        return error


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


def _small_model() -> MultimodalModel:
    """A digits model small enough that a whole run fits in 300 kB (its checkpoint, weights
    and Adam's two moments, is about 130 kB)."""
    dim, classes = 32, 10
    return MultimodalModel(
        ("image", "audio"),
        {
            "image": nn.Sequential(nn.Flatten(), nn.Linear(8 * 8, dim), nn.Tanh()),
            "audio": nn.Sequential(nn.Flatten(), nn.Linear(13 * 16, dim), nn.Tanh()),
        },
        {name: nn.Linear(dim, classes) for name in ("image", "audio")},
        ConcatFusion(2, dim),
        nn.Linear(2 * dim, classes),
        None,
        dim,
    )


@pytest.fixture
def small_task(monkeypatch) -> list[str]:
    """``--task small_digits:TASK``: the digits data with :func:`_small_model`."""
    module = types.ModuleType("small_digits")
    module.TASK = dataclasses.replace(DIGITS, name="small-digits", build_model=_small_model)
    monkeypatch.setitem(sys.modules, "small_digits", module)
    return ["--task", "small_digits:TASK"]


def test_is_disk_full_follows_the_chain():
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(_torch_disk_full())
    caused = ValueError("wrapped")
    caused.__cause__ = _torch_disk_full()
    assert is_disk_full(caused)
    assert not is_disk_full(RuntimeError(TORCH_MESSAGE))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    looped = RuntimeError("a")
    looped.__context__ = RuntimeError("b")
    looped.__context__.__context__ = looped
    assert not is_disk_full(looped)


@pytest.mark.parametrize("shape", ["torch", "oserror"])
def test_every_atomic_writer_reports_a_full_disk(tmp_path, shape):
    """Checkpoints, caches, safetensors and experiment files all go through write_atomic."""

    def fill(file):
        file.write(b"\0" * 3000)
        if shape == "torch":
            raise _torch_disk_full()
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DiskFull) as caught:
        write_atomic(tmp_path / "file.bin", fill)
    message = str(caught.value)
    assert message.startswith(f"no space left on the device of {tmp_path} writing file.bin")
    assert "2.9 KB written" in message and "--resume" in message
    assert os.listdir(tmp_path) == []  # the temporary file is gone
    with pytest.raises(RuntimeError, match="unrelated"):  # other errors pass unchanged

        def broken(file):
            raise RuntimeError("unrelated")

        write_atomic(tmp_path / "file.bin", broken)


@pytest.mark.slow
def test_torch_shaped_error_at_the_first_checkpoint_is_one_line(
    tmp_path, monkeypatch, capsys, small_task
):
    out = tmp_path / "run"
    real_save = torch.save

    def full_at_checkpoint(obj, file, *args, **kwargs):
        if not (isinstance(obj, dict) and "optimizer" in obj):  # the masks: written
            return real_save(obj, file, *args, **kwargs)
        file.write(b"\0" * 1000)
        raise _torch_disk_full()

    monkeypatch.setattr(checkpoint.torch, "save", full_at_checkpoint)
    assert main([*ARGV, *small_task, "--out", str(out)]) == 1
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"error: no space left on the device of {out / 'baseline'}")
    assert "checkpoint.pt" in line and "--resume" in line
    assert not list(out.rglob(f"*{TEMPORARY_SUFFIX}"))
    monkeypatch.setattr(checkpoint.torch, "save", real_save)  # space freed
    assert main([*ARGV, *small_task, "--out", str(out), "--resume"]) == 0
    assert (out / "results.json").is_file()


def test_a_full_disk_outside_the_atomic_writes_is_one_line(tmp_path, monkeypatch, capsys):
    import mce.training.cli

    def full(*args, **kwargs):
        raise _torch_disk_full()

    monkeypatch.setattr(mce.training.cli, "run", full)
    assert main([*ARGV, "--out", str(tmp_path / "run")]) == 1
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"error: no space left on the device of {tmp_path / 'run'} (")
    monkeypatch.setattr(
        mce.training.cli, "run", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("x"))
    )
    with pytest.raises(RuntimeError, match="x"):  # not a full disk: not swallowed
        main([*ARGV, "--out", str(tmp_path / "other")])


def test_an_experiment_on_a_full_disk_is_one_line(tmp_path, monkeypatch, capsys):
    from mce.experiment import cli

    argv = ["--variants", "baseline", "--seeds", "0", "--no-progress", "--no-figures"]
    real_fsync = os.fsync

    def full(fd):  # the experiment's own files
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.os, "fsync", full)
    assert cli.main([*argv, "--out", str(tmp_path / "exp")]) == 1
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(
        f"python -m mce.experiment: error: no space left on the device of {tmp_path / 'exp'}"
    )
    assert line.endswith("run the same command again to continue")
    monkeypatch.setattr(checkpoint.os, "fsync", real_fsync)

    def torch_full(*args, **kwargs):
        raise _torch_disk_full()

    monkeypatch.setattr(cli, "run_experiment", torch_full)
    assert cli.main([*argv, "--out", str(tmp_path / "exp")]) == 1
    assert "no space left on the device of" in _one_line(capsys.readouterr().err)


def test_figures_on_a_full_disk_are_one_line(tmp_path, monkeypatch, capsys):
    from mce.experiment import report

    def full(*args, **kwargs):
        raise _torch_disk_full()

    monkeypatch.setattr(report, "build_report", full)
    assert report.main([str(tmp_path)]) == 1
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"error: no space left on the device of {tmp_path}")


@pytest.fixture
def small_disk(tmp_path):
    """A 300 kB tmpfs mounted in ``tmp_path`` (skipped where mounting is not permitted)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command: the real full-disk test needs a 300 kB tmpfs")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode:
        reason = mounted.stderr.strip() or f"exit status {mounted.returncode}"
        pytest.skip(f"mounting a tmpfs is not permitted here ({reason}); CI runs it as root")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_a_real_full_disk_is_one_line_and_resume_finishes(small_disk, small_task, capsys):
    out = small_disk / "run"
    argv = [*ARGV, *small_task, "--out", str(out)]
    # leave room for the folder's first files (config, masks, logs: under 64 kB), not for the
    # checkpoint as well
    ballast = small_disk / "ballast"
    ballast.write_bytes(b"\0" * (shutil.disk_usage(small_disk).free - 100 * 1024))
    assert main(argv) == 1
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"error: no space left on the device of {out}")
    assert "checkpoint.pt" in line and "--resume" in line
    assert not list(out.rglob(f"*{TEMPORARY_SUFFIX}"))
    assert (out / "config.json").is_file() and not (out / "baseline" / "checkpoint.pt").exists()

    ballast.unlink()  # space freed
    assert main([*argv, "--resume"]) == 0
    capsys.readouterr()
    results = json.loads((out / "results.json").read_text())
    assert set(results["scores"]) == {"baseline"}
    assert (out / "baseline" / "checkpoint.pt").is_file()


def test_save_atomic_on_a_real_full_disk_raises_disk_full(small_disk):
    state = {"weights": torch.zeros(100_000)}  # 400 kB: more than the whole disk
    with pytest.raises(DiskFull, match=f"no space left on the device of {small_disk}"):
        save_atomic(state, small_disk / "checkpoint.pt")
    assert os.listdir(small_disk) == []
