"""IEMOCAP reader on a tiny folder written in the real layout (h5 features, npy targets)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

h5py = pytest.importorskip("h5py", reason="the IEMOCAP reader needs h5py (pip install h5py)")

from iemocap_fixture import FILES, WIDTHS, write_iemocap_fixture

from mce.data.iemocap import MODALITIES, load_iemocap

SPLITS = {"train": "trn", "validation": "val", "test": "tst"}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_iemocap_fixture(tmp_path_factory.mktemp("iemocap") / "features")


@pytest.fixture
def broken(pristine: Path, tmp_path: Path) -> Path:
    """A private copy of the fixture, to break."""
    return Path(shutil.copytree(pristine, tmp_path / "features"))


def _names(root: Path, fold: int, prefix: str) -> list[str]:
    return [row[0].decode() for row in np.load(root / f"target/{fold}/{prefix}_int2name.npy")]


def test_loads_shapes_lengths_padding_and_targets(pristine: Path) -> None:
    splits = load_iemocap(pristine, 1)
    total = 0
    for split, prefix in SPLITS.items():
        data = getattr(splits, split)
        names = _names(pristine, 1, prefix)
        assert splits.ids[split] == tuple(names)
        assert data.modalities == MODALITIES == ("acoustic", "lexical", "visual")
        assert list(data.inputs) == list(MODALITIES)
        assert len(data) == len(names)
        total += len(data)
        labels = np.load(pristine / f"target/1/{prefix}_label.npy")
        assert data.target.dtype == torch.int64
        assert data.target.tolist() == labels.argmax(axis=1).tolist()
        assert data.present.tolist() == [0b111] * len(names)
        for modality in MODALITIES:
            x, lengths = data.inputs[modality], data.lengths[modality]
            assert x.dtype == torch.float32 and lengths.dtype == torch.int64
            with h5py.File(pristine / FILES[modality], "r") as file:
                written = [file[name].shape[0] for name in names]
            assert lengths.tolist() == written
            assert tuple(x.shape) == (len(names), max(written), WIDTHS[modality])
            for row, length in enumerate(written):
                assert bool((x[row, length:] == 0).all())
                assert bool((x[row, :length].abs().sum(dim=1) > 0).all())
    assert total == 48


def test_acoustic_normalised_with_fold_statistics_others_raw(pristine: Path) -> None:
    splits = load_iemocap(pristine, 2)
    name = splits.ids["test"][0]
    with h5py.File(pristine / "A/comparE_mean_std.h5", "r") as stats:
        mean = stats["2/mean"][()].astype(np.float64)
        std = stats["2/std"][()].astype(np.float64)
    assert std[129] == 0  # the fixture's constant dim: zero std must be read as 1
    with h5py.File(pristine / "A/comparE.h5", "r") as file:
        raw = file[name][()].astype(np.float64)
    expected = np.empty_like(raw)
    for t in range(raw.shape[0]):
        for f in range(raw.shape[1]):
            expected[t, f] = (raw[t, f] - mean[f]) / (std[f] if std[f] != 0 else 1.0)
    got = splits.test.inputs["acoustic"][0, : raw.shape[0]].numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    train_frames = torch.cat(
        [
            splits.train.inputs["acoustic"][i, :n]
            for i, n in enumerate(splits.train.lengths["acoustic"].tolist())
        ]
    )
    assert train_frames[:, :129].mean(dim=0).abs().max() < 1e-3  # fold 2's training frames
    for modality in ("lexical", "visual"):
        with h5py.File(pristine / FILES[modality], "r") as file:
            raw = file[name][()]
        got = splits.test.inputs[modality][0, : raw.shape[0]].numpy()
        np.testing.assert_array_equal(got, raw)


def test_folds_differ_and_splits_are_disjoint(pristine: Path) -> None:
    one, two = load_iemocap(pristine, 1), load_iemocap(pristine, 2)
    assert one.ids != two.ids
    for splits in (one, two):
        sets = [set(ids) for ids in splits.ids.values()]
        assert sum(len(s) for s in sets) == len(set().union(*sets)) == 48
        assert sorted(torch.bincount(splits.train.target).tolist()) == [7, 7, 7, 7]


def test_max_frames_is_an_explicit_cap(pristine: Path) -> None:
    full = load_iemocap(pristine, 1)
    capped = load_iemocap(pristine, 1, max_frames={"acoustic": 6})
    lengths = full.train.lengths["acoustic"]
    assert capped.train.lengths["acoustic"].tolist() == lengths.clamp(max=6).tolist()
    assert capped.train.inputs["acoustic"].shape[1] == 6
    torch.testing.assert_close(
        capped.train.inputs["acoustic"], full.train.inputs["acoustic"][:, :6]
    )
    assert capped.train.lengths["visual"].tolist() == full.train.lengths["visual"].tolist()
    with pytest.raises(ValueError, match="max_frames names unknown modalities"):
        load_iemocap(pristine, 1, max_frames={"audio": 6})


def test_fixture_is_seeded_and_respects_max_len(tmp_path: Path) -> None:
    a = write_iemocap_fixture(tmp_path / "a", utterances=12, folds=(3,), max_len={"visual": 4})
    b = write_iemocap_fixture(tmp_path / "b", utterances=12, folds=(3,), max_len={"visual": 4})
    splits_a, splits_b = load_iemocap(a, 3), load_iemocap(b, 3)
    assert splits_a.ids == splits_b.ids
    torch.testing.assert_close(splits_a.train.inputs["lexical"], splits_b.train.inputs["lexical"])
    assert int(splits_a.train.lengths["visual"].max()) <= 4


@pytest.mark.parametrize("fold", [0, 11, -1])
def test_fold_outside_range(pristine: Path, fold: int) -> None:
    with pytest.raises(ValueError, match=rf"fold must be in 1\.\.10, got {fold}"):
        load_iemocap(pristine, fold)


@pytest.mark.parametrize("fold", [True, 1.0, "1"])
def test_fold_not_an_integer(pristine: Path, fold: object) -> None:
    with pytest.raises(TypeError, match=r"fold must be an integer in 1\.\.10"):
        load_iemocap(pristine, fold)  # type: ignore[arg-type]


def test_fold_absent(pristine: Path) -> None:
    with pytest.raises(ValueError, match=re.escape(str(Path("target") / "3")) + ".*does not exist"):
        load_iemocap(pristine, 3)


@pytest.mark.parametrize(
    "relative",
    [
        "A/comparE.h5",
        "A/comparE_mean_std.h5",
        "V/denseface.h5",
        "L/bert_large.h5",
        "target/1/trn_label.npy",
        "target/1/val_label.npy",
        "target/1/tst_label.npy",
        "target/1/trn_int2name.npy",
        "target/1/val_int2name.npy",
        "target/1/tst_int2name.npy",
    ],
)
def test_missing_file(broken: Path, relative: str) -> None:
    (broken / relative).unlink()
    with pytest.raises(ValueError, match=re.escape(Path(relative).name) + " does not exist"):
        load_iemocap(broken, 1)


def test_missing_root_and_fold_folder(broken: Path) -> None:
    shutil.rmtree(broken / "target" / "1")
    with pytest.raises(ValueError, match=r"target folder .*1 for fold 1 does not exist"):
        load_iemocap(broken, 1)
    with pytest.raises(ValueError, match="feature folder .*nowhere does not exist"):
        load_iemocap(broken / "nowhere", 1)


@pytest.mark.parametrize("modality", MODALITIES)
def test_missing_utterance_key(broken: Path, modality: str) -> None:
    name = _names(broken, 1, "val")[2]
    with h5py.File(broken / FILES[modality], "a") as file:
        del file[name]
    with pytest.raises(
        ValueError, match=re.escape(Path(FILES[modality]).name) + f".*no utterance '{name}'"
    ):
        load_iemocap(broken, 1)


def test_missing_mean_std_group(broken: Path) -> None:
    with h5py.File(broken / "A/comparE_mean_std.h5", "a") as file:
        del file["1"]
    with pytest.raises(ValueError, match=r"comparE_mean_std\.h5 has no group '1' for fold 1"):
        load_iemocap(broken, 1)
    load_iemocap(broken, 2)  # the other fold is intact


def test_missing_std_dataset(broken: Path) -> None:
    with h5py.File(broken / "A/comparE_mean_std.h5", "a") as file:
        del file["1/std"]
    with pytest.raises(ValueError, match=r"comparE_mean_std\.h5: group '1' has no dataset 'std'"):
        load_iemocap(broken, 1)


@pytest.mark.parametrize("modality", MODALITIES)
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_frame(broken: Path, modality: str, value: float) -> None:
    name = _names(broken, 1, "tst")[0]
    with h5py.File(broken / FILES[modality], "a") as file:
        array = file[name][()]
        array[1, 5] = value
        del file[name]
        file.create_dataset(name, data=array)
    with pytest.raises(
        ValueError,
        match=re.escape(Path(FILES[modality]).name) + f".*utterance '{name}' holds NaN or inf",
    ):
        load_iemocap(broken, 1)


@pytest.mark.parametrize("modality", MODALITIES)
@pytest.mark.parametrize("value", [1e39, -3e300])
def test_value_beyond_float32(broken: Path, modality: str, value: float) -> None:
    """A float64 value finite in the file but too large for float32 is refused, not read as
    inf."""
    name = _names(broken, 1, "val")[1]
    with h5py.File(broken / FILES[modality], "a") as file:
        array = file[name][()].astype(np.float64)
        array[0, 7] = value
        del file[name]
        file.create_dataset(name, data=array)
    with pytest.raises(
        ValueError,
        match=re.escape(Path(FILES[modality]).name)
        + f": utterance '{name}' holds a value beyond float32's range",
    ):
        load_iemocap(broken, 1)


def test_value_beyond_float32_after_normalisation(broken: Path) -> None:
    """A float32 acoustic value that a tiny std of the fold scales past float32's range."""
    name = _names(broken, 1, "trn")[0]
    with h5py.File(broken / "A/comparE_mean_std.h5", "a") as file:
        file["1/std"][5] = 1e-30
    with h5py.File(broken / FILES["acoustic"], "a") as file:
        file[name][0, 5] = 1e10
    with pytest.raises(
        ValueError,
        match=rf"comparE\.h5: utterance '{name}' holds a value beyond float32's range after "
        "normalisation",
    ):
        load_iemocap(broken, 1)
    load_iemocap(broken, 2)  # fold 2's statistics scale it within range


