"""BraTS2020 reader on a tiny folder written in the real layout (NIfTI files per case)."""

from __future__ import annotations

import gzip
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

nibabel = pytest.importorskip(
    "nibabel", reason="the BraTS reader needs nibabel (pip install nibabel)"
)

from brats_fixture import AFFINE, case_id, flip_case, write_brats_fixture, write_nifti

from mce.data import brats
from mce.data.brats import (
    MODALITIES,
    SPLIT_SIZES,
    BratsCache,
    BratsSplit,
    brats_split,
    list_cases,
    load_split,
    preprocess_brats,
    read_case,
    regions,
    save_split,
    split_sizes,
)

CASE = case_id(2)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_brats_fixture(tmp_path_factory.mktemp("brats") / "MICCAI_BraTS2020_TrainingData")


@pytest.fixture
def broken(pristine: Path, tmp_path: Path) -> Path:
    """A private copy of the fixture, to break."""
    return Path(shutil.copytree(pristine, tmp_path / "data"))


def _raw(root: Path, case: str, kind: str) -> np.ndarray:
    """A file's voxels in the closest canonical orientation, as the reader reorients them."""
    image = nibabel.as_closest_canonical(nibabel.load(root / case / f"{case}_{kind}.nii.gz"))
    return np.asarray(image.dataobj)


def _brain_box(root: Path, case: str) -> list[slice]:
    """The brain's bounding box, computed straight from the files."""
    brain = np.zeros(_raw(root, case, "t1").shape, dtype=bool)
    for modality in MODALITIES:
        brain |= _raw(root, case, modality) != 0
    hits = np.argwhere(brain)
    return [slice(int(a), int(b) + 1) for a, b in zip(hits.min(0), hits.max(0))]


# ---- reading ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["{case}_T2.nii.gz", "BraTS20_Training_999_t2.nii.gz"])
def test_a_sequence_under_another_name_is_an_error_not_an_absence(
    broken: Path, name: str
) -> None:
    case_dir = broken / CASE
    misnamed = name.format(case=CASE)
    (case_dir / f"{CASE}_t2.nii.gz").rename(case_dir / misnamed)
    message = f"{CASE}_t2.nii.gz is missing in .*holds {re.escape(misnamed)}: file names"
    with pytest.raises(ValueError, match=message):
        read_case(case_dir)
    (case_dir / f"{CASE}_seg.nii.gz").unlink()  # a new case: no segmentation, t2 misnamed
    with pytest.raises(ValueError, match=message):
        brats.read_new_case(case_dir)
    with pytest.raises(ValueError, match=message):
        brats.list_new_cases(broken)



def test_fixture_is_fast_and_in_the_real_layout(tmp_path: Path) -> None:
    import time

    start = time.perf_counter()
    root = write_brats_fixture(tmp_path / "b")
    assert time.perf_counter() - start < 1.0
    assert list_cases(root) == [case_id(i) for i in range(1, 7)]
    assert sorted(p.name for p in (root / CASE).iterdir()) == sorted(
        f"{CASE}_{k}.nii.gz" for k in (*MODALITIES, "seg")
    )


@pytest.mark.parametrize("case", [case_id(1), case_id(4)])
def test_crop_is_the_brain_bounding_box(pristine: Path, case: str) -> None:
    loaded = read_case(pristine / case)
    box = _brain_box(pristine, case)
    assert loaded.case_id == case
    assert loaded.source_shape == (24, 24, 16)
    assert loaded.image.dtype == np.float32 and loaded.label.dtype == np.uint8
    assert loaded.image.shape == (4, *(s.stop - s.start for s in box))
    assert loaded.bbox.tolist() == [[s.start, s.stop] for s in box]
    for channel, modality in enumerate(MODALITIES):  # channel order is MODALITIES
        raw = _raw(pristine, case, modality)[tuple(box)].astype(np.float64)
        brain = raw != 0
        expected = (raw[brain] - raw[brain].mean()) / raw[brain].std()
        np.testing.assert_allclose(loaded.image[channel][brain], expected, rtol=1e-5, atol=1e-5)


