"""`python -m mce.predict` on new files (every sample of a folder, read by the task's own reader
with the run's preprocessing), on runs of a user's task (``--task module:ATTR``), and presence
CSVs that read like its output (an id column, a subset of samples, unknown ids refused)."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import read_csv
from data.avmnist_fixture import write_avmnist_fixture, write_idx, write_wav

import mce
from mce.predict import main as predict
from mce.tasks import NO_TARGET, TrainedOn, get_task
from mce.train import main as train
from mce.training.run import config_for, run

FAST = ["--epochs", "1", "--pretrain-steps", "2", "--no-progress"]


def _train(*argv: str) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert train([*FAST, *argv]) == 0
    finally:
        torch.set_num_threads(threads)


# -- presence CSVs ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("digits") / "run"
    _train("--method", "mce", "--batch-size", "256", "--out", str(out))
    return out


def test_presence_csv_reads_like_the_output(digits_run: Path, tmp_path: Path, capsys) -> None:
    full = tmp_path / "all.csv"
    assert predict([str(digits_run), "--out", str(full)]) == 0
    rows = read_csv(full)
    assert list(rows[0])[:3] == ["id", "target", "prediction"]
    assert [row["id"] for row in rows] == [str(n) for n in range(len(rows))]

    # a subset, by the header "index", in the file's order
    presence = tmp_path / "subset.csv"
    presence.write_text("index,audio,image\n7,1,0\n2,0,1\n5,1,1\n")
    subset = tmp_path / "subset_out.csv"
    assert predict([str(digits_run), "--out", str(subset), "--presence-csv", str(presence)]) == 0
    picked = read_csv(subset)
    assert [(row["id"], row["present"]) for row in picked] == [
        ("7", "audio"),
        ("2", "image"),
        ("5", "image+audio"),
    ]
    assert picked[2]["prediction"] == rows[5]["prediction"]
    assert picked[2]["score_3"] == rows[5]["score_3"]

    # the output read back as a presence file: its present column, its other columns ignored
    back = tmp_path / "back.csv"
    assert predict([str(digits_run), "--out", str(back), "--presence-csv", str(subset)]) == 0
    again = read_csv(back)
    assert [(row["id"], row["present"], row["prediction"]) for row in again] == [
        (row["id"], row["present"], row["prediction"]) for row in picked
    ]

    # unknown ids are named (the first few) and refused
    bad = tmp_path / "unknown.csv"
    bad.write_text("id,image,audio\n3,1,1\nx1,1,0\nx2,0,1\nx3,1,1\nx4,1,1\n")
    assert predict([str(digits_run), "--out", str(tmp_path / "p.csv"), "--presence-csv", str(bad)])
    err = capsys.readouterr().err
    assert "4 id(s) name no sample to predict: x1, x2, x3, ..." in err and "\n" not in err.strip()
    for text, message in (
        ("id,image\n3,1\n", "no column for modality audio"),
        ("id,image,audio,colour\n3,1,1,0\n", "unknown column(s) colour"),
        ("id,present\n3,image+video\n", "present names video"),
        ("id,present\n3,\n", "sample 3 keeps no modality"),
        ("id,image,audio\n3,1,1\n3,0,1\n", "sample 3 listed twice"),
    ):
        bad.write_text(text)
        out = str(tmp_path / "p.csv")
        assert predict([str(digits_run), "--out", out, "--presence-csv", str(bad)]) == 1
        assert message in capsys.readouterr().err


def test_a_task_without_new_files_says_so(digits_run: Path, tmp_path: Path, capsys) -> None:
    argv = [str(digits_run), "--new-files", str(tmp_path), "--out", str(tmp_path / "p.csv")]
    assert predict(argv) == 1
    assert "task 'digits' cannot read new files" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        predict([*argv, "--split", "test"])
    assert "exclude each other" in capsys.readouterr().err


# -- AudioVisionMNIST ---------------------------------------------------------------------------


def test_avmnist_predicts_a_folder_of_new_files(tmp_path: Path) -> None:
    data = write_avmnist_fixture(tmp_path / "data")
    run_dir = tmp_path / "run"
    _train("--task", "avmnist", "--data-dir", str(data), "--method", "mce", "--batch-size", "8",
           "--out", str(run_dir))  # fmt: skip
    new = tmp_path / "new"
    (new / "clips").mkdir(parents=True)
    images = np.random.default_rng(1).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    write_idx(new / "images-idx3-ubyte", images)
    for name, digit in (("b", 5), ("a", 1), ("c", 7)):
        write_wav(new / "clips" / f"{name}.wav", digit, rate=16000)  # resampled to 8 kHz
    out = tmp_path / "new.csv"
    assert predict([str(run_dir), "--new-files", str(new), "--out", str(out), "--attribution"]) == 0
    rows = read_csv(out)
    assert [row["id"] for row in rows] == ["clips/a", "clips/b", "clips/c"]
    assert "target" not in rows[0] and {row["present"] for row in rows} == {"image+audio"}

    # the run's preprocessing: images / 255, MFCCs standardised with the training statistics
    predictor = mce.load(run_dir)
    read = predictor.task.load_new(new, TrainedOn(data))
    assert torch.equal(read.target, torch.full((3,), NO_TARGET))
    assert torch.allclose(read.inputs["image"][:, 0], torch.from_numpy(images / 255.0).float())
    from mce.data.audio import read_wav
    from mce.data.avmnist import clip_features, load_avmnist

    train_audio = load_avmnist(data).random_split(0.7, 0)[0].inputs["audio"]
    mean = train_audio.mean(dim=(0, 3), keepdim=True)
    std = train_audio.std(dim=(0, 3), keepdim=True) + 1e-6
    raw = torch.stack([clip_features(new / "clips" / f"{n}.wav") for n in "abc"])[:, None]
    assert read_wav(new / "clips" / "a.wav")[1] == 16000
    assert torch.allclose(read.inputs["audio"], (raw - mean) / std, atol=1e-5)
    expected = predictor.predict_data(read)
    assert [int(row["prediction"]) for row in rows] == expected.prediction.tolist()

    # recordings only: every sample lacks the image; images only: named by their index
    (new / "images-idx3-ubyte").unlink()
    assert predict([str(run_dir), "--new-files", str(new), "--out", str(out)]) == 0
    assert {row["present"] for row in read_csv(out)} == {"audio"}
    shutil.rmtree(new / "clips")
    write_idx(new / "x-images-idx3-ubyte", images)
    assert predict([str(run_dir), "--new-files", str(new), "--out", str(out)]) == 0
    assert [(row["id"], row["present"]) for row in read_csv(out)] == [
        ("0", "image"),
        ("1", "image"),
        ("2", "image"),
    ]


# -- IEMOCAP ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_iemocap_predicts_new_utterances_with_the_folds_statistics(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py", reason="the iemocap task needs h5py")
    from data.iemocap_fixture import FILES, write_iemocap_fixture

    from mce.data.iemocap import load_iemocap

    data = write_iemocap_fixture(tmp_path / "data", folds=(1, 2))
    run_dir = tmp_path / "run"
    _train("--task", "iemocap", "--data-dir", str(data), "--fold", "2", "--method", "mce",
           "--missing-rates", "a", "--batch-size", "16", "--out", str(run_dir))  # fmt: skip
    splits = load_iemocap(data, 2)
    chosen = list(splits.ids["test"][:4])
    new = tmp_path / "new"
    for modality in ("acoustic", "visual"):  # no lexical file: every utterance lacks it
        (new / FILES[modality]).parent.mkdir(parents=True)
        with h5py.File(data / FILES[modality], "r") as source:
            with h5py.File(new / FILES[modality], "w") as target:
                for name in chosen:
                    if modality == "visual" and name == chosen[0]:
                        continue  # this utterance lacks the visual features too
                    target.create_dataset(name, data=source[name][()])
    out = tmp_path / "new.csv"
    assert predict([str(run_dir), "--new-files", str(new), "--out", str(out)]) == 0
    rows = read_csv(out)
    assert [row["id"] for row in rows] == sorted(chosen)
    present = {row["id"]: row["present"] for row in rows}
    assert present[chosen[0]] == "acoustic"
    assert all(present[name] == "acoustic+visual" for name in chosen[1:])

    # normalised as the run's fold 2: equal to the test split's features of those utterances
    predictor = mce.load(run_dir)
    read = predictor.task.load_new(new, TrainedOn(data, 2))
    test = splits.test
    for n, name in enumerate(read.ids):
        k = splits.ids["test"].index(name)
        length = int(read.lengths["acoustic"][n])
        assert length == int(test.lengths["acoustic"][k])
        assert torch.allclose(
            read.inputs["acoustic"][n, :length], test.inputs["acoustic"][k, :length], atol=1e-6
        )
    # the same predictions as the split's samples given the same modalities
    index = torch.tensor([splits.ids["test"].index(name) for name in read.ids])
    same = test.subset(index).with_presence(read.present)
    expected = predictor.predict_data(same).prediction.tolist()
    assert [int(row["prediction"]) for row in rows] == expected

    # without the fold statistics the acoustic features cannot be read
    moved = tmp_path / "moved"
    shutil.move(str(data), str(moved))
    assert predict([str(run_dir), "--new-files", str(new), "--out", str(out)]) == 1
    assert predict([str(run_dir), "--new-files", str(new), "--out", str(out),
                    "--data-dir", str(moved)]) == 0  # fmt: skip


# -- BraTS --------------------------------------------------------------------------------------


def _new_case(
    source: Path, case: str, folder: Path, name: str, drop: tuple[str, ...] = ()
) -> None:
    """Copy a fixture case under a new name, without its segmentation and ``drop``."""
    (folder / name).mkdir(parents=True)
    for kind in ("t1", "t1ce", "flair", "t2"):
        if kind not in drop:
            target = folder / name / f"{name}_{kind}.nii.gz"
            shutil.copy(source / case / f"{case}_{kind}.nii.gz", target)


@pytest.mark.slow
def test_brats_writes_label_maps_in_the_inputs_grid(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("monai", reason="the brats task needs monai (pip install '.[brats]')")
    nibabel = pytest.importorskip("nibabel", reason="the brats task needs nibabel")
    from data.brats_fixture import flip_case, write_brats_fixture

    from mce.data.brats import LABEL_VALUES

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    data = write_brats_fixture(tmp_path / "data", cases=6)
    run_dir = tmp_path / "run"
    _train("--task", "brats", "--data-dir", str(data), "--method", "baseline",
           "--task-option", "crop=16", "--task-option", "base=4", "--task-option", "levels=3",
           "--missing-rates", "0.3,0.3,0.2,0", "--out", str(run_dir))  # fmt: skip
    other = write_brats_fixture(tmp_path / "other", cases=2, shape=(20, 22, 14), seed=7)
    new = tmp_path / "new"
    _new_case(other, "BraTS20_Training_001", new, "BraTS20_Validation_001")
    _new_case(other, "BraTS20_Training_001", new, "flipped")
    flip_case(new, "flipped", axes=(0, 2))
    _new_case(other, "BraTS20_Training_002", new, "no_t1ce", drop=("t1ce",))
    maps = tmp_path / "maps"
    assert predict([str(run_dir), "--new-files", str(new), "--out", str(maps)]) == 0
    listed = read_csv(maps / "predictions.csv")
    assert [(row["id"], row["present"], row["file"]) for row in listed] == [
        ("BraTS20_Validation_001", "t1+t1ce+flair+t2", "BraTS20_Validation_001.nii.gz"),
        ("flipped", "t1+t1ce+flair+t2", "flipped.nii.gz"),
        ("no_t1ce", "t1+flair+t2", "no_t1ce.nii.gz"),
    ]
    predictor = mce.load(run_dir)
    read = predictor.task.load_new(new)
    canonical = {}
    for n, case in enumerate(read.ids):
        source = nibabel.load(new / case / f"{case}_flair.nii.gz")
        written = nibabel.load(maps / f"{case}.nii.gz")
        assert written.shape == source.shape
        assert np.allclose(written.affine, source.affine)
        labels = np.asarray(written.dataobj)
        assert labels.dtype == np.uint8 and set(np.unique(labels)) <= set(LABEL_VALUES)
        canonical[case] = np.asarray(nibabel.as_closest_canonical(written).dataobj)
        # inside the crop: the predictor's map of the case, as BraTS labels; background outside
        box = read.context["bbox"][n].numpy()
        window = tuple(slice(int(a), int(b)) for a, b in box)
        sample = read.subset(torch.tensor([n]))
        classes = predictor.predict_data(sample).prediction[0].numpy()
        crop = classes[tuple(slice(0, int(b - a)) for a, b in box)]
        assert np.array_equal(canonical[case][window], np.asarray(LABEL_VALUES)[crop])
        outside = np.ones(canonical[case].shape, dtype=bool)
        outside[window] = False
        assert not canonical[case][outside].any()
    # the same images stored in another orientation: the same map in world space
    assert np.array_equal(canonical["flipped"], canonical["BraTS20_Validation_001"])
    assert not np.allclose(
        nibabel.load(maps / "flipped.nii.gz").affine,
        nibabel.load(maps / "BraTS20_Validation_001.nii.gz").affine,
    )
    # a map that marks the brain lands on the brain of each file as stored
    from mce.data.brats import read_new_case, write_label_map

    for case in ("BraTS20_Validation_001", "flipped"):
        read_case = read_new_case(new / case)
        brain = (read_case.image != 0).any(axis=0).astype(np.uint8) * 2
        write_label_map(tmp_path / f"{case}.nii.gz", brain, read_case.bbox,
                        read_case.source_shape, read_case.affine)  # fmt: skip
        stored = np.asarray(nibabel.load(new / case / f"{case}_t2.nii.gz").dataobj)
        written = nibabel.load(tmp_path / f"{case}.nii.gz")
        assert np.array_equal(np.asarray(written.dataobj) == 2, stored != 0)
        assert np.allclose(written.affine, read_case.affine)
    # a presence file picks cases and modalities; a split of a map task is refused
    presence = tmp_path / "presence.csv"
    presence.write_text("id,present\nno_t1ce,flair\n")
    assert predict([str(run_dir), "--new-files", str(new), "--out", str(tmp_path / "one"),
                    "--presence-csv", str(presence)]) == 0  # fmt: skip
    assert [row["present"] for row in read_csv(tmp_path / "one" / "predictions.csv")] == ["flair"]
    assert predict([str(run_dir), "--out", str(tmp_path / "split")]) == 1


# -- nuScenes -----------------------------------------------------------------------------------


def test_nuscenes_predicts_every_sample_of_a_dataroot(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip(
        "nuscenes", reason="the nuScenes task needs nuscenes-devkit (pip install '.[nuscenes]')"
    )
    from data.nuscenes_fixture import write_nuscenes_fixture

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    dataroot = write_nuscenes_fixture(tmp_path / "data", samples_per_scene=3, sweeps=1)
    small = {"image_height": 36, "image_width": 64, "cells": 16, "dim": 8, "radar_sweeps": 1}
    options = [item for k, v in small.items() for item in ("--task-option", f"{k}={v}")]
    run_dir = tmp_path / "run"
    _train("--task", "nuscenes", "--data-dir", str(dataroot), "--method", "baseline", *options,
           "--missing-rates", "0.2,0.3,0.4", "--out", str(run_dir))  # fmt: skip
    maps = tmp_path / "maps"
    assert predict([str(run_dir), "--new-files", str(dataroot), "--out", str(maps)]) == 0
    listed = read_csv(maps / "predictions.csv")
    assert len(listed) == 6  # both scenes: every sample of the dataroot, whatever its split
    predictor = mce.load(run_dir)
    test = predictor.task.splits(dataroot).test
    expected = predictor.predict_data(test, batch_size=1)
    for n, token in enumerate(test.ids):
        row = next(row for row in listed if row["id"] == token)
        assert row["present"] == "camera+lidar+radar" and row["file"] == f"{token}.npz"
        with np.load(maps / row["file"]) as saved:
            assert saved["vehicle"].shape == (16, 16) and saved["vehicle"].dtype == np.uint8
            assert np.array_equal(saved["vehicle"], expected.prediction[n].numpy())
            assert np.allclose(saved["probability"], expected.scores[n, 0].numpy(), atol=1e-6)


# -- a user's task ------------------------------------------------------------------------------

MODULE = "predict_user_tasks"
USER_MODULE = '''
"""A user's task: three feature groups of a seeded random problem, and new files as .npz."""

