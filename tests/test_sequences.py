"""Variable-length sequence modalities: lengths in the data, its splits and batches; encoders
that ignore padding; the model, the MCE step, evaluation and pretraining on padded batches."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mce.data.dataset import Batch, MultimodalData, standardize
from mce.evaluation.combinations import evaluate_combinations
from mce.methods import MCEConfig, MCEMethod, MethodInputs
from mce.nn import ConcatFusion, LSTMEncoder, ReconstructionTransformer, TextCNN
from mce.nn.model import MultimodalModel
from mce.science.lce import presence_counts
from mce.tasks.base import Task
from mce.training.config import HyperParameters
from mce.training.pretrain import unimodal_model, upper_bound_table

_NAMES = ("acoustic", "visual", "lexical")
_FEATURES = (5, 4, 6)
_MAX_FRAMES = (7, 6, 9)
_CLASSES, _DIM = 3, 8
# every modality absent from some samples; pairs and singletons
_PRESENT = (0b111, 0b011, 0b101, 0b001, 0b110, 0b100, 0b010, 0b111, 0b011, 0b101, 0b001)


def _model(seed: int) -> MultimodalModel:
    torch.manual_seed(seed)
    encoders = {
        "acoustic": LSTMEncoder(_FEATURES[0], _DIM),
        "visual": LSTMEncoder(_FEATURES[1], _DIM),
        "lexical": TextCNN(_FEATURES[2], _DIM, channels=4),
    }
    return MultimodalModel(
        _NAMES,
        encoders,
        {n: nn.Linear(_DIM, _CLASSES) for n in _NAMES},
        ConcatFusion(3, _DIM),
        nn.Linear(3 * _DIM, _CLASSES),
        ReconstructionTransformer(3, _DIM, heads=2, ff_dim=16, dropout=0.0),
        _DIM,
    )


def _data(seed: int, present: tuple[int, ...] = _PRESENT) -> MultimodalData:
    """Padded sequences with lengths 1..T_max (the lexical ones include lengths below the
    widest TextCNN kernel); zeros past each length and for absent samples."""
    generator = torch.Generator().manual_seed(seed)
    num = len(present)
    presence = torch.tensor([[(p >> m) & 1 for m in range(3)] for p in present])
    inputs, lengths = {}, {}
    for name, features, frames in zip(_NAMES, _FEATURES, _MAX_FRAMES):
        inputs[name] = torch.randn(num, frames, features, generator=generator)
        lengths[name] = torch.randint(1, frames + 1, (num,), generator=generator)
        lengths[name][:3] = torch.tensor([1, 2, frames])
    target = torch.randint(0, _CLASSES, (num,), generator=generator)
    return MultimodalData.from_arrays(inputs, target, presence=presence, lengths=lengths)


def _with_garbage(data: MultimodalData, seed: int) -> MultimodalData:
    """The same data with random values (large ones) in every frame past a length."""
    generator = torch.Generator().manual_seed(seed + 7)
    inputs = dict(data.inputs)
    for name, lengths in data.lengths.items():
        x = inputs[name]
        beyond = torch.arange(x.shape[1]) >= lengths[:, None]
        noise = 100 * torch.randn(x.shape, generator=generator)
        inputs[name] = torch.where(beyond[..., None], noise, x)
    return dataclasses.replace(data, inputs=inputs)


# --- lengths in MultimodalData ----------------------------------------------------------------


def _raw(lengths: Tensor, present: Tensor | None = None) -> MultimodalData:
    x = torch.zeros(3, 4, 2)
    present = torch.tensor([1, 1, 2]) if present is None else present
    return MultimodalData(
        ("seq", "flat"),
        {"seq": x, "flat": torch.zeros(3, 5)},
        torch.zeros(3, dtype=torch.int64),
        present,
        {"seq": lengths},
    )


def test_valid_lengths_are_kept_and_absent_samples_may_have_length_0():
    data = _raw(torch.tensor([1, 4, 0]))
    assert data.lengths["seq"].tolist() == [1, 4, 0]
    assert _raw(torch.tensor([2, 3, 4])).lengths["seq"].tolist() == [2, 3, 4]


@pytest.mark.parametrize(
    ("lengths", "message"),
    [
        (torch.tensor([1, 2]), r"lengths of modality 'seq' must have shape \[3\], got \[2\]"),
        (torch.tensor([[1, 2, 3]]), r"lengths of modality 'seq' must have shape \[3\]"),
        (torch.tensor([1, 2, 3], dtype=torch.int32), "'seq' must be an int64 tensor"),
        (torch.tensor([1.0, 2.0, 3.0]), "'seq' must be an int64 tensor"),
        (torch.tensor([0, 2, 3]), r"'seq': sample 0 \(present\) has length 0, outside \[1, 4\]"),
        (torch.tensor([1, 5, 3]), r"'seq': sample 1 \(present\) has length 5, outside \[1, 4\]"),
        (torch.tensor([1, 2, -1]), r"'seq': sample 2 \(absent\) has length -1, outside \[0, 4\]"),
    ],
)
def test_bad_lengths_are_refused_naming_the_modality(lengths, message):
    with pytest.raises(ValueError, match=message):
        _raw(lengths)


def test_lengths_of_an_unknown_or_unpadded_modality_are_refused():
    base = _raw(torch.tensor([1, 2, 0]))
    with pytest.raises(ValueError, match="lengths given for 'other'"):
        dataclasses.replace(base, lengths={"other": torch.tensor([1, 1, 1])})
    with pytest.raises(ValueError, match=r"modality 'flat' has shape \[3\]; a sequence"):
        MultimodalData(
            ("seq", "flat"),
            {"seq": base.inputs["seq"], "flat": torch.zeros(3)},
            base.target,
            base.present,
            {"flat": torch.tensor([1, 1, 1])},
        )


def test_from_arrays_takes_lengths_zeroes_padding_and_absent_lengths():
    x = np.ones((3, 4, 2))
    x[0, 2:] = np.nan  # NaN past the length: padding, allowed
    x[2] = np.nan  # absent
    data = MultimodalData.from_arrays(
        {"seq": x, "flat": np.zeros((3, 5))},
        [0, 1, 2],
        presence=[[1, 1], [1, 0], [0, 1]],
        lengths={"seq": np.array([2, 4, 3], dtype=np.int32)},
    )
    assert data.lengths["seq"].dtype == torch.int64
    assert data.lengths["seq"].tolist() == [2, 4, 0]
    assert data.inputs["seq"][0].sum(dim=1).tolist() == [2.0, 2.0, 0.0, 0.0]
    assert data.inputs["seq"][2].abs().sum() == 0
    assert data.lengths == {"seq": data.lengths["seq"]}  # nothing for the flat modality


def test_from_arrays_refuses_nan_in_valid_frames_and_bad_lengths():
    x = np.ones((2, 4, 2))
    x[0, 1, 0] = np.nan
    with pytest.raises(ValueError, match="modality 'seq' of sample 0 holds NaN"):
        MultimodalData.from_arrays({"seq": x}, [0, 1], lengths={"seq": [2, 4]})
    with pytest.raises(ValueError, match="lengths of modality 'seq' must be integers"):
        MultimodalData.from_arrays({"seq": np.ones((2, 4, 2))}, [0, 1], lengths={"seq": [2.0, 4]})
    with pytest.raises(ValueError, match="lengths given for 'text'"):
        MultimodalData.from_arrays({"seq": np.ones((2, 4, 2))}, [0, 1], lengths={"text": [2, 4]})
    with pytest.raises(ValueError, match=r"'seq': sample 1 \(present\) has length 5"):
        MultimodalData.from_arrays({"seq": np.ones((2, 4, 2))}, [0, 1], lengths={"seq": [2, 5]})


def test_subset_split_and_with_presence_carry_lengths(seed):
    data = _data(seed)
    index = torch.tensor([4, 0, 9])
    part = data.subset(index)
    for name in _NAMES:
        assert torch.equal(part.lengths[name], data.lengths[name][index])
    first, second = data.random_split(0.5, seed)
    for name in _NAMES:
        joined = torch.cat([first.lengths[name], second.lengths[name]]).sort().values
        assert torch.equal(joined, data.lengths[name].sort().values)
    fewer = data.present & 0b101  # drop the visual modality everywhere, keep the others
    masked = data.with_presence(torch.where(fewer == 0, data.present, fewer))
    dropped = ((masked.present >> 1) & 1) == 0
    assert masked.lengths["visual"][dropped].eq(0).all()
    kept = ~dropped
    assert torch.equal(masked.lengths["visual"][kept], data.lengths["visual"][kept])
    assert torch.equal(masked.lengths["acoustic"], data.lengths["acoustic"])
    standardized, _ = standardize(data, data, "acoustic", dims=(0, 1))
    assert standardized.lengths.keys() == data.lengths.keys()


def test_batch_is_cut_to_its_longest_length_and_carries_lengths(seed):
    data = _data(seed)
    index = torch.tensor([3, 5, 6])
    batch = data.batch(index)
    for name in _NAMES:
        lengths = data.lengths[name][index]
        assert torch.equal(batch.lengths[name], lengths)
        longest = max(int(lengths.max()), 1)
        assert batch.inputs[name].shape[1] == longest
        assert torch.equal(batch.inputs[name], data.inputs[name][index, :longest])
    moved = batch.to("cpu")
    assert moved.lengths.keys() == batch.lengths.keys()
    total = sum(b.target.numel() for b in data.batches(4))
    assert total == len(data)
    assert all(b.lengths.keys() == set(_NAMES) for b in data.batches(4))
    assert Batch(batch.inputs, batch.target, batch.present, batch.index).lengths == {}


def test_standardize_uses_valid_frames_only(seed):
    data = _data(seed)
    garbage = _with_garbage(data, seed)
    train, test = standardize(garbage, garbage, "visual", dims=(0, 1))
    lengths = data.lengths["visual"]
    frames = torch.cat([data.inputs["visual"][n, : lengths[n]] for n in range(len(data))])
    mean, std = frames.mean(dim=0), frames.std(dim=0) + 1e-6
    for n in range(len(data)):
        valid = train.inputs["visual"][n, : lengths[n]]
        torch.testing.assert_close(valid, (data.inputs["visual"][n, : lengths[n]] - mean) / std)
        assert train.inputs["visual"][n, lengths[n] :].abs().sum() == 0
    torch.testing.assert_close(test.inputs["visual"], train.inputs["visual"])


# --- encoders ---------------------------------------------------------------------------------


def _encoder(kind: str) -> nn.Module:
    return LSTMEncoder(5, 8) if kind == "lstm" else TextCNN(5, 8, channels=6)


@pytest.mark.parametrize("kind", ["lstm", "textcnn"])
def test_a_padded_batch_equals_each_sequence_alone(seed, kind):
    torch.manual_seed(seed)
    encoder = _encoder(kind)
    lengths = torch.tensor([1, 2, 3, 4, 5, 9, 7, 9])
    x = torch.randn(len(lengths), 9, 5)
    batched = encoder(x, lengths)
    alone = torch.cat([encoder(x[n : n + 1, : lengths[n]]) for n in range(len(lengths))])
    torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-5)
    # full-length sequences: the same as without lengths
    torch.testing.assert_close(encoder(x, torch.full((8,), 9)), encoder(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["lstm", "textcnn"])
def test_frames_past_the_length_never_change_the_output(seed, kind):
    torch.manual_seed(seed)
    encoder = _encoder(kind)
    lengths = torch.tensor([1, 3, 4, 6, 2])
    x = torch.randn(5, 6, 5, requires_grad=True)
    beyond = torch.arange(6) >= lengths[:, None]
    noise = 1e3 * torch.randn(5, 6, 5)
    noisy = torch.where(beyond[..., None], noise, x)
    longer = torch.cat([noisy, 1e3 * torch.randn(5, 4, 5)], dim=1)  # more padding too
    reference = encoder(x, lengths)
    torch.testing.assert_close(encoder(noisy, lengths), reference, rtol=0, atol=0)
    torch.testing.assert_close(encoder(longer, lengths), reference, rtol=1e-6, atol=1e-6)
    (grad,) = torch.autograd.grad(encoder(x, lengths).sum(), x)
    assert grad[beyond].abs().sum() == 0


@pytest.mark.parametrize("kind", ["lstm", "textcnn"])
def test_encoders_refuse_lengths_outside_the_padded_range(kind):
    encoder = _encoder(kind)
    x = torch.randn(2, 4, 5)
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 4\]"):
        encoder(x, torch.tensor([0, 2]))
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 4\]"):
        encoder(x, torch.tensor([5, 2]))
    with pytest.raises(ValueError, match=r"lengths must have shape \[2\]"):
        encoder(x, torch.tensor([1, 2, 3]))


def test_textcnn_takes_sequences_shorter_than_its_widest_kernel():
    encoder = TextCNN(3, 4, channels=2)
    x = torch.randn(1, 2, 3)
    padded = torch.cat([x, torch.zeros(1, 3, 3)], dim=1)  # zero-padded to the widest kernel
    # a 2-token sequence is its window of width 3 (zero-padded), 4 and 5: position 0 only
    convs = [F.relu(conv(padded.transpose(1, 2)))[:, :, 0] for conv in encoder.convs]
    expected = F.relu(encoder.proj(torch.cat(convs, dim=1)))
    torch.testing.assert_close(encoder(x), expected)
    torch.testing.assert_close(encoder(padded, torch.tensor([2])), expected)


# --- the model, the MCE step, evaluation and pretraining ----------------------------------------


class _PerSample(nn.Module):
    """An encoder run on one sequence at a time, cut to its own length (no padding at all)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        return torch.cat([self.encoder(x[n : n + 1, : lengths[n]]) for n in range(x.shape[0])])