def test_margin_widens_the_box_clipped_to_the_volume(pristine: Path) -> None:
    box = _brain_box(pristine, CASE)
    loaded = read_case(pristine / CASE, margin=3)
    expected = [[max(s.start - 3, 0), min(s.stop + 3, n)] for s, n in zip(box, (24, 24, 16))]
    assert loaded.bbox.tolist() == expected
    assert loaded.image.shape[1:] == tuple(b - a for a, b in expected)
    brain = np.zeros(loaded.image.shape[1:], dtype=bool)
    for modality in MODALITIES:
        window = tuple(slice(a, b) for a, b in expected)
        brain |= _raw(pristine, CASE, modality)[window] != 0
    assert (loaded.image[:, ~brain] == 0).all()  # non-brain voxels are 0
    with pytest.raises(ValueError, match="margin must be a non-negative int"):
        read_case(pristine / CASE, margin=-1)


def test_brain_voxels_are_z_scored_and_the_rest_is_zero(pristine: Path) -> None:
    for case in list_cases(pristine):
        loaded = read_case(pristine / case)
        box = tuple(_brain_box(pristine, case))
        brain = np.zeros(loaded.image.shape[1:], dtype=bool)
        for modality in MODALITIES:
            brain |= _raw(pristine, case, modality)[box] != 0
        for channel in range(len(MODALITIES)):
            voxels = loaded.image[channel][brain].astype(np.float64)
            assert abs(voxels.mean()) < 1e-5 and abs(voxels.std() - 1.0) < 1e-5
            assert (loaded.image[channel][~brain] == 0).all()


def test_labels_keep_the_voxels_and_map_4_to_3(pristine: Path) -> None:
    loaded = read_case(pristine / CASE)
    seg = _raw(pristine, CASE, "seg")[tuple(_brain_box(pristine, CASE))]
    assert set(np.unique(seg).tolist()) == {0, 1, 2, 4}
    expected = np.where(seg == 4, 3, seg)
    np.testing.assert_array_equal(loaded.label, expected)


@pytest.mark.parametrize("axes", [(0,), (2,), (0, 1, 2)])
def test_a_case_stored_flipped_gives_the_same_arrays(
    pristine: Path, broken: Path, axes: tuple[int, ...]
) -> None:
    """Every volume of a case (label map included) is reoriented to the closest canonical
    orientation: a case stored flipped, with its affine to match, reads as the original."""
    flip_case(broken, CASE, axes)
    stored = np.asarray(nibabel.load(_path(broken, "flair")).dataobj)
    original = np.asarray(nibabel.load(_path(pristine, "flair")).dataobj)
    assert not np.array_equal(stored, original)
    assert np.array_equal(stored, np.flip(original, axes))
    flipped, expected = read_case(broken / CASE), read_case(pristine / CASE)
    _equal(flipped, expected)
    assert flipped.source_shape == expected.source_shape == (24, 24, 16)


def test_arrays_are_in_the_canonical_orientation(pristine: Path) -> None:
    """The fixture's files are stored with x and y flipped (AFFINE): the reader's arrays are
    the stored voxels flipped back along those axes."""
    assert np.array_equal(np.sign(np.diag(AFFINE)[:3]), [-1.0, -1.0, 1.0])
    loaded = read_case(pristine / CASE)
    seg = np.asarray(nibabel.load(_path(pristine, "seg")).dataobj)[::-1, ::-1]
    box = tuple(slice(int(a), int(b)) for a, b in loaded.bbox)
    np.testing.assert_array_equal(loaded.label, np.where(seg == 4, 3, seg)[box])


def test_tumour_is_brighter_in_flair_and_t1ce_than_in_t1(pristine: Path) -> None:
    loaded = read_case(pristine / CASE)
    wt, _, et = regions(loaded.label)
    contrast = {
        m: loaded.image[c][wt].mean() - loaded.image[c][loaded.brain & ~wt].mean()
        for c, m in enumerate(MODALITIES)
    }
    assert contrast["flair"] > 1.0 > abs(contrast["t1"])
    assert loaded.image[MODALITIES.index("t1ce")][et].mean() > 1.0