from pathlib import Path

import numpy as np
from torch import nn

from mce import HyperParameters, MultimodalData, MultimodalModel, Task
from mce.nn import ConcatFusion, ReconstructionTransformer
from mce.nn.classifiers import unimodal_head

WIDTHS = {"a": 4, "b": 3, "c": 5}


def load(data_dir):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 240)
    arrays = {m: rng.normal(size=(240, w)) + labels[:, None] for m, w in WIDTHS.items()}
    return MultimodalData.from_arrays(arrays, labels).random_split(0.7, 0)


def read_new(folder, trained_on):
    """folder/samples.npz: ids [N], presence [N, 3] and an array per modality."""
    with np.load(Path(folder) / "samples.npz") as archive:
        arrays = {m: archive[m] for m in WIDTHS}
        ids, presence = [str(i) for i in archive["ids"]], archive["presence"]
    data = MultimodalData.from_arrays(arrays, np.zeros(len(ids)), presence)
    return MultimodalData(data.modalities, data.inputs, data.target, data.present, ids=tuple(ids))


def build_model():
    fusion = ConcatFusion(len(WIDTHS), 8)
    return MultimodalModel(
        tuple(WIDTHS),
        encoders={m: nn.Sequential(nn.Linear(w, 8), nn.ReLU()) for m, w in WIDTHS.items()},
        heads={m: unimodal_head(8, 3) for m in WIDTHS},
        fusion=fusion,
        decoder=nn.Linear(fusion.out_dim, 3),
        reconstruction=ReconstructionTransformer(len(WIDTHS), 8, heads=2, ff_dim=16),
        dim=8,
    )


