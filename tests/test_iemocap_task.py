"""The iemocap task end to end through the command line, on a folder in the real layout."""

from __future__ import annotations

import json
import shutil

import pytest
from data.iemocap_fixture import write_iemocap_fixture

from mce.train import main

FAST = ["--epochs", "2", "--batch-size", "16", "--pretrain-steps", "10", "--no-progress"]
COMBINATIONS = (
    "acoustic",
    "lexical",
    "acoustic+lexical",
    "visual",
    "acoustic+visual",
    "lexical+visual",
    "acoustic+lexical+visual",
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_iemocap_fixture(tmp_path_factory.mktemp("iemocap"))


@pytest.mark.slow
def test_trains_and_reports_accuracy_uar_and_f1_on_every_combination(data_dir, tmp_path, capsys):
    argv = ["--task", "iemocap", "--data-dir", str(data_dir), "--missing-rates", "a"]
    assert main(argv + FAST + ["--out", str(tmp_path), "--cache-dir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    for metric in ("weighted accuracy", "uar", "f1"):
        assert f"iemocap: {metric} (%) on every modality combination" in printed
        assert f"| combination | mce ({metric}) | baseline ({metric}) |" in printed
    results = json.loads((tmp_path / "results.json").read_text())
    for method in ("mce", "baseline"):
        assert set(results["scores"][method]) == {*COMBINATIONS, "average"}
        for metric in ("uar", "f1"):
            scores = results["metrics"][method][metric]
            assert set(scores) == {*COMBINATIONS, "average"}
            assert scores["average"] == pytest.approx(sum(scores[c] for c in COMBINATIONS) / 7)
    assert results["missing_rates"]["stated"] == {"acoustic": 0.2, "lexical": 0.5, "visual": 0.8}
    config = json.loads((tmp_path / "config.json").read_text())["config"]
    assert config["fold"] == 1 and config["select"] == "last"


@pytest.mark.slow
def test_fold_and_validation_selection(data_dir, tmp_path):
    argv = ["--task", "iemocap", "--data-dir", str(data_dir), "--method", "baseline"]
    out = tmp_path / "fold2"
    assert main(argv + FAST + ["--fold", "2", "--select", "validation", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["fold"] == 2
    selection = results["selection"]
    assert selection["mode"] == "validation" and selection["metric"] == "f1"
    assert selection["best_epoch"]["baseline"] in (1, 2)  # epochs count from 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--fold", "11"], "fold"),
        (["--fold", "0"], "fold"),
    ],
)
def test_bad_fold_exits_2(data_dir, argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--task", "iemocap", "--data-dir", str(data_dir), *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_broken_folder_is_a_named_error(data_dir, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(data_dir, broken)
    (broken / "V" / "denseface.h5").unlink()
    argv = ["--task", "iemocap", "--data-dir", str(broken), "--out", str(tmp_path / "run")]
    assert main(argv + FAST) == 1
    assert "denseface.h5 does not exist" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_an_experiment_without_folds_reuses_its_finished_cells(data_dir, tmp_path):
    from mce.experiment.cli import main as experiment

    argv = ["--task", "iemocap", "--data-dir", str(data_dir), "--variants", "baseline"]
    argv += ["--seeds", "0", "--epochs", "1", "--batch-size", "16", "--out", str(tmp_path)]
    argv += ["--no-figures", "--no-progress"]
    assert experiment(argv) == 0
    results = next((tmp_path / "cells").rglob("results.json"))
    written = results.stat().st_mtime_ns
    assert experiment(argv) == 0  # the finished cell (fold 1 by default) is reused
    assert results.stat().st_mtime_ns == written