def _looped(model: MultimodalModel) -> MultimodalModel:
    """The same modules (shared parameters) with per-sample encoders."""
    return MultimodalModel(
        model.modalities,
        {name: _PerSample(model.encoders[name]) for name in model.modalities},
        dict(model.heads),
        model.fusion,
        model.decoder,
        model.reconstruction,
        model.dim,
    )


def test_encode_and_forward_equal_a_per_sample_loop(seed):
    model, data = _model(seed), _data(seed)
    batch = _with_garbage(data, seed).batch(torch.arange(len(data)))
    h = model.encode(batch.inputs, batch.present, batch.lengths)
    expected = _looped(model).encode(batch.inputs, batch.present, batch.lengths)
    torch.testing.assert_close(h, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        model(batch.inputs, batch.present, batch.lengths),
        _looped(model)(batch.inputs, batch.present, batch.lengths),
        rtol=1e-5,
        atol=1e-5,
    )


def _p_target(outputs: Tensor, target: Tensor) -> Tensor:
    return outputs.softmax(-1).gather(1, target[:, None]).squeeze(1)


def _ce(outputs: Tensor, target: Tensor) -> Tensor:
    return F.cross_entropy(outputs, target, reduction="none")


def test_mce_step_on_a_padded_batch_equals_a_per_sample_loop(seed):
    """Loss, every logged term and every gradient of the batched step on a padded batch (garbage
    past the lengths) equal those of the step whose encoders see one unpadded sequence at a
    time; tests/test_mce_method.py checks the rest of the step against a hand-written loop."""
    model, data = _model(seed), _data(seed)
    batch = _with_garbage(data, seed).batch(torch.arange(len(data)))
    generator = torch.Generator().manual_seed(seed)
    upper = torch.rand(len(data), 3, generator=generator)
    inputs = MethodInputs(
        _ce, _p_target, presence_counts(data.present, 3), len(data), seed=seed, upper=upper
    )
    config = MCEConfig(lambda_single=0.7, lambda_sub=1.3, lambda_aux=2.0)
    params = list(model.parameters())
    got = MCEMethod(inputs, config).step(model, batch, step=0)
    want = MCEMethod(inputs, config).step(_looped(model), batch, step=0)
    assert got.logs.keys() == want.logs.keys()
    for key in got.logs:
        assert got.logs[key] == pytest.approx(want.logs[key], rel=1e-5, abs=1e-5), key
    got_grads = torch.autograd.grad(got.loss, params, allow_unused=True)
    want_grads = torch.autograd.grad(want.loss, params, allow_unused=True)
    for g, w, p in zip(got_grads, want_grads, params):
        g = torch.zeros_like(p) if g is None else g
        w = torch.zeros_like(p) if w is None else w
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


