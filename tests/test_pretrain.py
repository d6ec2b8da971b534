"""Unimodal upper bounds: training to convergence on a held-out part, the cache and its key."""

from __future__ import annotations

import dataclasses
import logging
import struct
import types
import zipfile

import pytest
import torch
from torch import nn

from mce.data.dataset import MultimodalData
from mce.data.masks import apply_missing_rates
from mce.support.seeding import stream
from mce.tasks import get_task
from mce.tasks.base import Task
from mce.train import parse_config
from mce.training import pretrain
from mce.training.config import HyperParameters, TrainConfig
from mce.training.pretrain import cache_key, data_fingerprint, split_holdout, unimodal_model
from mce.training.pretrain import upper_bound_table as _upper_bound_table

TINY = {
    "batch_size": 64,
    "pretrain_steps": 4,
    "pretrain_eval_every": 2,
    "pretrain_patience": 1,
    "lr": 1e-3,
}


@pytest.fixture(scope="module")
def digits() -> tuple[Task, MultimodalData]:
    task = get_task("digits")
    train = task.splits(None).train
    return task, apply_missing_rates(train, (0.8, 0.2), 0).data


def upper_bound_table(task, train, cache_dir, no_cache=False, seed=0, **hparams):
    return _upper_bound_table(
        task,
        train,
        hparams=HyperParameters(**{**TINY, **hparams}),
        seed=seed,
        setting="0.8-0.2",
        cache_dir=cache_dir,
        progress=False,
        no_cache=no_cache,
    )


def cached(bounds) -> list[bool]:
    return [entry["cached"] for entry in bounds.report.values()]


@pytest.mark.slow
def test_same_settings_reuse_the_cache_and_changing_the_lr_retrains(digits, tmp_path, caplog):
    task, train = digits
    first = upper_bound_table(task, train, tmp_path)
    assert cached(first) == [False, False] and len(list(tmp_path.iterdir())) == 2
    with caplog.at_level(logging.INFO, logger="mce.training.pretrain"):
        again = upper_bound_table(task, train, tmp_path)
    assert cached(again) == [True, True] and "reusing" in caplog.text
    assert torch.equal(again.table, first.table) and again.report.keys() == first.report.keys()
    other_lr = upper_bound_table(task, train, tmp_path, lr=2e-3)
    assert cached(other_lr) == [False, False]
    assert len(list(tmp_path.iterdir())) == 4  # both settings' models are kept
    assert not torch.equal(other_lr.table, first.table)
    assert cached(upper_bound_table(task, train, tmp_path)) == [True, True]


@pytest.mark.slow
def test_the_report_gives_held_out_utility_and_u_per_modality(digits, tmp_path):
    task, train = digits
    bounds = upper_bound_table(task, train, tmp_path)
    assert bounds.table.shape == (len(train), 2)
    for m, name in enumerate(train.modalities):
        entry = bounds.report[name]
        present = (train.present >> m) & 1 == 1
        assert entry["samples"] == int(present.sum())
        assert entry["heldout_samples"] == round(0.2 * entry["samples"])
        assert 0.0 <= entry["heldout_utility"] <= 1.0
        assert entry["training_utility"] == pytest.approx(float(bounds.table[present, m].mean()))
        assert bool((bounds.table[~present, m] == 0).all())
        assert 0 < entry["best_step"] <= entry["steps"] <= 4


@pytest.mark.slow
def test_the_training_split_is_left_unscored_when_u_comes_per_batch(digits, tmp_path, caplog):
    task, train = digits
    scored = upper_bound_table(task, train, tmp_path)
    with caplog.at_level(logging.INFO, logger="mce.training.pretrain"):
        unscored = _upper_bound_table(
            task, train, hparams=HyperParameters(**TINY), seed=0, setting="0.8-0.2",
            cache_dir=tmp_path, progress=False, score_training=False,
        )  # fmt: skip
    assert bool((unscored.table == 0).all()) and "training split not scored" in caplog.text
    for name in train.modalities:
        assert unscored.report[name]["training_utility"] is None
        assert unscored.report[name]["heldout_utility"] == scored.report[name]["heldout_utility"]
        assert unscored.models[name] is not None


@pytest.mark.slow
def test_a_corrupt_or_stale_cache_file_is_retrained(digits, tmp_path, caplog):
    task, train = digits
    first = upper_bound_table(task, train, tmp_path)
    image, audio = sorted(tmp_path.iterdir())
    image.write_bytes(b"not a checkpoint")
    state = torch.load(audio, weights_only=True)
    torch.save({**state, "key": state["key"].replace('"lr":0.001', '"lr":0.5')}, audio)
    with caplog.at_level(logging.WARNING, logger="mce.training.pretrain"):
        again = upper_bound_table(task, train, tmp_path)
    assert cached(again) == [False, False]
    assert "unusable" in caplog.text and "other settings" in caplog.text
    assert torch.equal(again.table, first.table)  # retraining is deterministic
    assert cached(upper_bound_table(task, train, tmp_path)) == [True, True]  # rewritten


