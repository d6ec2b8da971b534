"""PMR: the loss and the hard switch worked by hand (vector and dense), the prototype pass
against a hand loop over its drawn subset, momentum and classes without samples, exact
resume, two ranks against one process, options, and ``--method pmr`` on every task's
fixture."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import ddp_workers
import pytest
import torch
from data.avmnist_fixture import write_avmnist_fixture
from data.brats_fixture import write_brats_fixture
from data.iemocap_fixture import write_iemocap_fixture
from data.nuscenes_fixture import write_nuscenes_fixture
from torch import nn

from mce.data.dataset import Batch, MultimodalData
from mce.data.masks import apply_missing_rates
from mce.methods import METHODS, MethodInputs, PMRConfig, PMRMethod, get_method
from mce.methods.pmr import modulation_weights, position_labels, prototype_subset
from mce.nn.fusion import ConcatFusion
from mce.nn.model import MultimodalModel
from mce.science.lce import presence_counts
from mce.support.checkpoint import load_checkpoint
from mce.support.seeding import stream
from mce.tasks.brats import build_model as build_brats_model
from mce.tasks.digits import TASK as DIGITS
from mce.train import config_for, main, parse_config, run

MODALITIES = ("a", "b", "c")
DIM = 4
CLASSES = 3


def small_model(seed: int = 0, modalities: tuple[str, ...] = MODALITIES) -> MultimodalModel:
    """Linear encoders of 3 inputs to 4 features, concatenation, 3 classes."""
    torch.manual_seed(seed)
    count = len(modalities)
    return MultimodalModel(
        modalities,
        encoders={name: nn.Linear(3, DIM) for name in modalities},
        heads={name: nn.Linear(DIM, CLASSES) for name in modalities},
        fusion=ConcatFusion(count, DIM),
        decoder=nn.Linear(count * DIM, CLASSES),
        reconstruction=None,
        dim=DIM,
    )


def ce_loss(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy [B] (mean over positions of a dense output)."""
    losses = nn.functional.cross_entropy(outputs, target.long(), reduction="none")
    return losses.reshape(losses.shape[0], -1).mean(1)