def test_evaluation_ignores_padding_and_the_batch_size(seed):
    model, data = _model(seed), _data(seed)

    def scores(split: MultimodalData, batch_size: int) -> dict[str, float]:
        result = evaluate_combinations(model, _p_target, split, batch_size, progress=False)
        return getattr(result, "scores", result)  # an Evaluation (or a plain dict)

    clean, noisy = scores(data, 64), scores(_with_garbage(data, seed), 3)
    assert clean.keys() == noisy.keys()
    for key in clean:
        assert noisy[key] == pytest.approx(clean[key], abs=1e-5), key


def test_pretraining_a_sequence_modality_ignores_padding(seed, tmp_path):
    data = _data(seed, _PRESENT * 3)
    task = Task("sequences", _NAMES, load=lambda *_: (data, data), build_model=lambda: _model(0))
    model = unimodal_model(task, "lexical")
    has = ((data.present >> 2) & 1).bool()
    x, lengths = data.inputs["lexical"][has], data.lengths["lexical"][has]
    assert model(x, lengths).shape == (int(has.sum()), _CLASSES)
    hparams = HyperParameters(
        batch_size=5, pretrain_steps=2, pretrain_eval_every=1, pretrain_patience=1, lr=1e-2
    )

    def table(split: MultimodalData) -> Tensor:
        return upper_bound_table(
            task,
            split,
            hparams=hparams,
            seed=seed,
            setting="none",
            cache_dir=tmp_path,
            progress=False,
            no_cache=True,
        ).table

    torch.testing.assert_close(table(_with_garbage(data, seed)), table(data), rtol=0, atol=1e-6)


def test_from_arrays_names_badly_shaped_lengths():

    frames = np.zeros((3, 4, 2))
    frames[:, 3:] = np.nan  # padding may hold NaN, but only once the lengths are understood
    with pytest.raises(ValueError, match=r"lengths of modality 's' must have shape \[3\]"):
        MultimodalData.from_arrays({"s": frames}, [0, 1, 2], lengths={"s": [[3], [3], [3]]})
