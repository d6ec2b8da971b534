"""Upper bounds trained on complete single-modality data (``--upper-bounds complete``): once per
task, modality and pretraining seed, shared by every setting and seed of an experiment."""

from __future__ import annotations

import json

import pytest
import torch

from mce.data.masks import apply_missing_rates
from mce.experiment import parse_spec
from mce.tasks import get_task
from mce.train import parse_config
from mce.training.config import HyperParameters, TrainConfig
from mce.training.pretrain import upper_bound_table
from mce.training.run import config_for, run

TINY = HyperParameters(batch_size=64, pretrain_steps=4, pretrain_eval_every=2, pretrain_patience=1)


def _table(task, train, full, cache, seed=0):
    return upper_bound_table(
        task, train, hparams=TINY, seed=seed, setting="complete", cache_dir=cache,
        progress=False, fit_data=full,
    )  # fmt: skip


@pytest.mark.slow
def test_complete_models_learn_from_the_split_before_masking_and_score_the_masked_one(tmp_path):
    task = get_task("digits")
    full = task.splits(None).train
    first = apply_missing_rates(full, (0.8, 0.2), 0).data
    bounds = _table(task, first, full, tmp_path)
    for m, name in enumerate(full.modalities):
        entry = bounds.report[name]
        present = (first.present >> m) & 1 == 1
        assert entry["samples"] == len(full)  # every sample has both modalities before masking
        assert entry["scored_samples"] == int(present.sum()) < len(full)
        assert entry["trained_on"] == "complete" and not entry["cached"]
        assert bool((bounds.table[~present, m] == 0).all())
        assert bool((bounds.table[present, m] > 0).any())
    # another setting and seed of the masks: the same models, read from the cache
    second = apply_missing_rates(full, (0.2, 0.5), 3).data
    again = _table(task, second, full, tmp_path)
    assert all(entry["cached"] for entry in again.report.values())
    assert len(list(tmp_path.iterdir())) == 2
    for name in full.modalities:
        for key, value in bounds.models[name].state_dict().items():
            assert torch.equal(value, again.models[name].state_dict()[key])
    # a new pretraining seed trains new ones
    other = _table(task, second, full, tmp_path, seed=1)
    assert not any(entry["cached"] for entry in other.report.values())


def test_the_pretraining_seed_is_the_runs_with_available_and_zero_with_complete():
    assert TrainConfig(seed=4).upper_bound_seed == 4
    assert TrainConfig(seed=4, upper_bounds="complete").upper_bound_seed == 0
    assert TrainConfig(seed=4, upper_bounds="complete", pretrain_seed=2).upper_bound_seed == 2
    with pytest.raises(ValueError, match="upper_bounds must be one of available, complete"):
        TrainConfig(upper_bounds="full")
    with pytest.raises(ValueError, match="pretrain_seed must be a whole number"):
        TrainConfig(pretrain_seed=-1)


def test_the_flags_reach_the_config_and_the_experiment_cells(tmp_path):
    config, _ = parse_config(["--upper-bounds", "complete", "--pretrain-seed", "3"])
    assert (config.upper_bounds, config.pretrain_seed) == ("complete", 3)
    assert config.to_dict()["upper_bounds"] == "complete"
    spec, _ = parse_spec(["--upper-bounds", "complete", "--seeds", "0-1"])
    assert spec.to_dict()["upper_bounds"] == "complete"
    from mce.experiment import cells_of

    cells = cells_of(spec, get_task("digits"))
    assert {cell.config(spec, tmp_path).upper_bounds for cell in cells} == {"complete"}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["available", "complete"])
def test_two_runs_at_other_settings_share_complete_models_only(tmp_path, mode):
    cache = tmp_path / "cache"
    reports = []
    for seed, rates in ((0, (0.8, 0.2)), (1, (0.3, 0.6))):
        config = config_for(
            "digits", method="mce", epochs=1, seed=seed, missing_rates=rates,
            pretrain_steps=4, pretrain_eval_every=2, pretrain_patience=1, upper_bounds=mode,
            cache_dir=str(cache), out=str(tmp_path / f"run{seed}"), progress=False,
        )  # fmt: skip
        run(config, verbose=False)
        record = json.loads((tmp_path / f"run{seed}" / "results.json").read_text())
        reports.append(record["upper_bounds"])
    second = [entry["cached"] for entry in reports[1].values()]
    assert second == ([True, True] if mode == "complete" else [False, False])
    assert {entry["trained_on"] for entry in reports[1].values()} == {mode}