def method_inputs(counts: list[int], **changes) -> MethodInputs:
    def utility(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        correct = (outputs.argmax(1) == target).float()
        return correct.reshape(correct.shape[0], -1).mean(1)

    inputs = MethodInputs(ce_loss, utility, torch.tensor(counts), 10, 0)
    return dataclasses.replace(inputs, **changes)


def with_prototypes(method: PMRMethod, prototypes: torch.Tensor, known: torch.Tensor) -> PMRMethod:
    method.load_state_dict({"epoch": 0, "prototypes": prototypes, "known": known})
    return method


def softmax_true(distances: list[float], true: int) -> float:
    """exp(-d_true) / sum_c exp(-d_c), written out."""
    return math.exp(-distances[true]) / sum(math.exp(-d) for d in distances)


def euclid(x: list[float], y: list[float]) -> float:
    return math.sqrt(sum((a - b) ** 2 for a, b in zip(x, y)))


def hand_switch(scores: dict[int, float], alpha: float, count: int) -> list[float]:
    """alpha for every modality below the mean of the scores it has; with two, the lower."""
    mean = sum(scores.values()) / len(scores)
    return [alpha if m in scores and scores[m] < mean else 0.0 for m in range(count)]


# --------------------------------------------------------------------------------------------
# the loss by hand
# --------------------------------------------------------------------------------------------


def test_vector_loss_equals_a_hand_loop() -> None:
    model = small_model()
    generator = torch.Generator().manual_seed(1)
    present = [0b111, 0b011, 0b101, 0b110, 0b001, 0b111, 0b100]
    target = [0, 1, 2, 1, 0, 2, 2]
    inputs = {name: torch.randn(len(present), 3, generator=generator) for name in MODALITIES}
    batch = Batch(inputs, torch.tensor(target), torch.tensor(present), torch.arange(len(present)))
    prototypes = torch.randn(3, CLASSES, DIM, generator=generator)
    known = torch.ones(3, CLASSES, dtype=torch.bool)
    known[1, 2] = False  # modality b has no prototype of class 2 yet
    alpha = 0.7
    method = with_prototypes(
        PMRMethod(method_inputs([5, 5, 5]), PMRConfig(pmr_alpha=alpha)), prototypes, known
    )
    result = method.step(model, batch, 0)
    result.loss.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}

    # by hand: per sample and class, Python floats for the values and torch scalars for the
    # gradients (features not detached, prototypes constants)
    model.zero_grad()
    outputs = model(inputs, batch.present)
    task = sum(ce_loss(outputs[n : n + 1], batch.target[n : n + 1])[0] for n in range(7)) / 7
    ce: dict[int, list] = {}
    scores: dict[int, float] = {}
    for m, name in enumerate(MODALITIES):
        terms, values = [], []
        for n, (mask, y) in enumerate(zip(present, target)):
            if not (mask >> m) & 1 or not known[m, y]:
                continue
            f = model.encoders[name](inputs[name][n])
            classes = [c for c in range(CLASSES) if known[m, c]]
            d = [torch.sqrt(((f - prototypes[m, c]) ** 2).sum()) for c in classes]
            log_p = -d[classes.index(y)] - torch.log(sum(torch.exp(-x) for x in d))
            terms.append(-log_p)
            p = [[float(v) for v in prototypes[m, c]] for c in classes]
            distances = [euclid(f.detach().tolist(), q) for q in p]
            values.append(softmax_true(distances, classes.index(y)))
        ce[m] = sum(terms) / len(terms)
        scores[m] = sum(values) / len(values)
    coef = hand_switch(scores, alpha, 3)
    assert 0 < coef.count(alpha) < 3
    hand = task + sum(coef[m] * ce[m] for m in range(3))
    hand.backward()

    logs = result.logs
    assert logs["loss"] == pytest.approx(hand.item(), rel=1e-5)
    assert logs["l_task"] == pytest.approx(task.item(), rel=1e-5)
    for m, name in enumerate(MODALITIES):
        assert logs[f"score/{name}"] == pytest.approx(scores[m], rel=1e-5)
        assert logs[f"l_proto/{name}"] == pytest.approx(ce[m].item(), rel=1e-5)
        assert logs[f"coef/{name}"] == coef[m]
    parameters = dict(model.named_parameters())
    for key, grad in grads.items():
        torch.testing.assert_close(grad, parameters[key].grad, rtol=1e-4, atol=1e-6)
    assert any(model.encoders[MODALITIES[m]].weight.grad.abs().sum() > 0 for m in range(3))


def test_outside_the_window_and_before_prototypes_the_loss_is_the_task_loss() -> None:
    model = small_model()
    batch = Batch(
        {name: torch.randn(4, 3) for name in MODALITIES},
        torch.tensor([0, 1, 2, 0]),
        torch.tensor([7, 3, 5, 1]),
        torch.arange(4),
    )
    plain = PMRMethod(method_inputs([4, 2, 2])).step(model, batch, 0)
    assert plain.logs["l_proto"] == 0 and math.isnan(plain.logs["score/a"])
    assert plain.logs["loss"] == pytest.approx(plain.logs["l_task"])
    config = PMRConfig(pmr_modulation_starts=2, pmr_modulation_ends=3)
    method = with_prototypes(
        PMRMethod(method_inputs([4, 2, 2]), config),
        torch.randn(3, CLASSES, DIM),
        torch.ones(3, CLASSES, dtype=torch.bool),
    )
    for epoch, modulated in ((1, False), (2, True), (3, True), (4, False)):
        method.epoch = epoch
        logs = method.step(model, batch, 0).logs
        assert (logs["l_proto"] > 0) == modulated, epoch
        assert math.isnan(logs["score/b"]) != modulated


def test_the_hard_switch() -> None:
    # two modalities: the released rule on rho = s_a / s_v
    assert modulation_weights([0.3, 0.5], 2.0) == [2.0, 0.0]  # rho < 1: audio boosted
    assert modulation_weights([0.5, 0.3], 2.0) == [0.0, 2.0]  # rho > 1: visual boosted
    assert modulation_weights([0.4, 0.4], 2.0) == [0.0, 0.0]  # rho = 1: neither
    # M > 2: every modality below the mean of the present ones
    assert modulation_weights([0.2, 0.5, 0.6], 1.0) == [1.0, 0.0, 0.0]  # mean 0.433
    assert modulation_weights([0.2, 0.3, 0.7], 1.0) == [1.0, 1.0, 0.0]  # mean 0.4
    assert modulation_weights([0.2, None, 0.7, 0.5], 1.0) == [1.0, 0.0, 0.0, 0.0]  # mean 0.467
    assert modulation_weights([0.9, None], 1.0) == [0.0, 0.0]  # one present: nothing to boost
    assert modulation_weights([None, None], 1.0) == [0.0, 0.0]


