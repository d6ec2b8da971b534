"""Training masks read from a presence CSV (a published split) instead of drawn."""

from __future__ import annotations

import pytest
import torch

from mce.data.dataset import MultimodalData
from mce.data.masks import presence_from_csv


def _data(present=(0b11, 0b11, 0b01, 0b11)) -> MultimodalData:
    return MultimodalData(
        ("a", "b"),
        {"a": torch.ones(4, 2), "b": torch.ones(4, 3)},
        torch.arange(4),
        torch.tensor(present),
        ids=("s0", "s1", "s2", "s3"),
    )


def test_rows_become_the_masks_in_the_data_order(tmp_path) -> None:
    path = tmp_path / "presence.csv"
    path.write_text("sample_token,b,a\ns3,0,1\ns2,0,1\ns1,1,0\ns0,1,1\n")
    masked = presence_from_csv(path, _data())
    assert masked.data.present.tolist() == [0b11, 0b10, 0b01, 0b01]
    assert masked.data.ids == ("s0", "s1", "s2", "s3")
    assert float(masked.data.inputs["a"][1].abs().sum()) == 0  # absent inputs zeroed
    assert masked.actual_rates == {"a": 0.25, "b": 0.5} and masked.dropped == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("token,a,b\ns0,1,1\n", "unknown header token,a,b; expected sample_token"),
        ("id,a\ns0,1\n", "unknown header id,a; expected sample_token"),
        ("id,a,b\ns0,1,1\nother,1,1\n", "1 id\\(s\\) belong to no sample of this split: other"),
        ("id,a,b\ns0,1,2\n", "line 2: expected 3 fields with 0/1"),
        ("id,a,b\ns0,1,1\ns0,1,1\n", "sample s0 listed twice"),
        ("id,a,b\ns0,1,1\ns1,1,1\ns2,1,0\n", "no row for 1 sample"),
        ("id,a,b\ns0,1,1\ns1,0,0\ns2,1,0\ns3,1,1\n", "sample s1 keeps no modality"),
        ("id,a,b\ns0,1,1\ns1,1,1\ns2,1,1\ns3,1,1\n", "sample s2 keeps a modality the data lacks"),
        ("", "is empty"),
    ],
)
def test_bad_files_are_named(tmp_path, text, message) -> None:
    path = tmp_path / "presence.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        presence_from_csv(path, _data())


def test_a_spreadsheet_export_reads_the_same(tmp_path) -> None:
    path = tmp_path / "presence.csv"
    path.write_bytes("\ufeffid,a,b\r\n\r\ns0,1,1\r\ns1,1,0\r\ns2,1,0\r\ns3,0,1\r\n\r\n".encode())
    assert presence_from_csv(path, _data()).data.present.tolist() == [3, 1, 1, 2]
    (tmp_path / "blank.csv").write_text("\n\n")
    with pytest.raises(ValueError, match="is empty"):
        presence_from_csv(tmp_path / "blank.csv", _data())


def test_missing_file_and_data_without_ids(tmp_path) -> None:
    with pytest.raises(ValueError, match="cannot be read"):
        presence_from_csv(tmp_path / "none.csv", _data())
    data = _data()
    anonymous = MultimodalData(data.modalities, data.inputs, data.target, data.present)
    (tmp_path / "p.csv").write_text("id,a,b\n")
    with pytest.raises(ValueError, match="have no ids"):
        presence_from_csv(tmp_path / "p.csv", anonymous)


def test_ids_follow_subsets() -> None:
    data = _data()
    assert data.subset(torch.tensor([3, 1])).ids == ("s3", "s1")
    assert data.subset(torch.tensor([True, False, True, False])).ids == ("s0", "s2")
    with pytest.raises(ValueError, match="ids must name each of the 4 samples once"):
        MultimodalData(data.modalities, data.inputs, data.target, data.present, ids=("x",) * 4)