# ---- regions ----------------------------------------------------------------------------------


def test_regions_are_nested_and_follow_the_definitions(pristine: Path) -> None:
    label = read_case(pristine / CASE).label
    wt, tc, et = regions(label)
    assert regions(label).dtype == bool and regions(label).shape == (3, *label.shape)
    np.testing.assert_array_equal(wt, np.isin(label, (1, 2, 3)))
    np.testing.assert_array_equal(tc, np.isin(label, (1, 3)))
    np.testing.assert_array_equal(et, label == 3)
    assert et.any() and (tc & ~wt).sum() == 0 and (et & ~tc).sum() == 0
    assert et.sum() < tc.sum() < wt.sum()


def test_regions_of_tensors_and_batches(pristine: Path) -> None:
    label = read_case(pristine / CASE).label
    batch = torch.from_numpy(np.stack([label, np.zeros_like(label)])).long()
    out = regions(batch)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.bool
    assert out.shape == (2, 3, *label.shape)
    np.testing.assert_array_equal(out[0].numpy(), regions(label))
    assert not out[1].any()


@pytest.mark.parametrize("value", [4, 5, -1])
def test_regions_reject_values_that_are_not_classes(value: int) -> None:
    label = np.zeros((2, 2, 2), dtype=np.int64)
    label[0, 0, 0] = value
    with pytest.raises(ValueError, match=r"expected class indices 0\.\.3"):
        regions(label)
    with pytest.raises(ValueError, match=r"\[\.\.\., D, H, W\]"):
        regions(np.zeros((2, 2), dtype=np.uint8))


# ---- cache ------------------------------------------------------------------------------------


class _Spy:
    """Counts the cache's read_case calls (its .nii.gz decodes) by case id.

    The tests' own ``read_case`` (imported by name) is not patched, so it is not counted.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        real = brats.read_case

        def spy(case_dir: Path, **kwargs: int) -> brats.BratsCase:
            self.calls.append(Path(case_dir).name)
            return real(case_dir, **kwargs)

        monkeypatch.setattr(brats, "read_case", spy)


def _equal(a: brats.BratsCase, b: brats.BratsCase) -> None:
    assert a.case_id == b.case_id and a.source_shape == b.source_shape
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.label, b.label)
    np.testing.assert_array_equal(a.bbox, b.bbox)


def test_cache_is_written_once_and_reused(
    pristine: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _Spy(monkeypatch)
    cache_dir = tmp_path / "cache"
    ids = preprocess_brats(pristine, cache_dir)
    assert ids == list_cases(pristine) and sorted(spy.calls) == ids
    files = {case: cache_dir / f"{case}.npz" for case in ids}
    stamps = {case: path.stat().st_mtime_ns for case, path in files.items()}
    assert (cache_dir / "manifest.json").is_file()

    spy.calls.clear()
    assert preprocess_brats(pristine, cache_dir) == ids
    cache = BratsCache(pristine, cache_dir)
    for case in ids:
        _equal(cache.load(case), read_case(pristine / case))
    assert spy.calls == []  # no case decoded again (the reference reads bypass the spy)
    assert {case: path.stat().st_mtime_ns for case, path in files.items()} == stamps


def test_load_builds_a_missing_case_on_demand(
    pristine: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _Spy(monkeypatch)
    cache = BratsCache(pristine, tmp_path / "cache")
    first = cache.load(CASE)
    assert spy.calls == [CASE] and (tmp_path / "cache" / f"{CASE}.npz").is_file()
    _equal(cache.load(CASE), first)
    assert spy.calls == [CASE]


def test_a_changed_source_rebuilds_its_case_only(
    broken: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_dir = tmp_path / "cache"
    preprocess_brats(broken, cache_dir)
    flair = broken / CASE / f"{CASE}_flair.nii.gz"
    data = np.asarray(nibabel.load(flair).dataobj) * 2.0 + (
        np.asarray(nibabel.load(flair).dataobj) > 0
    )
    write_nifti(flair, data.astype(np.float32))
    spy = _Spy(monkeypatch)
    preprocess_brats(broken, cache_dir)
    assert spy.calls == [CASE]
    _equal(BratsCache(broken, cache_dir).load(CASE), read_case(broken / CASE))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "delete"])
def test_a_damaged_cache_file_is_rebuilt_by_preprocess(
    pristine: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    cache_dir = tmp_path / "cache"
    preprocess_brats(pristine, cache_dir)
    path = cache_dir / f"{CASE}.npz"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:1000])
    elif damage == "garbage":
        path.write_bytes(b"not a zip file" * 100)
    else:
        path.unlink()
    spy = _Spy(monkeypatch)
    preprocess_brats(pristine, cache_dir)
    assert spy.calls == [CASE]
    _equal(BratsCache(pristine, cache_dir).load(CASE), read_case(pristine / CASE))


def test_a_silently_corrupted_cache_file_is_rebuilt_on_load(
    pristine: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bytes flipped with size and mtime kept: stat checks pass, the zip CRC does not."""
    cache_dir = tmp_path / "cache"
    preprocess_brats(pristine, cache_dir)
    path = cache_dir / f"{CASE}.npz"
    info = path.stat()
    blob = bytearray(path.read_bytes())
    middle = len(blob) // 2
    blob[middle : middle + 8] = bytes(255 - b for b in blob[middle : middle + 8])
    path.write_bytes(bytes(blob))
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    spy = _Spy(monkeypatch)
    cache = BratsCache(pristine, cache_dir)
    assert cache.is_fresh(CASE)
    with pytest.warns(
        UserWarning, match=rf"BraTS case {CASE}: cache file .*{CASE}\.npz is corrupt"
    ):
        loaded = cache.load(CASE)
    assert spy.calls == [CASE]
    _equal(loaded, read_case(pristine / CASE))
    _equal(cache.load(CASE), loaded)  # and the rebuilt file is good
    assert spy.calls == [CASE]


