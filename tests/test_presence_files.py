"""Published presence files read as they ship (PASSION's BraTS splits, MCE's nuScenes tables),
their errors, and the quota mask scheme of PASSION's splits."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mce.data.dataset import MultimodalData
from mce.data.masks import apply_quota_masks, pattern_quotas, presence_from_csv
from mce.tasks import get_task
from mce.train import main
from mce.training.config import TrainConfig

BRATS = ("t1", "t1ce", "flair", "t2")  # mce.data.brats.MODALITIES
NUSCENES = ("camera", "lidar", "radar")  # mce.data.nuscenes.MODALITIES

# Jun-Jie-Shi/PASSION datasets/BraTS/brats_split/Brats2020_imb_split_mr2258.csv: its header and
# rows 1-3, 5, 9, 16 (T2 present), 73 (T2 only), 180 and 182 (LG_ cases), unchanged, with the
# file's CRLF line ends. mask is [flair, t1ce, t1, t2].
PASSION_ROWS = [
    "data_name,mask_id,mask,pos_mask_ids",
    'HG_BraTS20_Training_002,10,"[True, True, True, False]","[1, 2, 3, 5, 6, 9, 10]"',
    'HG_BraTS20_Training_003,2,"[False, False, True, False]",[2]',
    'HG_BraTS20_Training_004,10,"[True, True, True, False]","[1, 2, 3, 5, 6, 9, 10]"',
    'HG_BraTS20_Training_007,5,"[False, True, True, False]","[1, 2, 5]"',
    'HG_BraTS20_Training_010,9,"[True, True, False, False]","[1, 3, 9]"',
    'HG_BraTS20_Training_021,13,"[False, True, True, True]","[0, 1, 2, 4, 5, 7, 13]"',
    'HG_BraTS20_Training_115,0,"[False, False, False, True]",[0]',
    'LG_BraTS20_Training_261,14,"[True, True, True, True]",'
    '"[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]"',
    'LG_BraTS20_Training_267,3,"[True, False, False, False]",[3]',
]
PASSION_IDS = [f"BraTS20_Training_{n:03d}" for n in (2, 3, 4, 7, 10, 21, 115, 261, 267)]
# the same rows as sets of our modality names
PASSION_KEPT = [
    {"flair", "t1ce", "t1"},
    {"t1"},
    {"flair", "t1ce", "t1"},
    {"t1ce", "t1"},
    {"flair", "t1ce"},
    {"t1ce", "t1", "t2"},
    {"t2"},
    {"flair", "t1ce", "t1", "t2"},
    {"flair"},
]

# byzhaoAI/MCE scene_seg/train_split/nuScenes_imb_258.csv: its header and first 8 rows, and
# nuScenes_imb_852.csv rows 28125-28130 (the last; 0,0,1 is radar alone), LF line ends.
MCE_258 = (
    "Camera,LiDAR,RADAR,Count\n0,1,1,2\n1,1,0,2\n1,0,0,1\n1,0,0,1\n1,0,0,1\n1,0,0,1\n1,1,0,2\n"
    "0,1,1,2\n"
)
MCE_852_TAIL = "Camera,LiDAR,RADAR,Count\n0,1,1,2\n0,0,1,1\n0,1,1,2\n1,0,0,1\n0,0,1,1\n1,0,0,1\n"


def _data(modalities, ids, present=None) -> MultimodalData:
    n, full = len(ids), (1 << len(modalities)) - 1
    return MultimodalData(
        tuple(modalities),
        {name: torch.ones(n, 2) for name in modalities},
        torch.arange(n),
        torch.full((n,), full) if present is None else torch.tensor(present),
        ids=tuple(ids),
    )


def _kept(masked, n: int) -> set[str]:
    data = masked.data
    return {name for m, name in enumerate(data.modalities) if (int(data.present[n]) >> m) & 1}


def _write(path, lines, end="\r\n"):
    path.write_bytes((end.join(lines) + end).encode())
    return path


def test_passion_split_maps_its_masks_to_our_modalities(tmp_path) -> None:
    path = _write(tmp_path / "Brats2020_imb_split_mr2258.csv", PASSION_ROWS)
    order = [4, 0, 8, 2, 6, 1, 5, 3, 7]  # the split in another order than the file
    data = _data(BRATS, [PASSION_IDS[i] for i in order])
    masked = presence_from_csv(path, data)
    assert [_kept(masked, n) for n in range(len(order))] == [PASSION_KEPT[i] for i in order]
    assert masked.data.ids == data.ids and masked.dropped == 0
    missing = {name: sum(name not in kept for kept in PASSION_KEPT) / 9 for name in BRATS}
    assert masked.actual_rates == pytest.approx(missing)


def test_mce_nuscenes_table_maps_rows_by_position(tmp_path) -> None:
    for text in (MCE_258, MCE_852_TAIL):
        (tmp_path / "table.csv").write_text(text)
        rows = [line.split(",") for line in text.splitlines()[1:]]
        data = _data(NUSCENES, [f"token{n}" for n in range(len(rows))])
        masked = presence_from_csv(tmp_path / "table.csv", data)
        for n, row in enumerate(rows):  # Camera, LiDAR, RADAR -> camera, lidar, radar
            assert _kept(masked, n) == {NUSCENES[c] for c in range(3) if row[c] == "1"}
    # a split without ids still reads: the rows match by position
    plain = _data(NUSCENES, [f"t{n}" for n in range(6)])
    anonymous = MultimodalData(plain.modalities, plain.inputs, plain.target, plain.present)
    assert presence_from_csv(tmp_path / "table.csv", anonymous).data.present.tolist() == [
        0b110, 0b100, 0b110, 0b001, 0b100, 0b001,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        # an id of no sample of the split (a case of another split), the first few named
        (PASSION_ROWS + [PASSION_ROWS[1].replace("_002", "_005")], "1 id\\(s\\) belong to no "
         "sample of this split: BraTS20_Training_005; the file must list exactly"),
        (PASSION_ROWS[:-1], "no row for 1 sample\\(s\\) of the split, e.g. BraTS20_Training_267"),
        (PASSION_ROWS + [PASSION_ROWS[3]], "line 11: sample BraTS20_Training_004 listed twice "
         "\\(first on line 4\\)"),
        (PASSION_ROWS[:2] + ['HG_BraTS20_Training_003,2,"[False, False, False, False]",[]'],
         "line 3: sample BraTS20_Training_003 keeps no modality"),
        (PASSION_ROWS[:2] + ['HG_BraTS20_Training_003,2,"[False, Fals, True, False]",[2]'],
         "line 3: mask must be a list of four True/False \\(flair, t1ce, t1, t2\\)"),
        (PASSION_ROWS[:2] + ['HG_BraTS20_Training_003,3,"[False, False, True, False]",[2]'],
         "line 3: mask_id '3' disagrees with mask \\[False, False, True, False\\] \\(PASSION's "
         "id of that mask is 2\\)"),
        (["data_name,mask_id,mask"] + PASSION_ROWS[1:], "unknown header data_name,mask_id,mask"),
    ],
)
def test_broken_passion_files_are_named(tmp_path, rows, message) -> None:
    path = _write(tmp_path / "split.csv", rows)
    with pytest.raises(ValueError, match=message):
        presence_from_csv(path, _data(BRATS, PASSION_IDS))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (MCE_852_TAIL + "1,1,1,3\n", "has 7 rows for the 6 samples of the split"),
        (MCE_852_TAIL.rsplit("1,0,0,1\n", 1)[0], "has 5 rows for the 6 samples of the split"),
        (MCE_852_TAIL.replace("0,0,1,1", "0,0,0,0", 1), "line 3: sample t1 keeps no modality"),
        (MCE_852_TAIL.replace("0,0,1,1", "0,0,2,1", 1), "line 3: expected 0/1 for Camera"),
        (MCE_852_TAIL.replace("0,0,1,1", "0,1,1,1", 1), "line 3: Count '1' is not the number "
         "of sensors present \\(2\\)"),
        (MCE_852_TAIL.replace("RADAR", "Radar"), "unknown header Camera,LiDAR,Radar,Count"),
    ],
)
def test_broken_mce_tables_are_named(tmp_path, text, message) -> None:
    (tmp_path / "table.csv").write_text(text)
    with pytest.raises(ValueError, match=message):
        presence_from_csv(tmp_path / "table.csv", _data(NUSCENES, [f"t{n}" for n in range(6)]))


def test_a_layout_needs_its_modalities_and_a_readable_file(tmp_path) -> None:
    path = _write(tmp_path / "split.csv", PASSION_ROWS)
    with pytest.raises(ValueError, match="in PASSION's BraTS layout \\(modalities flair, t1ce, "
                       "t1, t2\\), but the data's modalities are camera, lidar, radar"):
        presence_from_csv(path, _data(NUSCENES, PASSION_IDS))
    (tmp_path / "table.csv").write_text(MCE_258)
    with pytest.raises(ValueError, match="in MCE's nuScenes layout"):
        presence_from_csv(tmp_path / "table.csv", _data(BRATS, [f"t{n}" for n in range(8)]))
    with pytest.raises(ValueError, match="cannot be read"):
        presence_from_csv(tmp_path / "absent.csv", _data(BRATS, PASSION_IDS))
    (tmp_path / "binary.csv").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ValueError, match="cannot be read"):
        presence_from_csv(tmp_path / "binary.csv", _data(BRATS, PASSION_IDS))
    # a modality the data itself lacks: t2 of the first case
    lacking = _data(BRATS, PASSION_IDS, [0b0111] + [0b1111] * 8)
    with pytest.raises(ValueError, match="sample BraTS20_Training_002 keeps a modality"):
        presence_from_csv(_write(tmp_path / "t2.csv", PASSION_ROWS[:1] + [
            'HG_BraTS20_Training_002,14,"[True, True, True, True]",[14]', *PASSION_ROWS[2:],
        ]), lacking)  # fmt: skip


def test_the_brats_task_names_its_cases_as_passion_does(tmp_path, monkeypatch) -> None:
    pytest.importorskip("nibabel")
    from data.brats_fixture import write_brats_fixture

    from mce.tasks.brats import load

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    train = load(write_brats_fixture(tmp_path / "brats", cases=4, shape=(8, 8, 8))).train
    masks = ['"[False, False, True, False]",[2]', '"[True, False, False, False]",[3]']
    rows = ["data_name,mask_id,mask,pos_mask_ids"] + [
        f"HG_{case},{mask_id},{mask}"
        for case, mask_id, mask in zip(train.ids, (2, 3), masks)
    ]
    masked = presence_from_csv(_write(tmp_path / "split.csv", rows), train)
    assert train.ids and [_kept(masked, n) for n in range(len(train))] == [{"t1"}, {"flair"}]


# Hand computation for N = 20 at rates (0.2, 0.5, 0.8) (bit m: modality m present):
#   pattern  P(S)               N P    quota
#   001      .8 * .5 * .8 = .32  6.4    6
#   010      .2 * .5 * .8 = .08  1.6    1
#   011      .8 * .5 * .8 = .32  6.4    6
#   100      .2 * .5 * .2 = .02  0.4    1 (raised: P > 0)
#   101      .8 * .5 * .2 = .08  1.6    1
#   110      .2 * .5 * .2 = .02  0.4    1 (raised)
#   111      .8 * .5 * .2 = .08  1.6    1
# 17 samples filled, 3 left over (the empty pattern's 1.6 and the floors' losses).
HAND = {0b001: 6, 0b010: 1, 0b011: 6, 0b100: 1, 0b101: 1, 0b110: 1, 0b111: 1}


def _patterns(present: torch.Tensor, num_modalities: int) -> dict[int, int]:
    counts = torch.bincount(present, minlength=1 << num_modalities).tolist()
    return {pattern: counts[pattern] for pattern in range(1, 1 << num_modalities)}


def test_quotas_are_the_hand_computed_ones() -> None:
    assert pattern_quotas(20, (0.2, 0.5, 0.8)) == HAND
    assert pattern_quotas(100, (0.7, 0.3)) == {1: 9, 2: 49, 3: 21}  # 0.49 * 100 stays 49
    assert pattern_quotas(8, (0.0, 0.5)) == {1: 4, 2: 0, 3: 4}  # P = 0: no quota raised


def test_quota_masks_fill_each_pattern_then_draw_the_rest() -> None:
    data = _data(("a", "b", "c"), [f"s{n}" for n in range(20)])
    masked = apply_quota_masks(data, (0.2, 0.5, 0.8), seed=3)
    counts = _patterns(masked.data.present, 3)
    assert int((masked.data.present == 0).sum()) == 0
    assert all(counts[s] >= HAND[s] for s in HAND) and sum(counts.values()) == 20
    assert sum(counts[s] - HAND[s] for s in HAND) == 3  # the left-over samples
    again = apply_quota_masks(data, (0.2, 0.5, 0.8), seed=3)
    assert torch.equal(again.data.present, masked.data.present)
    others = [apply_quota_masks(data, (0.2, 0.5, 0.8), seed=s).data.present for s in (4, 5)]
    assert any(not torch.equal(other, masked.data.present) for other in others)
    # no sample left over: the quotas are the counts
    exact = apply_quota_masks(_data(("a", "b"), [f"s{n}" for n in range(8)]), (0.0, 0.5), 0)
    assert _patterns(exact.data.present, 2) == {1: 4, 2: 0, 3: 4}
    assert exact.actual_rates == {"a": 0.0, "b": 0.5}


def test_quotas_match_passions_published_split() -> None:
    """Brats2020_imb_split_mr2258.csv (219 cases, rates T1 .2, T1c .2, Flair .5, T2 .8) counts
    per pattern, read off the file: each is our quota or more, the excess the 6 left over."""
    published = {  # bits t1, t1ce, flair, t2 as in BRATS
        0b0001: 14, 0b0010: 14, 0b0011: 58, 0b0100: 3, 0b0101: 14, 0b0110: 15, 0b0111: 57,
        0b1000: 1, 0b1001: 3, 0b1010: 3, 0b1011: 15, 0b1100: 1, 0b1101: 3, 0b1110: 3,
        0b1111: 15,
    }  # fmt: skip
    quotas = pattern_quotas(219, (0.2, 0.2, 0.5, 0.8))
    assert sum(published.values()) == 219 and 219 - sum(quotas.values()) == 6
    assert all(published[s] >= quotas[s] for s in quotas)
    assert sum(published[s] - quotas[s] for s in quotas) == 6


def test_quota_rates_and_no_empty_sample_on_the_digits() -> None:
    train = get_task("digits").splits(None, None).train
    num = len(train)
    for rates in ((0.5, 0.2), (0.9, 0.9), (0.0, 1.0)):
        masked = apply_quota_masks(train, rates, seed=0)
        present = masked.data.present
        assert int((present == 0).sum()) == 0 and masked.dropped == 0
        quotas = pattern_quotas(num, rates)
        left = num - sum(quotas.values())
        for m, name in enumerate(train.modalities):
            missing = int(((present >> m) & 1 == 0).sum())
            assert masked.actual_rates[name] == missing / num
            floor = sum(q for s, q in quotas.items() if not (s >> m) & 1)
            assert floor <= missing <= floor + left  # the leftovers may miss it too
            assert abs(missing / num - rates[m]) <= (left + len(quotas)) / num
        assert masked.stated_rates == dict(zip(train.modalities, rates))


def test_quota_masks_refuse_what_they_cannot_do() -> None:
    ids = [f"s{n}" for n in range(6)]
    with pytest.raises(ValueError, match="need at least 7 samples .* and the split has 6"):
        apply_quota_masks(_data(("a", "b", "c"), ids), (0.2, 0.5, 0.8), seed=0)
    with pytest.raises(ValueError, match="sample s1 misses some in the data"):
        apply_quota_masks(_data(("a", "b"), ids, [3, 1, 3, 3, 3, 3]), (0.5, 0.5), seed=0)
    with pytest.raises(ValueError, match="leave no sample a modality"):
        apply_quota_masks(_data(("a", "b"), ids), (1.0, 1.0), seed=0)
    with pytest.raises(ValueError, match="outside \\[0, 1\\]"):
        apply_quota_masks(_data(("a", "b"), ids), (1.5, 0.0), seed=0)
    with pytest.raises(ValueError, match="3 missing rates given for 2 modalities"):
        apply_quota_masks(_data(("a", "b"), ids), (0.1, 0.1, 0.1), seed=0)


def test_mask_sources_that_clash_are_errors(tmp_path, capsys) -> None:
    with pytest.raises(ValueError, match="drop_all_missing=True has nothing to drop"):
        TrainConfig(mask_scheme="quota", drop_all_missing=True)
    with pytest.raises(ValueError, match="gives the training masks.*mask_scheme='quota'"):
        TrainConfig(mask_scheme="quota", presence_csv="split.csv")
    with pytest.raises(ValueError, match="gives the training masks.*drop_all_missing=True"):
        TrainConfig(drop_all_missing=True, presence_csv="split.csv")
    with pytest.raises(ValueError, match="mask_scheme must be one of exact, quota"):
        TrainConfig(mask_scheme="iid")
    argv = ["--mask-scheme", "quota", "--drop-all-missing", "--out", str(tmp_path / "run")]
    with pytest.raises(SystemExit):
        main(argv)
    err = capsys.readouterr().err
    assert "--mask-scheme quota never leaves" in err and "--drop-all-missing has nothing" in err


def test_cli_trains_on_quota_masks(tmp_path) -> None:
    argv = [
        "--mask-scheme", "quota", "--method", "baseline", "--epochs", "1", "--batch-size", "512",
        "--missing-rates", "0.5,0.2", "--seed", "4", "--no-progress", "--out", str(tmp_path),
    ]  # fmt: skip
    assert main(argv) == 0
    train = get_task("digits").splits(None, None).train
    expected = apply_quota_masks(train, (0.5, 0.2), seed=4)
    saved = torch.load(tmp_path / "masks.pt", weights_only=True)
    assert torch.equal(saved["present"], expected.data.present)
    results = json.loads((tmp_path / "results.json").read_text())
    rates = results["missing_rates"]
    assert rates["mask_scheme"] == "quota" and rates["dropped_samples"] == 0
    assert rates["actual"] == pytest.approx(expected.actual_rates)
    assert math.isfinite(results["scores"]["baseline"]["average"])
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["config"]["mask_scheme"] == "quota"


def test_experiment_cells_take_the_mask_scheme(tmp_path, capsys) -> None:
    from mce.experiment import cells_of, parse_spec

    argv = ["--settings", "0.5,0.2", "--variants", "baseline", "--seeds", "0", "--out",
            str(tmp_path), "--no-progress", "--no-figures"]  # fmt: skip
    spec, _ = parse_spec([*argv, "--mask-scheme", "quota"])
    assert spec.mask_scheme == "quota" and spec.to_dict()["mask_scheme"] == "quota"
    assert cells_of(spec, get_task("digits"))[0].config(spec, tmp_path).mask_scheme == "quota"
    assert parse_spec(argv)[0].mask_scheme == "exact"
    with pytest.raises(SystemExit):
        parse_spec([*argv, "--mask-scheme", "quota", "--drop-all-missing"])
    assert "--mask-scheme quota never leaves" in capsys.readouterr().err