def _flip_bytes_of_largest_tensor(path, count: int = 16) -> None:
    """Inverts ``count`` bytes in the middle of the largest tensor's data in a saved file (as a
    bad disk or copy would), leaving the rest of the file, its key and its sha256 as they were."""
    with zipfile.ZipFile(path) as archive:
        entries = [info for info in archive.infolist() if "/data/" in info.filename]
        largest = max(entries, key=lambda info: info.file_size)
    raw = bytearray(path.read_bytes())
    header = largest.header_offset
    assert raw[header : header + 4] == b"PK\x03\x04" and largest.compress_type == 0
    name_length, extra_length = struct.unpack("<HH", raw[header + 26 : header + 30])
    middle = header + 30 + name_length + extra_length + largest.file_size // 2
    raw[middle : middle + count] = bytes(byte ^ 0xFF for byte in raw[middle : middle + count])
    path.write_bytes(bytes(raw))


@pytest.mark.slow
def test_a_cache_file_with_flipped_weight_bytes_is_retrained(digits, tmp_path, caplog):
    task, train = digits
    first = upper_bound_table(task, train, tmp_path)
    assert train.modalities == ("image", "audio")
    (image,), (audio,) = tmp_path.glob("digits-image-*.pt"), tmp_path.glob("digits-audio-*.pt")
    before = torch.load(image, weights_only=True)["model"]
    _flip_bytes_of_largest_tensor(image)
    after = torch.load(image, weights_only=True)["model"]  # still loads: only the hash tells
    changed = [name for name in before if not torch.equal(before[name], after[name])]
    assert len(changed) == 1 and before.keys() == after.keys()
    with caplog.at_level(logging.WARNING, logger="mce.training.pretrain"):
        again = upper_bound_table(task, train, tmp_path)
    assert cached(again) == [False, True]
    assert f"cache file {image} is corrupt (its weights do not match their sha256)" in caplog.text
    assert str(audio) not in caplog.text
    assert torch.equal(again.table, first.table)  # retrained (deterministic), not the flipped
    assert cached(upper_bound_table(task, train, tmp_path)) == [True, True]  # rewritten


@pytest.mark.slow
def test_no_cache_retrains_and_overwrites(digits, tmp_path):
    task, train = digits
    upper_bound_table(task, train, tmp_path)
    (tmp_path / "marker").write_text("")
    stamps = {path: path.stat().st_mtime_ns for path in tmp_path.glob("*.pt")}
    bounds = upper_bound_table(task, train, tmp_path, no_cache=True)
    assert cached(bounds) == [False, False]
    assert all(path.stat().st_mtime_ns != stamp for path, stamp in stamps.items())


def test_no_cache_flag_reaches_the_config_but_not_config_json():
    config, _ = parse_config(["--no-cache"])
    assert config.no_cache and not parse_config([])[0].no_cache
    assert "no_cache" not in config.to_dict() and not TrainConfig(task="digits").no_cache


@pytest.mark.parametrize(
    "change",
    [
        {"lr": 2e-3},
        {"batch_size": 32},
        {"optimizer": "sgd"},
        {"weight_decay": 1e-4},
        {"momentum": 0.5},
        {"grad_clip": 0.0},
        {"pretrain_steps": 5},
        {"pretrain_eval_every": 3},
        {"pretrain_patience": 2},
        {"pretrain_holdout": 0.3},
        {"seed": 1},
        {"setting": "0.5-0.5"},
        {"mask": True},
        {"architecture": True},
        {"version": "9.9"},
    ],
    ids=lambda change: next(iter(change)),
)
def test_the_cache_key_covers_everything_that_changes_the_model(digits, monkeypatch, change):
    task, train = digits

    def key(change: dict) -> str:
        fields = {k: v for k, v in change.items() if k in HyperParameters.__dataclass_fields__}
        model = unimodal_model(task, "image")
        if "architecture" in change:
            model = nn.Sequential(model, nn.Identity())
        data = train
        if "mask" in change:
            data = dataclasses.replace(train, present=train.present.roll(1))
        return cache_key(
            task,
            "image",
            model,
            HyperParameters(**{**TINY, **fields}),
            seed=change.get("seed", 0),
            setting=change.get("setting", "0.8-0.2"),
            fingerprint=data_fingerprint(data),
        )

    base = key({})
    assert key({}) == base
    if "version" in change:
        monkeypatch.setattr(pretrain, "package_version", lambda: change["version"])
    assert key(change) != base