def test_cache_arrays_rewritten_as_a_valid_file_fail_the_sha256_and_are_rebuilt(
    pristine: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bytes of a cached array flipped and the file written again as a valid npz (its zip CRCs
    match), size and mtime kept: only the manifest's sha256 of the arrays catches it."""
    cache_dir = tmp_path / "cache"
    preprocess_brats(pristine, cache_dir)
    path = cache_dir / f"{CASE}.npz"
    info = path.stat()
    with np.load(path) as npz:
        arrays = {key: npz[key].copy() for key in npz.files}
    flat = arrays["image"].reshape(-1).view(np.uint8)
    middle = flat.size // 2
    flat[middle : middle + 8] ^= 0xFF
    np.savez(path, **arrays)
    assert path.stat().st_size == info.st_size
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    spy = _Spy(monkeypatch)
    cache = BratsCache(pristine, cache_dir)
    assert cache.is_fresh(CASE)
    with pytest.warns(
        UserWarning, match=rf"BraTS case {CASE}: cache file .*{CASE}\.npz fails its sha256 check"
    ):
        loaded = cache.load(CASE)
    assert spy.calls == [CASE]
    _equal(loaded, read_case(pristine / CASE))
    _equal(cache.load(CASE), loaded)  # and the rebuilt file passes
    assert spy.calls == [CASE]


def test_a_different_margin_or_a_broken_manifest_rebuilds_everything(
    pristine: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_dir = tmp_path / "cache"
    ids = preprocess_brats(pristine, cache_dir)
    spy = _Spy(monkeypatch)
    preprocess_brats(pristine, cache_dir, margin=2)
    assert spy.calls == ids
    assert (
        BratsCache(pristine, cache_dir, margin=2).load(CASE).bbox.tolist()
        == read_case(pristine / CASE, margin=2).bbox.tolist()
    )
    spy.calls.clear()
    (cache_dir / "manifest.json").write_text("{not json")
    with pytest.warns(UserWarning, match="manifest .* is unreadable"):
        preprocess_brats(pristine, cache_dir, margin=2)
    assert spy.calls == ids


def test_cache_errors_name_the_case_and_file(broken: Path, tmp_path: Path) -> None:
    (broken / CASE / f"{CASE}_t2.nii.gz").unlink()
    with pytest.raises(ValueError, match=rf"BraTS case {CASE}: file {CASE}_t2\.nii\.gz"):
        preprocess_brats(broken, tmp_path / "cache")


# ---- split ------------------------------------------------------------------------------------


IDS = [case_id(i) for i in range(1, 370)]


def test_split_has_the_paper_sizes_and_is_deterministic() -> None:
    split = brats_split(IDS, seed=0)
    assert isinstance(split, BratsSplit)
    assert tuple(len(part) for part in split) == SPLIT_SIZES == (219, 50, 100)
    assert sorted(sum(split, ())) == IDS  # disjoint and complete
    assert brats_split(list(reversed(IDS)), seed=0) == split  # only the set of ids matters
    assert brats_split(IDS, seed=1) != split
    assert all(list(part) == sorted(part) for part in split)


@pytest.mark.parametrize(
    ("count", "expected"),
    [
        (369, (219, 50, 100)),
        (6, (3, 1, 2)),
        (3, (1, 1, 1)),
        (4, (2, 1, 1)),
        (738, (438, 100, 200)),
        (100, (59, 14, 27)),
    ],
)
def test_split_sizes_scale_proportionally(count: int, expected: tuple[int, int, int]) -> None:
    assert split_sizes(count) == expected
    assert sum(split_sizes(count)) == count


def test_split_sizes_are_never_empty() -> None:
    for count in range(3, 80):
        sizes = split_sizes(count)
        assert sum(sizes) == count and min(sizes) >= 1
        assert sizes[0] >= sizes[2] >= sizes[1] or count < 10


def test_split_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="at least 3 cases, got 2"):
        brats_split(IDS[:2])
    with pytest.raises(ValueError, match="more than once"):
        brats_split([IDS[0], *IDS[:5]])
    with pytest.raises(ValueError, match="three positive ints"):
        brats_split(IDS, sizes=(1, 0, 1))


def test_split_is_saved_and_loaded(pristine: Path, tmp_path: Path) -> None:
    split = brats_split(list_cases(pristine), seed=3)
    path = tmp_path / "run" / "split.json"
    save_split(path, split)
    assert load_split(path) == split


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{oops", "not JSON"),
        ('{"train": ["a"], "test": ["b"]}', "must map exactly"),
        ('{"train": ["a"], "validation": [1], "test": ["b"]}', "list of case ids"),
        ('{"train": ["a"], "validation": ["a"], "test": ["b"]}', "'a' is in 'train' and"),
    ],
)
def test_load_split_rejects_broken_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "split.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"BraTS split file .*split\.json.*{re.escape(message)}"):
        load_split(path)
    with pytest.raises(ValueError, match="missing"):
        load_split(tmp_path / "absent.json")