def test_majority_labels_on_the_feature_grid() -> None:
    # (positive, valid) pairs on a 4 x 4 grid brought to 2 x 2: one 2 x 2 block per cell
    positive = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 1], [1, 0, 1, 1], [0, 0, 0, 1]])
    valid = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]])
    target = torch.stack([positive, valid])[None].to(torch.uint8)
    labels = position_labels(target, (2, 2), 2)
    expected = []
    for i in range(2):
        for j in range(2):
            votes = {0: 0, 1: 0, -1: 0}
            for di in range(2):
                for dj in range(2):
                    r, c = 2 * i + di, 2 * j + dj
                    votes[int(positive[r, c]) if valid[r, c] else -1] += 1
            best = max(votes.values())
            expected.append(next(k for k in (0, 1, -1) if votes[k] == best))  # lower class first
    assert labels.tolist() == [expected]
    assert expected == [1, 0, -1, 1]  # a 2-2 tie goes to class 0; an invalid majority is -1
    # label maps of the grid's size pass unchanged; vector targets are one position
    maps = torch.randint(0, 4, (2, 3, 3, 3))
    assert torch.equal(position_labels(maps, (3, 3, 3), 4), maps.flatten(1))
    assert position_labels(torch.tensor([2, 5]), None, 4).tolist() == [[2], [-1]]
    with pytest.raises(ValueError, match="label maps"):
        position_labels(torch.zeros(2, 3, 4, 4), (4, 4), 2)


def test_dense_loss_equals_a_hand_loop_over_voxels() -> None:
    torch.manual_seed(0)
    model = build_brats_model(crop=8, base=2, levels=3).eval()  # bottleneck 2^3, 8 channels
    names = model.modalities
    generator = torch.Generator().manual_seed(2)
    present = [0b0101, 0b1110, 0b1111]
    x = {n: torch.randn(3, 1, 8, 8, 8, generator=generator) for n in names}
    target = torch.randint(0, 4, (3, 8, 8, 8), generator=generator)
    target[0, :4, :4, :4] = 3  # one block of a single class
    batch = Batch(x, target, torch.tensor(present), torch.arange(3))
    prototypes = torch.randn(4, 4, 8, generator=generator)
    known = torch.ones(4, 4, dtype=torch.bool)
    known[0, 1] = False
    method = with_prototypes(PMRMethod(method_inputs([2, 2, 3, 2])), prototypes, known)
    logs = method.step(model, batch, 0).logs

    with torch.no_grad():
        bottleneck = model.encode(x, batch.present).bottleneck  # (3, 4, 8, 2, 2, 2)
    ce: dict[int, float] = {}
    scores: dict[int, float] = {}
    for m, name in enumerate(names):
        sample_ce, sample_scores = [], []
        for n in range(3):
            if not (present[n] >> m) & 1:
                continue
            per_voxel = []
            for i in range(2):
                for j in range(2):
                    for k in range(2):
                        block = target[n, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4, 4 * k : 4 * k + 4]
                        votes = [int((block == c).sum()) for c in range(4)]
                        y = votes.index(max(votes))
                        if not known[m, y]:
                            continue
                        f = [float(v) for v in bottleneck[n, m, :, i, j, k]]
                        classes = [c for c in range(4) if known[m, c]]
                        d = [euclid(f, [float(v) for v in prototypes[m, c]]) for c in classes]
                        per_voxel.append(softmax_true(d, classes.index(y)))
            if per_voxel:
                sample_ce.append(sum(-math.log(p) for p in per_voxel) / len(per_voxel))
                sample_scores.append(sum(per_voxel) / len(per_voxel))
        ce[m] = sum(sample_ce) / len(sample_ce)
        scores[m] = sum(sample_scores) / len(sample_scores)
    coef = hand_switch(scores, 1.0, 4)
    for m, name in enumerate(names):
        assert logs[f"score/{name}"] == pytest.approx(scores[m], rel=1e-5)
        assert logs[f"l_proto/{name}"] == pytest.approx(ce[m], rel=1e-5)
        assert logs[f"coef/{name}"] == coef[m]
    expected = logs["l_task"] + sum(c * ce[m] for m, c in enumerate(coef))
    assert logs["loss"] == pytest.approx(expected, rel=1e-5)