def test_split_holdout_is_disjoint_complete_and_seeded():
    indices = torch.arange(3, 103, 2)
    fit, held = split_holdout(indices, 0.2, torch.Generator().manual_seed(4))
    assert held.numel() == 10 and fit.numel() == 40
    assert sorted(fit.tolist() + held.tolist()) == indices.tolist()
    assert not set(fit.tolist()) & set(held.tolist())
    again = split_holdout(indices, 0.2, torch.Generator().manual_seed(4))
    assert torch.equal(again[0], fit) and torch.equal(again[1], held)
    assert split_holdout(torch.arange(2), 0.01, torch.Generator())[1].numel() == 1
    assert split_holdout(torch.arange(2), 0.99, torch.Generator())[0].numel() == 1
    with pytest.raises(ValueError, match="cannot be split"):
        split_holdout(torch.arange(1), 0.2, torch.Generator())


class _Spy(nn.Module):
    """Records which samples (input = sample id) it sees in training and in eval mode."""

    def __init__(self, seen: dict[str, list[list[int]]]) -> None:
        super().__init__()
        self.seen = seen
        self.linear = nn.Linear(1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen["train" if self.training else "eval"].append(x[:, 0].long().tolist())
        return self.linear(x / 40)


def _toy_task(seen: dict[str, dict[str, list[list[int]]]]) -> tuple[Task, MultimodalData]:
    n = 40
    ids = torch.arange(n, dtype=torch.float32)[:, None]
    presence = torch.ones(n, 2, dtype=torch.bool)
    presence[::3, 0] = False  # modality a misses every third sample
    data = MultimodalData.from_arrays(
        {"a": ids, "b": ids}, torch.arange(n) % 3, presence=presence.numpy()
    )

    seen.update({name: {"train": [], "eval": []} for name in ("a", "b")})

    def build_model():
        return types.SimpleNamespace(
            encoders={name: _Spy(seen[name]) for name in ("a", "b")},
            heads={name: nn.Identity() for name in ("a", "b")},
        )

    return Task(name="toy", modalities=("a", "b"), load=None, build_model=build_model), data


def test_held_out_samples_are_never_trained_on(tmp_path):
    seen: dict[str, dict[str, list[list[int]]]] = {}
    task, data = _toy_task(seen)
    hparams = {
        "batch_size": 8,
        "pretrain_steps": 30,
        "pretrain_eval_every": 5,
        "pretrain_patience": 100,
    }
    upper_bound_table(task, data, tmp_path, seed=7, **hparams)
    for m, name in enumerate(("a", "b")):
        present = torch.nonzero((data.present >> m) & 1).flatten()
        trained = {i for batch in seen[name]["train"] for i in batch}
        held = set(seen[name]["eval"][0])  # the first evaluation: the held-out part
        assert held and trained and not trained & held
        assert trained | held == set(present.tolist())
        expected = split_holdout(present, 0.2, stream(7, "pretrain", m))[1]
        assert held == set(expected.tolist())
        assert len(seen[name]["train"]) == 30 and all(len(b) <= 8 for b in seen[name]["train"])


def test_early_stopping_stops_before_the_budget(tmp_path, monkeypatch):
    task, data = _toy_task({})
    flat = lambda model, task, inputs, *_: torch.ones(2, inputs.shape[0])
    monkeypatch.setattr(pretrain, "_evaluate", flat)  # the held-out score never improves
    hparams = {
        "batch_size": 8,
        "pretrain_steps": 1000,
        "pretrain_eval_every": 5,
        "pretrain_patience": 3,
    }
    bounds = upper_bound_table(task, data, tmp_path, **hparams)
    for entry in bounds.report.values():
        assert entry["stopped_early"] and entry["best_step"] == 5
        assert entry["steps"] == 5 * (1 + 3)
        assert entry["heldout_utility"] == 1.0


@pytest.mark.slow
def test_a_real_model_learns_and_keeps_its_held_out_best(digits, tmp_path):
    task, train = digits
    settings = {"pretrain_steps": 100, "pretrain_eval_every": 10, "pretrain_patience": 3}
    bounds = upper_bound_table(task, train, tmp_path, batch_size=128, **settings)
    for entry in bounds.report.values():
        assert entry["heldout_utility"] > 0.3  # ten classes: chance is 0.1
        assert entry["training_utility"] > 0.3
        assert entry["best_step"] <= entry["steps"] <= 100


def test_a_modality_in_fewer_than_two_samples_is_refused(tmp_path):
    task, data = _toy_task({})
    present = data.present & ~1  # modality a (bit 0) nowhere...
    present[1] |= 1  # ...but in sample 1
    with pytest.raises(ValueError, match="present in 1 training sample"):
        upper_bound_table(task, dataclasses.replace(data, present=present), tmp_path)