# ---- broken folders ---------------------------------------------------------------------------


def _path(root: Path, kind: str, case: str = CASE) -> Path:
    return root / case / f"{case}_{kind}.nii.gz"


def _rewrite(
    root: Path,
    kind: str,
    edit: Callable[[np.ndarray], np.ndarray],
    affine: np.ndarray = AFFINE,
) -> None:
    data = np.asarray(nibabel.load(_path(root, kind)).dataobj).copy()
    write_nifti(_path(root, kind), edit(data), affine)


def _truncate(root: Path) -> None:
    path = _path(root, "flair")
    path.write_bytes(path.read_bytes()[:-200])


def _garbage(root: Path) -> None:
    _path(root, "t1ce").write_bytes(gzip.compress(b"definitely not a NIfTI header" * 20))


def _shape(root: Path) -> None:
    _rewrite(root, "t2", lambda d: d[:, :, :-1])


def _affine(root: Path) -> None:
    moved = AFFINE.copy()
    moved[0, 3] += 0.5
    _rewrite(root, "t1ce", lambda d: d, moved)


def _label(value: int) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        def put(data: np.ndarray) -> np.ndarray:
            data[data == 2] = value
            return data

        _rewrite(root, "seg", put)

    return edit


def _empty(root: Path) -> None:
    for modality in MODALITIES:
        _rewrite(root, modality, np.zeros_like)