# --------------------------------------------------------------------------------------------
# the prototype pass
# --------------------------------------------------------------------------------------------


def digits_setup(share: float = 0.1, momentum: float = 0.0, batch_size: int = 32):
    train = apply_missing_rates(DIGITS.splits(None).train, (0.5, 0.3), seed=3).data
    torch.manual_seed(5)
    model = DIGITS.build_model().eval()
    inputs = MethodInputs(
        DIGITS.loss, DIGITS.utility, presence_counts(train.present, 2), len(train), seed=7,
        batch_size=batch_size,
    )  # fmt: skip
    config = PMRConfig(pmr_prototype_share=share, pmr_momentum=momentum)
    return train, model, PMRMethod(inputs, config)


def hand_prototypes(model, train, subset) -> tuple[dict, dict]:
    """Class means per modality over ``subset``, one sample at a time."""
    sums: dict[tuple[int, int], list[float]] = {}
    counts: dict[tuple[int, int], int] = {}
    for n in subset.tolist():
        sample = train.batch(torch.tensor([n]))
        with torch.no_grad():
            h = model.encode(sample.inputs, sample.present, sample.lengths)
        y = int(sample.target[0])
        for m in range(2):
            if (int(sample.present[0]) >> m) & 1:
                key = (m, y)
                row = [float(v) for v in h[0, m]]
                sums[key] = [a + b for a, b in zip(sums.get(key, [0.0] * len(row)), row)]
                counts[key] = counts.get(key, 0) + 1
    return {key: [v / counts[key] for v in total] for key, total in sums.items()}, counts


@pytest.mark.slow
def test_prototypes_equal_a_hand_loop_over_the_drawn_subset() -> None:
    train, model, method = digits_setup()
    with torch.no_grad():
        assert method.begin_epoch(model, train, 3) is None
    size = round(0.1 * len(train))
    drawn = torch.randperm(len(train), generator=stream(7, "pmr", 3))[:size]
    assert torch.equal(prototype_subset(7, 3, len(train), 0.1), drawn.sort().values)
    means, counts = hand_prototypes(model, train, drawn)
    assert method.epoch == 3 and method.prototypes.shape == (2, 10, model.dim)
    for m in range(2):
        for c in range(10):
            assert bool(method.known[m, c]) == ((m, c) in means)
            if (m, c) in means:
                torch.testing.assert_close(
                    method.prototypes[m, c], torch.tensor(means[(m, c)]), rtol=1e-5, atol=1e-6
                )
    assert sum(counts.values()) == sum(bin(int(p)).count("1") for p in train.present[drawn])
    # another epoch draws another subset
    assert not torch.equal(prototype_subset(7, 4, len(train), 0.1), drawn.sort().values)


def tiny_split(rows: list[tuple[int, int]], seed: int) -> MultimodalData:
    """Samples (class, presence mask) of two modalities with 3 random inputs each."""
    generator = torch.Generator().manual_seed(seed)
    inputs = {name: torch.randn(len(rows), 3, generator=generator) for name in ("a", "b")}
    presence = torch.tensor([[(mask >> m) & 1 for m in range(2)] for _, mask in rows])
    return MultimodalData.from_arrays(inputs, torch.tensor([y for y, _ in rows]), presence)


