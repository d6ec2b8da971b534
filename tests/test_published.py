"""The paper's published numbers (mce.experiment.published): the loader, and every typed number
checked against the paper's extracted text where it is present."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

import pytest

from mce.experiment import VARIANTS
from mce.experiment.published import (
    CLAIM_KINDS,
    TABLE2_TASKS,
    TABLES,
    PublishedValue,
    published_table,
    published_tables,
)

PAPER = Path(__file__).resolve().parents[1].parent / "shared" / "seeds" / "mce_paper.txt"
needs_paper = pytest.mark.skipif(
    not PAPER.is_file(), reason=f"the paper's extracted text is not at {PAPER}"
)

# printed row label -> method key, written here independently of the JSON's "labels"
LABELS = {
    "PMR [21]": "pmr",
    "MBT-Sample [16]": "mbt-sample",
    "ShaSpec [11]": "shaspec",
    "RedCore [14]": "redcore",
    "PASSION [15]": "passion",
    "UniMF [25]": "unimf",
    "MCE": "mce",
    "baseline": "baseline",
    "Baseline": "baseline",
    "MCE (Exact SV)": "mce-exact",
    "MCE (MC-200 SV)": "mce-mc200",
}
DICE = {"WT": "dice_wt", "TC": "dice_tc", "ET": "dice_et"}
TABLE8_COLUMNS = {
    "Time (ms)": "time_ms",
    "FLOPs (G)": "flops_g",
    "GPU Memory (MB)": "gpu_memory_mb",
    "Accuracy": "accuracy",
}
TABLE1_TASKS = {
    "nuScenes": "nuscenes",
    "BraTS2020": "brats",
    "IEMOCAP": "iemocap",
    "AudiovisionMNIST": "avmnist",
}
COMPONENTS = ("A", "B", "L_single", "L_sub", "L_aux")


def _raw_json() -> dict:
    """The JSON with every number as the text typed in the file."""
    text = resources.files("mce.experiment").joinpath("paper_values.json").read_text("utf-8")
    return json.loads(text, parse_float=str, parse_int=str)


# ----------------------------------------------------------------------------- the loader


def test_sample_cells_are_typed_values():
    t4 = published_table("table4")
    wt = t4.value("mce", "a", "dice_wt")
    assert wt == PublishedValue(mean=84.0, std=0.15, ci=None, runs=10)
    assert str(wt) == "84.00 ± 0.15"
    assert isinstance(wt.mean, float) and isinstance(wt.runs, int)
    # BraTS rates by group (T1/T1c, Flair, T2) or by task modality (t1, t1ce, flair, t2)
    assert t4.value("passion", (0.8, 0.5, 0.2), "dice_et").mean == 52.08
    assert t4.value("passion", (0.8, 0.8, 0.5, 0.2), "dice_et").mean == 52.08
    assert t4.value("passion", (0.8, 0.2, 0.5, 0.2), "dice_et") is None  # T1 != T1c
    assert t4.settings["d"] == (0.5, 0.8, 0.2)
    assert t4.task_modalities == (("t1", "t1ce"), ("flair",), ("t2",))
    assert (t4.combinations, t4.runs, t4.seed) == (15, 10, None)

    iemocap = published_table("table2", task="iemocap")
    m = iemocap.value("mce", (0.2, 0.5, 0.8))
    assert (m.mean, m.std, m.ci, m.runs) == (60.93, 1.39, (59.94, 61.92), None)
    assert iemocap.rows["j"] == "t2-j" and iemocap.rows["c"] == "lsub-only"
    assert iemocap.value("mce", "b") is None  # Table 2 has one setting
    assert iemocap.value("pmr", "a") is None

    nuscenes = published_table("table2", task="nuscenes")
    assert nuscenes.value("baseline", "a") == PublishedValue(31.24, None, None, 1)
    assert (nuscenes.seed, nuscenes.combinations) == (125, 7)
    assert nuscenes.training["iterations"] == 50000

    t3 = published_table("table3")
    assert t3.value("shaspec", "f").mean == 27.36
    assert "baseline" not in t3.methods

    t5 = published_table("table5")
    assert t5.value("unimf", (0.8, 0.2, 0.5)) == PublishedValue(59.28, 5.76, None, 10)
    assert t5.value("mce", (0.8, 0.2)) is None  # another task's setting

    t8 = published_table("table8")
    assert t8.value("mce-exact", "a", "time_ms").mean == 1046.9
    assert t8.value("mce-mc200", "a", "gpu_memory_mb").mean == 1531.0
    assert t8.training["batch_size"] == 128 and t8.training["device"] == "RTX4090"

    fig7 = published_table("fig7")
    assert fig7.figure and fig7.values == {} and fig7.value("mce", "a") is None


def test_tables_by_task():
    assert [t.name for t in published_tables("iemocap")] == ["table2", "table5", "table8"]
    assert [t.name for t in published_tables("brats")] == ["table4"]
    assert published_tables("digits") == ()
    assert len(published_tables()) == len(TABLES) + len(TABLE2_TASKS) - 1


def test_every_value_is_a_published_value():
    for table in published_tables():
        assert set(table.settings) <= set("abcdef")
        for method, by_setting in table.values.items():
            assert set(by_setting) == set(table.settings), (table.name, method)
            for cells in by_setting.values():
                assert set(cells) == set(table.metrics), (table.name, method)
                for cell in cells.values():
                    assert isinstance(cell.mean, float)
                    assert cell.std is None or isinstance(cell.std, float)
                    assert cell.runs == table.runs


# ----------------------------------------------------------------------------- clear errors


def test_unknown_names_are_clear_errors():
    with pytest.raises(ValueError, match=r"unknown published table 'table6'.*table2, table3"):
        published_table("table6")
    with pytest.raises(ValueError, match="nuscenes, iemocap.*got no task"):
        published_table("table2")
    with pytest.raises(ValueError, match="nuscenes, iemocap.*got task 'brats'"):
        published_table("table2", task="brats")
    with pytest.raises(ValueError, match="table4 is a table of task 'brats', not 'iemocap'"):
        published_table("table4", task="iemocap")
    t4 = published_table("table4")
    with pytest.raises(ValueError, match="dice_wt, dice_tc, dice_et: pass metric="):
        t4.value("mce", "a")
    with pytest.raises(ValueError, match="no metric 'dice'; its metrics: dice_wt"):
        t4.value("mce", "a", "dice")


# ----------------------------------------------------------------------------- claims


@pytest.mark.parametrize("table", published_tables(), ids=lambda t: f"{t.name}-{t.task}")
def test_claims_refer_to_published_values(table):
    assert table.claims, "every table records the text's claims about it"
    assert len({c.id for c in table.claims}) == len(table.claims)
    for claim in table.claims:
        assert claim.kind in CLAIM_KINDS
        assert set(claim.metrics) <= set(table.metrics)
        if claim.kind in ("difference", "cost_ratio"):
            assert claim.value is not None and claim.tolerance is not None
            assert claim.others is not None and len(claim.others) == 1
        if table.figure:
            assert claim.holds(table.mean) is None and claim.holds_in_tables is None
            continue
        assert claim.others and claim.settings
        assert claim.method not in claim.others
        for name in (claim.method, *claim.others):
            assert name in table.methods, (claim.id, name)
        for setting in claim.settings:
            assert setting in table.settings, (claim.id, setting)
        if claim.kind == "ordering":
            assert set(claim.others) == set(table.methods) - {claim.method}
        # the recorded verdict is what the printed numbers give
        assert claim.holds(table.mean) is claim.holds_in_tables, claim.id
        assert (claim.note is not None) or claim.holds_in_tables, claim.id


def test_claims_check_measured_means():
    claim = next(c for c in published_table("table3").claims if c.id == "mce-best")
    assert claim.holds(lambda method, setting, metric: 1.0 if method == "mce" else 0.5)
    assert not claim.holds(lambda method, setting, metric: 0.5)
    assert claim.holds(lambda method, setting, metric: None) is None


def test_table2_rows_are_the_grid_variants():
    rows = published_table("table2", task="nuscenes").rows
    by_row = {v.table2_row: name for name, v in VARIANTS.items() if v.table2_row}
    assert dict(rows) == by_row
    raw_rows = _raw_json()["tables"]["table2"]["rows"]
    for letter, row in raw_rows.items():
        on = [label for label, used in VARIANTS[row["method"]].components().items() if used]
        assert on == row.get("read_as", row["ticks"]), letter


# ----------------------------------------------------------------------------- against the paper


@pytest.fixture(scope="module")
def paper() -> list[str]:
    return PAPER.read_text(encoding="utf-8").splitlines()


def _index(lines: list[str], prefix: str) -> int:
    found = [i for i, line in enumerate(lines) if line.startswith(prefix)]
    assert len(found) == 1, (prefix, found)
    return found[0]


def _rows_after(lines: list[str], header: int) -> list[list[str]]:
    """The tab-separated rows from ``header`` (included) to the next blank line."""
    rows = []
    for line in lines[header:]:
        if not line.strip():
            break
        rows.append(line.split("\t"))
    return rows


def _header_after(lines: list[str], caption: int) -> int:
    return next(i for i in range(caption + 1, len(lines)) if lines[i].strip())


def _cell(text: str, with_std: bool) -> dict:
    if not with_std:
        assert re.fullmatch(r"\d+(\.\d+)?", text), text
        return {"mean": text, "std": None, "ci": None}
    match = re.fullmatch(r"(\d+\.\d+)\s*(?:\\pm|±)\s*(\d+\.\d+)", text.strip())
    assert match, text
    return {"mean": match[1], "std": match[2], "ci": None}


def _printed(lines: list[str]) -> dict:
    """(table, task, method, setting, metric) -> the printed cell, parsed from the paper."""
    cells: dict[tuple, dict] = {}
    # Table 2: rows a-m; nuScenes IoU, IEMOCAP accuracy with its 95% CI
    header = _index(lines, "No.\t")
    row_names = {v.table2_row: name for name, v in VARIANTS.items() if v.table2_row}
    for row in _rows_after(lines, header)[1:]:
        method = row_names[row[0].rstrip(".")]
        cells["table2", "nuscenes", method, "a", "iou"] = _cell(row[6], False)
        iemocap = _cell(row[7], True)
        iemocap["ci"] = list(re.fullmatch(r"\[(\d+\.\d+), (\d+\.\d+)\]", row[8]).groups())
        cells["table2", "iemocap", method, "a", "accuracy"] = iemocap
    # Tables 3 and 5: one metric, settings a-f
    for name, task, metric, with_std in (
        ("table3", "nuscenes", "iou", False),
        ("table5", "iemocap", "accuracy", True),
    ):
        caption = _index(lines, f"Table {name[-1]}:")
        rows = _rows_after(lines, _header_after(lines, caption))
        assert rows[0] == ["Method", *"abcdef"]
        for row in rows[1:]:
            for setting, text in zip("abcdef", row[1:], strict=True):
                cells[name, task, LABELS[row[0]], setting, metric] = _cell(text, with_std)
    # Table 4: blocks WT, TC, ET
    rows = _rows_after(lines, _header_after(lines, _index(lines, "Table 4:")))
    metric = None
    for row in rows:
        if row[1:] == list("abcdef"):
            metric = DICE[row[0]]
            continue
        for setting, text in zip("abcdef", row[1:], strict=True):
            cells["table4", "brats", LABELS[row[0]], setting, metric] = _cell(text, True)
    # Table 8: cost columns at (0.2, 0.5, 0.8)
    rows = _rows_after(lines, _header_after(lines, _index(lines, "Table 8:")))
    columns = [TABLE8_COLUMNS[c] for c in rows[0][1:]]
    for row in rows[1:]:
        for metric, text in zip(columns, row[1:], strict=True):
            cells["table8", "iemocap", LABELS[row[0]], "a", metric] = _cell(text, False)
    return cells


def _typed() -> dict:
    """The same keys from the JSON, numbers as typed in the file."""
    cells = {}
    for name, entry in _raw_json()["tables"].items():
        bodies = entry["tasks"] if name == "table2" else {entry["task"]: entry}
        for task, body in bodies.items():
            for method, by_setting in (body["values"] or {}).items():
                for setting, by_metric in by_setting.items():
                    for metric, cell in by_metric.items():
                        cells[name, task, method, setting, metric] = {
                            "mean": cell["mean"],
                            "std": cell["std"],
                            "ci": cell["ci"],
                        }
    return cells


@needs_paper
def test_every_typed_number_is_printed_in_the_paper(paper):
    printed, typed = _printed(paper), _typed()
    assert len(printed) == 13 * 2 + 5 * 6 + 5 * 6 * 3 + 5 * 6 + 3 * 4
    assert sorted(typed) == sorted(printed)  # nothing missing, nothing extra
    for key, cell in typed.items():
        assert cell == printed[key], key


@needs_paper
def test_table_facts_match_the_paper(paper):
    text = paper[_index(paper, "To evaluate the robustness and flexibility of MCE")]
    settings = dict(re.findall(r"([a-f])\. \((0\.\d, 0\.\d, 0\.\d)\)", text))
    assert len(settings) == 6
    raw = _raw_json()["tables"]
    for table in published_tables():
        caption = paper[table.line - 1]
        assert caption == table.caption
        for letter, rates in table.settings.items():
            assert ", ".join(f"{r:g}" for r in rates) == settings[letter], (table.name, letter)
        combinations = re.search(r"all (\d+) multi-modal combinations", caption)
        if combinations:
            assert table.combinations == int(combinations[1]), table.name
        runs = re.search(r"(\d+) independent experimental runs", caption)
        seed = re.search(r"[Tt]he seed .*? (\d+)\.", caption)
        seeded = seed is not None and table.task == "nuscenes"  # Table 2: nuScenes only
        assert table.seed == (int(seed[1]) if seeded else None), table.name
        assert table.runs == (int(runs[1]) if runs else 1 if seeded else None), table.name
    ticks = {
        row[0].rstrip("."): [c for c, mark in zip(COMPONENTS, row[1:6]) if mark == "✓"]
        for row in _rows_after(paper, _index(paper, "No.\t"))[1:]
    }
    assert {k: v["ticks"] for k, v in raw["table2"]["rows"].items()} == ticks


@needs_paper
def test_training_details_are_table1(paper):
    rows = _rows_after(paper, _header_after(paper, _index(paper, "Table 1:")))
    datasets = [TABLE1_TASKS[re.sub(r" \[.*\]$", "", c)] for c in rows[0][1:]]
    table1 = {task: {row[0]: row[1 + i] for row in rows[1:]} for i, task in enumerate(datasets)}
    for table in published_tables():
        printed, typed = table1[table.task], table.training
        assert paper[typed["line"] - 1].startswith("Epoch/Iteration\t")
        assert typed["schedule"] == printed["Epoch/Iteration"]
        match = re.fullmatch(r"([\d.]+)(k?) (iters|epochs)", printed["Epoch/Iteration"])
        steps = round(float(match[1]) * (1000 if match[2] else 1))
        counted = "iterations" if match[3] == "iters" else "epochs"
        uncounted = "epochs" if counted == "iterations" else "iterations"
        assert (typed[counted], typed[uncounted]) == (steps, None)
        assert typed["batch_size"] == int(printed["Batch size"])
        assert typed["optimizer"] == printed["Optimizer"]
        scheduler = re.sub(r" \[\d+\]", "", printed["Scheduler"]).replace("$", "")
        assert typed["scheduler"] == scheduler
        base, power = re.fullmatch(r"(\d+)×10\^\{(-?\d+)\}", printed["Learning rate"]).groups()
        assert typed["learning_rate"] == pytest.approx(int(base) * 10.0 ** int(power))
        assert typed["evaluation"] == printed["Evaluation"]
        assert typed["device"] == printed["Device"]


@needs_paper
def test_claims_quote_their_lines(paper):
    for table in published_tables():
        for claim in table.claims:
            assert claim.quote in paper[claim.line - 1], (table.name, claim.id)
