"""A run folder that nothing corrupts: atomic config, one run at a time, named unreadable
files, a full disk, stale temporaries, and resuming a finished run."""

from __future__ import annotations

import errno
import json
import logging
import os

import pytest

from mce.support import checkpoint
from mce.support.checkpoint import TEMPORARY_SUFFIX, DiskFull, write_atomic
from mce.train import main
from mce.training import run_folder
from mce.training.records import FIGURES_MARKER
from mce.training.run_folder import LOCK, lock_folder, remove_temporaries

FAST = ["--epochs", "2", "--pretrain-steps", "2", "--batch-size", "256", "--no-progress"]
BASELINE = FAST + ["--method", "baseline"]


def _interrupted_writer(monkeypatch, name: str) -> None:
    """Make the atomic write of ``name`` die half-way (as a kill or a crash would)."""
    real = checkpoint.write_atomic

    def dying(path, write):
        if os.path.basename(path) != name:
            return real(path, write)

        def half(file):
            file.write(b'{"config": {"tas')
            raise KeyboardInterrupt  # what SIGINT raises; SIGKILL leaves the temporary file

        return real(path, half)

    monkeypatch.setattr(run_folder, "write_atomic", dying)


@pytest.mark.slow
def test_a_kill_while_config_json_is_written_loses_nothing(tmp_path, monkeypatch) -> None:
    out = tmp_path / "run"
    _interrupted_writer(monkeypatch, "config.json")
    assert main(BASELINE + ["--out", str(out)]) == 130  # interrupted
    assert not out.exists()  # nothing was started: the folder is as it was
    monkeypatch.undo()
    assert main(BASELINE + ["--out", str(out)]) == 0
    saved = (out / "config.json").read_text()
    _interrupted_writer(monkeypatch, "config.json")
    (out / "results.json").unlink()  # an unfinished run, resumed
    assert main(BASELINE + ["--out", str(out), "--resume"]) == 130
    assert (out / "config.json").read_text() == saved  # the old file, whole
    assert not list(out.rglob(f"*{TEMPORARY_SUFFIX}"))
    monkeypatch.undo()
    assert main(BASELINE + ["--out", str(out), "--resume"]) == 0