def test_momentum_and_classes_without_samples() -> None:
    model = small_model(modalities=("a", "b")).eval()
    inputs = method_inputs([4, 4], seed=0)
    method = PMRMethod(inputs, PMRConfig(pmr_momentum=0.25, pmr_prototype_share=1.0))
    # pass 1: a has classes 0, 1; b has 0, 1, 2
    first = tiny_split([(0, 0b11), (1, 0b01), (1, 0b11), (2, 0b10)], seed=1)
    # pass 2: a has 1, 2; b has 0, 2
    second = tiny_split([(1, 0b01), (2, 0b11), (2, 0b01), (0, 0b10)], seed=2)
    with torch.no_grad():
        method.begin_epoch(model, first, 0)
        p1 = method.prototypes.clone()
        assert method.known.tolist() == [[True, True, False], [True, True, True]]
        method.begin_epoch(model, second, 1)
    new, _ = hand_prototypes(model, second, torch.arange(4))
    old, _ = hand_prototypes(model, first, torch.arange(4))
    assert method.known.all()

    def close(value, expected) -> None:
        torch.testing.assert_close(value, torch.tensor(expected), rtol=1e-5, atol=1e-6)

    close(method.prototypes[0, 0], old[(0, 0)])  # no sample: kept
    close(method.prototypes[0, 1], [0.75 * n + 0.25 * o for n, o in zip(new[(0, 1)], old[(0, 1)])])
    close(method.prototypes[0, 2], new[(0, 2)])  # first prototype: no momentum
    close(method.prototypes[1, 0], [0.75 * n + 0.25 * o for n, o in zip(new[(1, 0)], old[(1, 0)])])
    assert torch.equal(method.prototypes[1, 1], p1[1, 1])
    close(method.prototypes[1, 2], [0.75 * n + 0.25 * o for n, o in zip(new[(1, 2)], old[(1, 2)])])
    # momentum 0 (the released scripts): plain replacement
    plain = PMRMethod(inputs, PMRConfig(pmr_prototype_share=1.0))
    with torch.no_grad():
        plain.begin_epoch(model, first, 0)
        plain.begin_epoch(model, second, 1)
    close(plain.prototypes[1, 2], new[(1, 2)])
    # past the modulation window the pass is skipped
    late = PMRMethod(inputs, PMRConfig(pmr_prototype_share=1.0, pmr_modulation_ends=0))
    with torch.no_grad():
        late.begin_epoch(model, first, 1)
    assert late.prototypes is None and late.epoch == 1


def test_the_weaker_modality_of_two_is_boosted_on_digits() -> None:
    train, model, method = digits_setup()
    with torch.no_grad():
        method.begin_epoch(model, train, 0)
    batch = train.batch(torch.arange(64))
    logs = method.step(model.train(), batch, 0).logs
    scores = [logs["score/image"], logs["score/audio"]]
    weak = scores.index(min(scores))
    assert [logs["coef/image"], logs["coef/audio"]] == [float(m == weak) for m in range(2)]


def test_state_round_trips() -> None:
    train, model, method = digits_setup()
    with torch.no_grad():
        method.begin_epoch(model, train, 2)
    again = PMRMethod(method.inputs, method.config)
    again.load_state_dict(method.state_dict())
    assert again.epoch == 2 and torch.equal(again.prototypes, method.prototypes)
    assert torch.equal(again.known, method.known)
    batch = train.batch(torch.arange(40))
    assert again.step(model, batch, 0).logs == method.step(model, batch, 0).logs
    three = PMRMethod(method_inputs([1, 1, 1]))
    with pytest.raises(ValueError, match="of 2 modalities cannot be loaded into 3"):
        three.load_state_dict(method.state_dict())


# --------------------------------------------------------------------------------------------
# resume and two ranks
# --------------------------------------------------------------------------------------------




def test_resume_equals_uninterrupted(tmp_path, one_thread) -> None:
    base = dict(method="pmr", epochs=2, batch_size=256, seed=4, progress=False, pmr_momentum=0.5)
    expected = run(config_for(out=str(tmp_path / "straight"), **base))
    resumed = config_for(out=str(tmp_path / "resumed"), **base)
    path = tmp_path / "resumed" / "pmr" / "checkpoint.pt"
    # 1,055 training samples / 256 = 5 steps an epoch; stop at step 0 of epoch 0 and of
    # epoch 1 (each after its pass), then inside epoch 1
    assert run(resumed, stop_at_step=0) == {}
    state = load_checkpoint(path)
    assert state["prepared_epoch"] == 0 and state["method"]["prototypes"] is not None
    assert run(resumed, resume=True, stop_at_step=5) == {}
    state = load_checkpoint(path)
    assert (state["epoch"], state["prepared_epoch"], state["method"]["epoch"]) == (1, 1, 1)
    assert run(resumed, resume=True, stop_at_step=7) == {}
    assert run(resumed, resume=True) == expected
    final_a = load_checkpoint(tmp_path / "straight" / "pmr" / "checkpoint.pt")
    final_b = load_checkpoint(path)
    assert torch.equal(final_a["method"]["prototypes"], final_b["method"]["prototypes"])
    for key in final_a["model"]:
        assert torch.equal(final_a["model"][key], final_b["model"][key]), key
    logged = (tmp_path / "resumed" / "pmr" / "log.csv").read_text().splitlines()
    assert logged == (tmp_path / "straight" / "pmr" / "log.csv").read_text().splitlines()