TOY = Task(
    name="toy3",
    modalities=tuple(WIDTHS),
    load=load,
    build_model=build_model,
    hparams=HyperParameters(
        epochs=1, batch_size=64, pretrain_steps=5, missing_rates=(0.2, 0.3, 0.4)
    ),
    read_new=read_new,
)
'''


@pytest.fixture
def user_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    folder = tmp_path / "user"
    folder.mkdir()
    (folder / f"{MODULE}.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(folder))
    return get_task(f"{MODULE}:TOY")


def test_a_run_of_a_users_task_predicts_with_task_module_attr(
    user_task, tmp_path: Path, capsys
) -> None:
    # trained from the command line: config.json names module:ATTR, which predict imports
    cli_run = tmp_path / "cli"
    _train("--task", f"{MODULE}:TOY", "--method", "mce", "--out", str(cli_run))
    assert predict([str(cli_run), "--out", str(tmp_path / "cli.csv")]) == 0
    assert len(read_csv(tmp_path / "cli.csv")) == 72

    # trained with the Task object: config.json names "toy3", which only --task can resolve
    api_run = tmp_path / "api"
    config = config_for(user_task, method="mce", out=str(api_run), progress=False)
    run(config, task=user_task)
    capsys.readouterr()
    assert predict([str(api_run), "--out", str(tmp_path / "api.csv")]) == 1
    err = capsys.readouterr().err
    assert "task 'toy3', not a built-in task" in err
    assert f"python -m mce.predict {api_run} --task package.module:ATTRIBUTE" in err
    argv = [str(api_run), "--task", f"{MODULE}:TOY", "--out", str(tmp_path / "api.csv")]
    assert predict(argv) == 0
    assert len(read_csv(tmp_path / "api.csv")) == 72

    # its own read_new: new files, a modality missing where presence says so
    new = tmp_path / "new"
    new.mkdir()
    rng = np.random.default_rng(3)
    presence = np.array([[1, 1, 1], [1, 0, 1], [0, 0, 1]])
    arrays = {m: rng.normal(size=(3, w)) for m, w in {"a": 4, "b": 3, "c": 5}.items()}
    np.savez(new / "samples.npz", ids=np.array(["p", "q", "r"]), presence=presence, **arrays)
    argv = [str(api_run), "--task", f"{MODULE}:TOY", "--new-files", str(new)]
    assert predict([*argv, "--out", str(tmp_path / "new.csv"), "--attribution"]) == 0
    rows = read_csv(tmp_path / "new.csv")
    used = [(row["id"], row["present"]) for row in rows]
    assert used == [("p", "a+b+c"), ("q", "a+c"), ("r", "c")]
    assert rows[2]["shapley_a"] == "" and rows[2]["shapley_c"] != ""


def test_closing_lines_name_a_command_that_works(user_task) -> None:
    from mce.training.activity import closing_lines

    scores = {"mce": {"average": 1.0}, "baseline": {"average": 2.0}}
    own = closing_lines(scores, None, task="toy3", rates=(0.2,), seed=0, out="runs/x")[0]
    assert "--task package.module:ATTRIBUTE" in own and "--task toy3" not in own
    named = closing_lines(scores, None, task=f"{MODULE}:TOY", rates=(0.2,), seed=0, out="r")[0]
    assert f"--task {MODULE}:TOY" in named