@pytest.mark.parametrize(
    ("shape", "problem"),
    [
        ((6, 129), r"has width 129, expected 130"),
        ((6, 130, 1), r"has shape \[6, 130, 1\], expected \[T, 130\]"),
        ((130,), r"has shape \[130\], expected \[T, 130\]"),
        ((0, 130), r"has no frames"),
    ],
)
def test_bad_acoustic_shape(broken: Path, shape: tuple[int, ...], problem: str) -> None:
    name = _names(broken, 1, "trn")[3]
    with h5py.File(broken / "A/comparE.h5", "a") as file:
        del file[name]
        file.create_dataset(name, data=np.ones(shape, dtype=np.float32))
    with pytest.raises(ValueError, match=rf"comparE\.h5: utterance '{name}' {problem}"):
        load_iemocap(broken, 1)


def test_bad_visual_width(broken: Path) -> None:
    name = _names(broken, 1, "val")[0]
    with h5py.File(broken / "V/denseface.h5", "a") as file:
        del file[name]
        file.create_dataset(name, data=np.ones((4, 1024), dtype=np.float32))
    with pytest.raises(
        ValueError,
        match=rf"denseface\.h5: utterance '{name}' has width 1024, "
        "expected 342",
    ):
        load_iemocap(broken, 1)