@pytest.mark.slow
def test_the_pass_under_two_ranks_equals_one_process(tmp_path) -> None:
    expected = ddp_workers.pmr_prototypes()
    ddp_workers.spawn(ddp_workers.pmr_epoch_worker, 2, str(tmp_path))
    ranks = [torch.load(tmp_path / f"pmr-rank{rank}.pt") for rank in (0, 1)]
    assert torch.equal(ranks[0]["prototypes"], ranks[1]["prototypes"])
    assert torch.equal(ranks[0]["known"], expected["known"])
    torch.testing.assert_close(ranks[0]["prototypes"], expected["prototypes"], rtol=1e-6, atol=0)


# --------------------------------------------------------------------------------------------
# options and end to end
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"pmr_alpha": -1.0}, "pmr_alpha must be a finite number >= 0, got -1.0"),
        ({"pmr_alpha": float("inf")}, "pmr_alpha must be a finite number >= 0"),
        ({"pmr_momentum": 1.0}, r"pmr_momentum must be a number in \[0, 1\), got 1.0"),
        ({"pmr_momentum": True}, r"pmr_momentum must be a number in \[0, 1\)"),
        ({"pmr_prototype_share": 0.0}, r"pmr_prototype_share must be a number in \(0, 1\]"),
        ({"pmr_prototype_share": 1.5}, r"pmr_prototype_share must be a number in \(0, 1\]"),
        ({"pmr_modulation_starts": -1}, "pmr_modulation_starts must be an int >= 0, got -1"),
        ({"pmr_modulation_starts": 1.5}, "pmr_modulation_starts must be an int >= 0"),
        (
            {"pmr_modulation_starts": 5, "pmr_modulation_ends": 4},
            r"pmr_modulation_ends must be an int >= pmr_modulation_starts \(5\), got 4",
        ),
    ],
)
def test_bad_options_are_named(options, message) -> None:
    with pytest.raises(ValueError, match=message) as error:
        PMRConfig(**options)
    assert "\n" not in str(error.value)


def test_options_and_registration(capsys) -> None:
    assert "pmr" in METHODS and not METHODS["pmr"].needs_upper_bounds(None)
    config = config_for(method="pmr", pmr_alpha=2.0, pmr_modulation_ends=70, momentum=0.5)
    assert config.method_options["pmr"] == PMRConfig(pmr_alpha=2.0, pmr_modulation_ends=70)
    assert config.hparams.momentum == 0.5  # the optimizer's, not PMR's
    inputs = method_inputs([1, 1, 1])
    assert get_method("pmr").build(inputs, config.options_for("pmr")).config.pmr_alpha == 2.0
    with pytest.raises(TypeError, match="pmr options must be a PMRConfig"):
        get_method("pmr").build(inputs, {"pmr_alpha": 1.0})
    parsed, _ = parse_config(["--method", "pmr", "--pmr-momentum", "0.2", "--pmr-alpha", "3"])
    assert parsed.method_options["pmr"] == PMRConfig(pmr_alpha=3.0, pmr_momentum=0.2)
    with pytest.raises(SystemExit) as exit_info:
        parse_config(["--method", "pmr", "--pmr-prototype-share", "2"])
    assert exit_info.value.code == 2
    assert "pmr_prototype_share must be a number in (0, 1]" in capsys.readouterr().err


def test_the_experiment_runner_takes_pmr() -> None:
    from mce.experiment.cli import parse_spec
    from mce.experiment.grid import cells_of
    from mce.tasks import get_task

    spec, _ = parse_spec(["--variants", "baseline,pmr", "--seeds", "0", "--set", "pmr_alpha=2"])
    cells = cells_of(spec, get_task("digits"))
    assert [cell.variant.name for cell in cells] == ["baseline", "pmr"]
    config = cells[1].config(spec, Path("out"))
    assert config.method == "pmr" and config.method_options["pmr"].pmr_alpha == 2.0


def _scores(out: Path) -> dict[str, float]:
    results = json.loads((out / "results.json").read_text())
    assert set(results["scores"]) == {"pmr"}
    assert all(0 <= value <= 100 for value in results["scores"]["pmr"].values())
    return results["scores"]["pmr"]