def _nan(root: Path) -> None:
    def put(data: np.ndarray) -> np.ndarray:
        data[12, 12, 8] = np.nan
        return data

    _rewrite(root, "flair", put)


def _constant(root: Path) -> None:
    _rewrite(root, "t1", lambda d: np.where(d != 0, 7, 0).astype(d.dtype))


def _four_d(root: Path) -> None:
    _rewrite(root, "t2", lambda d: np.stack([d, d], axis=-1))


def _renamed_folder(root: Path) -> None:
    (root / CASE).rename(root / "BraTS20_Training_099")


BREAKAGES = {
    # name: (break the copy, case named, file named)
    **{
        f"missing_{kind}": (
            lambda root, kind=kind: _path(root, kind).unlink(),
            CASE,
            rf"{CASE}_{kind}\.nii\.gz is missing",
        )
        for kind in (*MODALITIES, "seg")
    },
    "truncated_gzip": (_truncate, CASE, rf"{CASE}_flair\.nii\.gz is unreadable"),
    "not_nifti": (_garbage, CASE, rf"{CASE}_t1ce\.nii\.gz is unreadable"),
    "shape": (_shape, CASE, rf"{CASE}_t2\.nii\.gz has shape \[24, 24, 15\] but {CASE}_t1"),
    "affine": (_affine, CASE, rf"{CASE}_t1ce\.nii\.gz has an affine that differs from {CASE}_t1"),
    "label_3": (_label(3), CASE, rf"{CASE}_seg\.nii\.gz holds label value\(s\) 3 "),
    "label_5": (_label(5), CASE, rf"{CASE}_seg\.nii\.gz holds label value\(s\) 5 "),
    "empty_brain": (_empty, CASE, rf"empty brain mask: every voxel of {CASE}_t1\.nii\.gz"),
    "nan": (_nan, CASE, rf"{CASE}_flair\.nii\.gz holds NaN or inf in 1 voxels"),
    "constant": (_constant, CASE, rf"{CASE}_t1\.nii\.gz is constant \(7\) over the brain"),
    "four_d": (_four_d, CASE, rf"{CASE}_t2\.nii\.gz has shape \[24, 24, 16, 2\]"),
    "folder_name": (
        _renamed_folder,
        "BraTS20_Training_099",
        rf"BraTS20_Training_099_t1\.nii\.gz is missing .* holds {CASE}_t1\.nii\.gz",
    ),
}


@pytest.mark.parametrize("name", list(BREAKAGES))
def test_broken_case_raises_naming_case_and_file(broken: Path, tmp_path: Path, name: str) -> None:
    breakage, case, message = BREAKAGES[name]
    breakage(broken)
    with pytest.raises(ValueError, match=rf"^BraTS case {case}: .*{message}"):
        read_case(broken / case)
    with pytest.raises(ValueError, match=rf"^BraTS case {case}: .*{message}"):
        preprocess_brats(broken, tmp_path / "cache")


def test_float_labels_are_accepted_when_integral(pristine: Path, broken: Path) -> None:
    _rewrite(broken, "seg", lambda d: d.astype(np.float32))
    np.testing.assert_array_equal(read_case(broken / CASE).label, read_case(pristine / CASE).label)
    _rewrite(broken, "seg", lambda d: d + np.float32(0.5) * (d == 1))
    message = rf"BraTS case {CASE}: file {CASE}_seg\.nii\.gz holds the non-integer label"
    with pytest.raises(ValueError, match=message):
        read_case(broken / CASE)


def test_a_missing_root_or_an_empty_one_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"BraTS root .*absent is not a folder"):
        list_cases(tmp_path / "absent")
    (tmp_path / "empty" / "__MACOSX").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"BraTS root .*empty holds no case folder"):
        preprocess_brats(tmp_path / "empty", tmp_path / "cache")