@pytest.mark.slow
def test_unreadable_run_files_are_named(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(BASELINE + ["--out", str(out)]) == 0
    (out / "results.json").unlink()
    good = (out / "config.json").read_text()
    (out / "config.json").write_text("")  # what a full disk left with a plain write
    assert main(BASELINE + ["--out", str(out), "--resume"]) == 1
    err = capsys.readouterr().err
    assert f"{out / 'config.json'} is unreadable" in err and "new --out" in err
    (out / "config.json").write_text(good)
    (out / "masks.pt").write_bytes(b"\0" * 10)
    assert main(BASELINE + ["--out", str(out), "--resume"]) == 1
    err = capsys.readouterr().err
    assert str(out / "masks.pt") in err and "masks are lost" in err
    assert main(BASELINE + ["--out", str(tmp_path / "fresh")]) == 0
    fresh = tmp_path / "fresh"
    (fresh / "results.json").unlink()
    (fresh / "baseline" / "checkpoint.pt").write_bytes(b"PK\0\0 truncated")
    assert main(BASELINE + ["--out", str(fresh), "--resume"]) == 1
    err = capsys.readouterr().err
    assert str(fresh / "baseline" / "checkpoint.pt") in err and "delete it" in err


@pytest.mark.slow
def test_a_second_run_in_the_same_folder_is_refused(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    with lock_folder(out):
        assert main(BASELINE + ["--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert f"{out} is in use by another run (PID {os.getpid()})" in err
        assert not (out / "config.json").exists()
    assert not out.exists()  # the holder wrote nothing: lock file and folder gone
    assert main(BASELINE + ["--out", str(out)]) == 0
    assert (out / LOCK).is_file()  # released, and left beside the run's files
    with lock_folder(out):
        pass


def test_a_second_process_is_refused_while_the_first_runs(tmp_path) -> None:
    import subprocess
    import sys

    out = tmp_path / "run"
    with subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from mce.training.run_folder import lock_folder\n"
         "with lock_folder(Path(sys.argv[1])):\n"
         "    print('held', flush=True); time.sleep(60)", str(out)],
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        try:
            assert holder.stdout.readline().strip() == "held"
            with pytest.raises(run_folder.FolderInUse, match=f"PID {holder.pid}"):
                with lock_folder(out):
                    pass
        finally:
            holder.kill()
    with lock_folder(out):  # a killed holder's lock is gone with its process
        pass


def test_a_full_disk_is_a_message_and_leaves_no_temporary(tmp_path, monkeypatch, capsys) -> None:
    out = tmp_path / "run"
    real_fsync = os.fsync

    def full(fd):
        if os.fstat(fd).st_size > 1000:  # the checkpoint, not config.json
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(checkpoint.os, "fsync", full)
    assert main(BASELINE + ["--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no space left on the device of") and str(out) in err
    assert "free" in err and "--resume" in err and "Traceback" not in err
    assert not list(out.rglob(f"*{TEMPORARY_SUFFIX}"))
    with pytest.raises(DiskFull):
        write_atomic(tmp_path / "x.bin", lambda file: file.write(b"\0" * 2000))
    assert not (tmp_path / "x.bin").exists()


@pytest.mark.slow
def test_stale_temporaries_are_removed_at_start(tmp_path) -> None:
    out = tmp_path / "run"
    assert main(BASELINE + ["--out", str(out)]) == 0
    (out / "results.json").unlink()
    stale = [out / f".config.json.k2j4{TEMPORARY_SUFFIX}", out / "baseline" / f".checkpoint.pt.x{TEMPORARY_SUFFIX}"]
    for path in stale:
        path.write_bytes(b"partial")
    keep = out / "baseline" / "notes.txt"
    keep.write_text("mine")
    assert main(BASELINE + ["--out", str(out), "--resume"]) == 0
    assert not any(path.exists() for path in stale) and keep.exists()
    assert remove_temporaries(out) == []


@pytest.mark.slow
def test_resuming_a_finished_run_changes_nothing(tmp_path, capsys, caplog) -> None:
    out = tmp_path / "run"
    assert main(BASELINE + ["--out", str(out)]) == 0
    figures = f"\n\n{FIGURES_MARKER}\n\n## Figures\n\n![fig_scores](fig_scores.png)\n"
    with (out / "results.md").open("a") as file:
        file.write(figures)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    with caplog.at_level(logging.INFO, logger="mce.train"):
        assert main(BASELINE + ["--out", str(out), "--resume"]) == 0
    assert "is complete" in caplog.text and "--force-eval" in caplog.text
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert main(BASELINE + ["--out", str(out), "--resume", "--epochs", "3"]) == 1
    assert "differ" in capsys.readouterr().err  # other settings are still refused
    assert main(BASELINE + ["--out", str(out), "--resume", "--force-eval"]) == 0
    rescored = json.loads((out / "results.json").read_text())
    assert rescored["scores"] == json.loads(before[out / "results.json"])["scores"]
    assert (out / "results.md").read_text().endswith(figures)  # the figures section is kept
    with pytest.raises(SystemExit):
        main(BASELINE + ["--out", str(out), "--force-eval"])
    assert "--force-eval re-scores a finished run" in capsys.readouterr().err


def test_an_experiment_cell_in_use_is_refused(tmp_path) -> None:
    from mce.experiment import ExperimentSpec, run_experiment

    spec = ExperimentSpec(
        task="digits",
        variants=("baseline",),
        settings=((0.5, 0.2),),
        seeds=(0,),
        overrides={"epochs": 1, "batch_size": 2048},
    )
    cell = tmp_path / "cells" / "baseline" / "rates0.5-0.2" / "seed0"
    with lock_folder(cell):
        with pytest.raises(run_folder.FolderInUse, match=f"{cell} is in use by another run"):
            run_experiment(spec, tmp_path, progress=False, figures=False)
    summary = run_experiment(spec, tmp_path, progress=False, figures=False)
    assert summary["cells_computed"] == 1


@pytest.mark.slow
def test_an_unreadable_log_csv_is_named(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(BASELINE + ["--out", str(out)]) == 0
    (out / "results.json").unlink()
    log = out / "baseline" / "log.csv"
    log.write_bytes(b"\xff\xfe\x00garbage")
    assert main(BASELINE + ["--out", str(out), "--resume"]) == 1
    err = capsys.readouterr().err
    assert f"{log} is unreadable" in err and "move it away" in err
    log.write_text("epoch,loss\n0,1.0\n")  # a CSV of something else
    assert main(BASELINE + ["--out", str(out), "--resume"]) == 1
    assert f"{log} is unreadable" in capsys.readouterr().err
    log.unlink()
    assert main(BASELINE + ["--out", str(out), "--resume"]) == 0


def test_an_unreadable_experiment_record_is_named(tmp_path) -> None:
    from mce.experiment import ExperimentSpec, run_experiment

    spec = ExperimentSpec(
        task="digits",
        variants=("baseline",),
        settings=((0.5, 0.2),),
        seeds=(0,),
        overrides={"epochs": 1, "batch_size": 2048},
    )
    (tmp_path / "experiment.json").write_text("")  # what a kill left before atomic writes
    with pytest.raises(ValueError, match="experiment.json is unreadable.*delete it"):
        run_experiment(spec, tmp_path, progress=False, figures=False)