@pytest.mark.parametrize("relative", ["A/comparE.h5", "L/bert_large.h5", "A/comparE_mean_std.h5"])
def test_truncated_h5(broken: Path, relative: str) -> None:
    path = broken / relative
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=re.escape(path.name) + ".*corrupt"):
        load_iemocap(broken, 1)


def test_not_h5(broken: Path) -> None:
    (broken / "V/denseface.h5").write_bytes(b"not an hdf5 file")
    with pytest.raises(ValueError, match=r"denseface\.h5 is corrupt or not HDF5"):
        load_iemocap(broken, 1)


@pytest.mark.parametrize("relative", ["target/1/val_label.npy", "target/1/tst_int2name.npy"])
def test_corrupt_npy(broken: Path, relative: str) -> None:
    path = broken / relative
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 7])
    with pytest.raises(ValueError, match=re.escape(path.name) + " is corrupt"):
        load_iemocap(broken, 1)


def test_labels_with_five_columns(broken: Path) -> None:
    path = broken / "target/1/trn_label.npy"
    labels = np.load(path)
    np.save(path, np.concatenate([labels, np.zeros((len(labels), 1), labels.dtype)], axis=1))
    with pytest.raises(ValueError, match=r"trn_label\.npy has shape \[28, 5\], expected one-hot"):
        load_iemocap(broken, 1)


def test_labels_not_one_hot(broken: Path) -> None:
    path = broken / "target/1/val_label.npy"
    labels = np.load(path)
    labels[2] = [1, 1, 0, 0]
    np.save(path, labels)
    with pytest.raises(
        ValueError,
        match=r"val_label\.npy: row 2 is \[1\.0, 1\.0, 0\.0, 0\.0\], "
        "not one-hot",
    ):
        load_iemocap(broken, 1)


def test_labels_length_mismatch(broken: Path) -> None:
    path = broken / "target/1/tst_label.npy"
    np.save(path, np.load(path)[:-1])
    with pytest.raises(
        ValueError,
        match=r"tst_label\.npy has 11 rows but .*tst_int2name\.npy "
        "names 12",
    ):
        load_iemocap(broken, 1)


def test_pickled_int2name_refused(broken: Path) -> None:
    path = broken / "target/1/trn_int2name.npy"
    np.save(path, np.array([[name] for name in _names(broken, 1, "trn")], dtype=object))
    with pytest.raises(ValueError, match=r"trn_int2name\.npy holds Python objects"):
        load_iemocap(broken, 1)
    assert len(load_iemocap(broken, 1, allow_pickle=True).train) == 28


def test_overlapping_splits(broken: Path) -> None:
    trn, val = _names(broken, 1, "trn"), _names(broken, 1, "val")
    labels = np.load(broken / "target/1/val_label.npy")
    np.save(
        broken / "target/1/val_int2name.npy", np.array([[n.encode()] for n in [trn[0]] + val[1:]])
    )
    np.save(broken / "target/1/val_label.npy", labels)
    with pytest.raises(
        ValueError, match=f"train and validation share 1 utterances, e.g. '{trn[0]}'"
    ):
        load_iemocap(broken, 1)