def _logged(out: Path) -> list[dict[str, str]]:
    with (out / "pmr" / "log.csv").open() as file:
        return list(csv.DictReader(file))


@pytest.mark.slow
def test_cli_trains_pmr_on_the_bundled_digits(tmp_path) -> None:
    argv = ["--method", "pmr", "--epochs", "1", "--batch-size", "512", "--no-progress"]
    assert main([*argv, "--pmr-alpha", "2", "--out", str(tmp_path)]) == 0
    assert set(_scores(tmp_path)) == {"image", "audio", "image+audio", "average"}
    rows = _logged(tmp_path)
    for row in rows:
        assert sorted(float(row[f"coef/{n}"]) for n in ("image", "audio")) == [0.0, 2.0]
    config = json.loads((tmp_path / "config.json").read_text())["config"]
    assert config["method_options"]["pmr"]["pmr_alpha"] == 2.0
    checkpoint = load_checkpoint(tmp_path / "pmr" / "checkpoint.pt")
    assert checkpoint["method"]["prototypes"].shape[:2] == (2, 10)  # 2 modalities, 10 digits


def test_cli_trains_pmr_on_avmnist(tmp_path) -> None:
    write_avmnist_fixture(tmp_path / "data")
    argv = ["--task", "avmnist", "--data-dir", str(tmp_path / "data"), "--method", "pmr"]
    argv += ["--epochs", "2", "--batch-size", "8", "--missing-rates", "0.2,0.5", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    assert set(_scores(tmp_path / "run")) == {"image", "audio", "image+audio", "average"}


@pytest.mark.slow
def test_cli_trains_pmr_on_iemocap(tmp_path) -> None:
    data = write_iemocap_fixture(tmp_path / "data")
    argv = ["--task", "iemocap", "--data-dir", str(data), "--method", "pmr"]
    argv += ["--missing-rates", "a", "--epochs", "1", "--batch-size", "16", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    assert len(_scores(tmp_path / "run")) == 8  # 7 combinations and the average
    columns = set(_logged(tmp_path / "run")[0])
    assert {f"coef/{n}" for n in ("acoustic", "lexical", "visual")} <= columns


@pytest.mark.slow
def test_cli_trains_pmr_on_brats(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    data = write_brats_fixture(tmp_path / "data", cases=6)
    argv = ["--task", "brats", "--data-dir", str(data), "--method", "pmr"]
    argv += ["--task-option", "crop=16", "--task-option", "base=4", "--task-option", "levels=3"]
    argv += ["--epochs", "1", "--missing-rates", "0.3,0.3,0.2,0", "--no-progress"]
    argv += ["--pmr-prototype-share", "0.5"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    scores = _scores(tmp_path / "run")
    assert len(scores) == 16 and "t1+t1ce+flair+t2" in scores
    prototypes = load_checkpoint(tmp_path / "run" / "pmr" / "checkpoint.pt")["method"]
    assert prototypes["prototypes"].shape == (4, 4, 16)  # 4 modalities, 4 classes, 16 channels
    assert any(not math.isnan(float(row["score/t2"])) for row in _logged(tmp_path / "run"))


def test_cli_trains_pmr_on_nuscenes(tmp_path) -> None:
    pytest.importorskip(
        "nuscenes", reason="the nuScenes task needs nuscenes-devkit (pip install '.[nuscenes]')"
    )
    data = write_nuscenes_fixture(tmp_path / "data", samples_per_scene=3, sweeps=1)
    options = {"image_height": 36, "image_width": 64, "cells": 16, "dim": 8, "radar_sweeps": 1}
    argv = ["--task", "nuscenes", "--data-dir", str(data), "--method", "pmr"]
    for name, value in options.items():
        argv += ["--task-option", f"{name}={value}"]
    argv += ["--epochs", "1", "--missing-rates", "0.2,0.3,0.4", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    scores = _scores(tmp_path / "run")
    assert len(scores) == 8 and "camera+lidar+radar" in scores
    state = load_checkpoint(tmp_path / "run" / "pmr" / "checkpoint.pt")["method"]
    assert state["prototypes"].shape == (3, 2, 8)  # 3 modalities, background/vehicle, dim 8
    rows = _logged(tmp_path / "run")
    assert any(float(row[f"coef/{n}"]) > 0 for row in rows for n in ("camera", "lidar", "radar"))
