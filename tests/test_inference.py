"""Inference on a trained run: mce.load, Predictor.predict, attribution, save_model, the CLI."""

from __future__ import annotations

import math
import shutil
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import read_csv
from torch import nn

import mce
from mce.data.dataset import MultimodalData
from mce.inference import Predictor, save_model
from mce.nn import ConcatFusion, LSTMEncoder, ReconstructionTransformer
from mce.nn.model import MultimodalModel
from mce.predict import main as predict_main
from mce.tasks import Task, get_task
from mce.train import main as train_main
from mce.training.config import HyperParameters
from mce.training.run import config_for

FAST = ["--epochs", "1", "--pretrain-steps", "2", "--batch-size", "256", "--no-progress"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A digits run of MCE and the baseline, trained for one epoch."""
    out = tmp_path_factory.mktemp("run") / "digits"
    cache = tmp_path_factory.mktemp("cache")
    code = train_main([*FAST, "--method", "compare", "--cache-dir", str(cache), "--out", str(out)])
    assert code in (0, None)
    return out


@pytest.fixture(scope="module")
def test_split() -> MultimodalData:
    return get_task("digits").splits(None).test


def reference_model(run: Path, method: str = "mce") -> MultimodalModel:
    """The run's model rebuilt from its checkpoint by hand."""
    model = get_task("digits").build_model()
    state = torch.load(run / method / "checkpoint.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    return model.eval()


def reference_outputs(model: MultimodalModel, inputs: dict, present: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        zeroed = {
            name: torch.where(
                ((present >> m) & 1).bool().view(-1, *([1] * (inputs[name].dim() - 1))),
                inputs[name],
                torch.zeros(()),
            )
            for m, name in enumerate(model.modalities)
        }
        return model(zeroed, present)


def brute_force_shapley(
    model: MultimodalModel, inputs: dict, present: torch.Tensor, lengths: dict | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 5 by hand: one model run per subset per sample; utility: the probability of the
    class predicted from all present modalities. Returns (phi [N, M] NaN where absent,
    v(A_n) [N])."""
    num_modalities = model.num_modalities
    phi = torch.full((present.shape[0], num_modalities), math.nan, dtype=torch.float64)
    full = torch.zeros(present.shape[0], dtype=torch.float64)
    with torch.no_grad():
        for n in range(present.shape[0]):
            sample = {name: value[n : n + 1] for name, value in inputs.items()}
            part = {name: value[n : n + 1] for name, value in (lengths or {}).items()}
            have = [m for m in range(num_modalities) if int(present[n]) >> m & 1]
            predicted = int(model(sample, present[n : n + 1], part).argmax(-1))

            def v(subset: tuple[int, ...]) -> float:
                if not subset:
                    return 0.0
                mask = torch.tensor([sum(1 << m for m in subset)])
                out = model(sample, mask, part)
                return float(torch.softmax(out, -1)[0, predicted])

            a = len(have)
            full[n] = v(tuple(have))
            for m in have:
                others = [o for o in have if o != m]
                total = 0.0
                for size in range(len(others) + 1):
                    weight = math.factorial(size) * math.factorial(a - size - 1) / math.factorial(a)
                    for subset in combinations(others, size):
                        total += weight * (v(tuple(sorted(subset + (m,)))) - v(subset))
                phi[n, m] = total
    return phi, full


def test_load_defaults_to_mce_and_matches_the_runs_model(run_dir: Path, test_split) -> None:
    predictor = mce.load(run_dir)
    assert predictor.method == "mce"
    assert predictor.modalities == ("image", "audio")
    inputs = {name: test_split.inputs[name][:300] for name in predictor.modalities}
    result = predictor.predict(inputs, batch_size=64)
    expected = reference_outputs(reference_model(run_dir), inputs, test_split.present[:300])
    torch.testing.assert_close(result.outputs, expected)
    assert torch.equal(result.prediction, expected.argmax(-1))
    torch.testing.assert_close(result.scores, torch.softmax(expected, -1))
    assert result.present.tolist() == [3] * 300 and result.shapley is None
    baseline = mce.load(run_dir, "baseline")
    assert baseline.method == "baseline"
    with pytest.raises(ValueError, match="trained: mce, baseline"):
        mce.load(run_dir, "redcore")


def test_a_missing_modality_omitted_nan_or_marked_absent(run_dir: Path, test_split) -> None:
    predictor = mce.load(run_dir)
    model = reference_model(run_dir)
    image, audio = test_split.inputs["image"][:50], test_split.inputs["audio"][:50]
    only_image = torch.full((50,), 1)
    expected = reference_outputs(model, {"image": image, "audio": audio}, only_image)
    omitted = predictor.predict({"image": image})
    torch.testing.assert_close(omitted.outputs, expected)
    assert omitted.present.tolist() == [1] * 50
    # NaN rows: audio missing in the even samples only
    nan_audio = audio.clone()
    nan_audio[::2] = math.nan
    mixed_present = torch.where(torch.arange(50) % 2 == 0, 1, 3)
    mixed = predictor.predict({"image": image, "audio": nan_audio.numpy()})
    assert mixed.present.tolist() == mixed_present.tolist()
    expected_mixed = reference_outputs(model, {"image": image, "audio": audio}, mixed_present)
    torch.testing.assert_close(mixed.outputs, expected_mixed)
    # explicit presence, as a matrix and as bitmasks: inputs of absent modalities ignored
    matrix = torch.stack([mixed_present & 1, mixed_present >> 1 & 1], dim=1).bool()
    for present in (matrix, matrix.numpy(), mixed_present):
        given = predictor.predict({"image": image, "audio": audio}, present)
        torch.testing.assert_close(given.outputs, expected_mixed)
    only_audio = torch.full((50,), 2)
    audio_only = predictor.predict({"image": image, "audio": audio}, only_audio)
    expected_audio = reference_outputs(model, {"image": image, "audio": audio}, only_audio)
    torch.testing.assert_close(audio_only.outputs, expected_audio)


@pytest.mark.slow
def test_attribution_equals_brute_force_on_digits(run_dir: Path) -> None:
    predictor = mce.load(run_dir)
    generator = torch.Generator().manual_seed(0)
    inputs = {
        "image": torch.randn(12, 1, 8, 8, generator=generator),
        "audio": torch.randn(12, 1, 13, 16, generator=generator),
    }
    present = torch.tensor([3, 3, 1, 2, 3, 1, 3, 2, 3, 3, 3, 1])
    result = predictor.predict(inputs, present, attribution=True, batch_size=5)
    phi, full = brute_force_shapley(predictor.model, inputs, present)
    assert torch.equal(torch.isnan(result.shapley), torch.isnan(phi))
    torch.testing.assert_close(result.shapley.double(), phi, atol=1e-5, rtol=1e-4, equal_nan=True)
    efficiency = torch.nansum(result.shapley.double(), dim=1)
    torch.testing.assert_close(efficiency, full, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(result.scores.max(-1).values.double(), full, atol=1e-5, rtol=1e-4)


MODALITIES3 = ("mean", "error", "worst")


def three_modality_model() -> MultimodalModel:
    fusion = ConcatFusion(3, 16)
    return MultimodalModel(
        MODALITIES3,
        encoders={name: nn.Sequential(nn.Linear(6, 16), nn.ReLU()) for name in MODALITIES3},
        heads={name: nn.Linear(16, 4) for name in MODALITIES3},
        fusion=fusion,
        decoder=nn.Sequential(nn.Linear(fusion.out_dim, 16), nn.ReLU(), nn.Linear(16, 4)),
        reconstruction=ReconstructionTransformer(3, 16, heads=2, ff_dim=32),
        dim=16,
    )


THREE = Task(
    name="three",
    modalities=MODALITIES3,
    load=lambda data_dir: None,
    build_model=three_modality_model,
    hparams=HyperParameters(epochs=1),
)


@pytest.mark.slow
@pytest.mark.parametrize("shapley", ["exact", "mc"])
def test_attribution_with_three_modalities(shapley: str, device: torch.device) -> None:
    torch.manual_seed(1)
    predictor = Predictor(three_modality_model().to(device), THREE, "mce")
    generator = torch.Generator().manual_seed(2)
    inputs = {name: torch.randn(20, 6, generator=generator) for name in MODALITIES3}
    present = torch.randint(1, 8, (20,), generator=generator)
    present[:7] = torch.arange(1, 8)
    result = predictor.predict(inputs, present, attribution=True, shapley=shapley, mc_k=50)
    phi, full = brute_force_shapley(predictor.model.cpu(), inputs, present)
    assert torch.equal(torch.isnan(result.shapley), torch.isnan(phi))
    efficiency = torch.nansum(result.shapley.double(), dim=1)
    torch.testing.assert_close(efficiency, full, atol=1e-5, rtol=1e-4)
    if shapley == "exact":
        torch.testing.assert_close(
            result.shapley.double(), phi, atol=1e-5, rtol=1e-4, equal_nan=True
        )
    plain = predictor.predict(inputs, present, device=device)
    torch.testing.assert_close(result.outputs, plain.outputs, atol=1e-5, rtol=1e-5)


def test_the_model_moves_only_when_a_device_is_given(monkeypatch) -> None:
    predictor = Predictor(three_modality_model(), THREE, "mce")
    inputs = {name: torch.randn(4, 6) for name in MODALITIES3}
    moves = []
    monkeypatch.setattr(predictor.model, "to", lambda *args, **kwargs: moves.append(args))
    predictor.predict(inputs)
    assert moves == []  # default: where its weights are, not moved again
    predictor.predict(inputs, device="cpu")
    assert moves == [(torch.device("cpu"),)]


def test_an_input_shape_is_checked_once_and_a_new_one_again(monkeypatch) -> None:
    import mce.inference.predictor as inference

    predictor = Predictor(three_modality_model(), THREE, "mce")
    inputs = {name: torch.randn(8, 6) for name in MODALITIES3}
    checked = []
    run_encoder = inference.run_encoder
    monkeypatch.setattr(
        inference,
        "run_encoder",
        lambda encoder, *args: checked.append(encoder) or run_encoder(encoder, *args),
    )
    first = predictor.predict(inputs)
    assert len(checked) == 3  # one check per modality
    torch.testing.assert_close(first.outputs, predictor.predict(inputs).outputs)
    assert len(checked) == 3  # the same shapes: not checked again
    with pytest.raises(ValueError, match=r"modality 'error': inputs of shape \[8, 5\] do not"):
        predictor.predict({**inputs, "error": torch.randn(8, 5)})


def sequence_model() -> MultimodalModel:
    """Three modalities as IEMOCAP's: two padded sequences (LSTM encoders) and a vector."""
    fusion = ConcatFusion(3, 16)
    return MultimodalModel(
        ("acoustic", "lexical", "visual"),
        encoders={
            "acoustic": LSTMEncoder(5, 16),
            "lexical": nn.Sequential(nn.Linear(6, 16), nn.ReLU()),
            "visual": LSTMEncoder(4, 16),
        },
        heads={name: nn.Linear(16, 4) for name in ("acoustic", "lexical", "visual")},
        fusion=fusion,
        decoder=nn.Sequential(nn.Linear(fusion.out_dim, 16), nn.ReLU(), nn.Linear(16, 4)),
        reconstruction=ReconstructionTransformer(3, 16, heads=2, ff_dim=32),
        dim=16,
    )


@pytest.mark.slow
def test_sequences_with_lengths_and_nan_padding() -> None:
    torch.manual_seed(3)
    task = Task(
        name="sequences",
        modalities=("acoustic", "lexical", "visual"),
        load=lambda data_dir: None,
        build_model=sequence_model,
    )
    predictor = Predictor(sequence_model(), task, "mce")
    generator = torch.Generator().manual_seed(4)
    n = 16
    acoustic = torch.randn(n, 9, 5, generator=generator)
    visual = torch.randn(n, 7, 4, generator=generator)
    lexical = torch.randn(n, 6, generator=generator)
    lengths = {
        "acoustic": torch.randint(1, 10, (n,), generator=generator),
        "visual": torch.randint(1, 8, (n,), generator=generator),
    }
    padded = {}
    for name, value in (("acoustic", acoustic), ("visual", visual)):
        valid = torch.arange(value.shape[1]) < lengths[name][:, None]
        value = torch.where(valid[..., None], value, torch.zeros(()))
        padded[name] = value
    lexical_nan = lexical.clone()
    lexical_nan[::3] = math.nan  # lexical missing in every third sample
    inputs = {
        name: torch.where(padded[name] == 0, torch.tensor(math.nan), padded[name])
        for name in padded
    }  # NaN past each length: ignored
    result = predictor.predict(
        {**inputs, "lexical": lexical_nan}, lengths=lengths, attribution=True, batch_size=5
    )
    present = torch.where(torch.arange(n) % 3 == 0, 0b101, 0b111)
    assert result.present.tolist() == present.tolist()
    clean = {**padded, "lexical": torch.where(present[:, None] & 2 != 0, lexical, 0.0)}
    with torch.no_grad():
        expected = predictor.model(clean, present, lengths)
    torch.testing.assert_close(result.outputs, expected, atol=1e-5, rtol=1e-5)
    phi, full = brute_force_shapley(predictor.model, clean, present, lengths)
    torch.testing.assert_close(result.shapley.double(), phi, atol=1e-5, rtol=1e-4, equal_nan=True)
    torch.testing.assert_close(torch.nansum(result.shapley.double(), 1), full, atol=1e-5, rtol=1e-4)


def test_save_model_then_load_from_safetensors(run_dir: Path, tmp_path: Path, test_split) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    from_checkpoint = mce.load(copy)
    config = config_for("digits", method="compare", out=str(copy))
    save_model(copy, from_checkpoint.model, config, "mce")
    assert (copy / "mce" / "model.safetensors").is_file()
    (copy / "mce" / "checkpoint.pt").unlink()  # the weights now come from safetensors alone
    from_weights = mce.load(copy)
    inputs = {name: test_split.inputs[name][:100] for name in from_weights.modalities}
    a = from_checkpoint.predict(inputs, attribution=True)
    b = from_weights.predict(inputs, attribution=True)
    assert torch.equal(a.outputs, b.outputs) and torch.equal(a.shapley, b.shapley)
    # a folder holding nothing else: save_model writes the config too
    alone = tmp_path / "alone"
    save_model(alone, from_checkpoint.model, config, "mce")
    assert (alone / "config.json").is_file()
    assert torch.equal(mce.load(alone).predict(inputs).outputs, a.outputs)


@pytest.mark.slow
def test_a_redcore_run_loads_its_adapted_model(tmp_path: Path, test_split) -> None:
    out = tmp_path / "redcore"
    assert train_main([*FAST, "--method", "redcore", "--out", str(out)]) in (0, None)
    predictor = mce.load(out)
    assert predictor.method == "redcore"
    inputs = {name: test_split.inputs[name][:40] for name in predictor.modalities}
    result = predictor.predict(inputs, attribution=True)
    assert result.outputs.shape == (40, 10)
    torch.testing.assert_close(
        torch.nansum(result.shapley, 1), result.scores.max(-1).values, atol=1e-5, rtol=1e-4
    )


def test_bad_inputs_are_errors_naming_the_problem(run_dir: Path, test_split) -> None:
    predictor = mce.load(run_dir)
    image, audio = test_split.inputs["image"][:8], test_split.inputs["audio"][:8]
    present = torch.tensor([3, 3, 3, 0, 3, 3, 3, 3])
    with pytest.raises(ValueError, match="sample 3 has no modality"):
        predictor.predict({"image": image, "audio": audio}, present)
    nan_both = {"image": image.clone(), "audio": audio.clone()}
    nan_both["image"][5], nan_both["audio"][5] = math.nan, math.nan
    with pytest.raises(ValueError, match="sample 5 has no modality"):
        predictor.predict(nan_both)
    with pytest.raises(ValueError, match="modality 'audio'"):
        predictor.predict({"image": image, "audio": torch.randn(8, 1, 7, 3)})
    with pytest.raises(ValueError, match="modality 'image'"):
        predictor.predict({"image": torch.randn(8, 5)})
    with pytest.raises(ValueError, match="different numbers of samples"):
        predictor.predict({"image": image, "audio": audio[:4]})
    with pytest.raises(ValueError, match="unknown modality 'video'"):
        predictor.predict({"image": image, "video": audio})
    with pytest.raises(ValueError, match="marked present in modality 'audio'"):
        predictor.predict({"image": image}, torch.full((8,), 3))
    partial = audio.clone()
    partial[2, 0, 0] = math.nan
    with pytest.raises(ValueError, match="modality 'audio' of sample 2 holds NaN"):
        predictor.predict({"image": image, "audio": partial})
    with pytest.raises(ValueError, match="holds no run"):
        mce.load(run_dir / "nowhere")


def test_cli_writes_one_row_per_sample(run_dir: Path, tmp_path: Path, test_split) -> None:
    out = tmp_path / "preds.csv"
    assert predict_main([str(run_dir), "--out", str(out)]) == 0
    rows = read_csv(out)
    assert len(rows) == len(test_split)
    scores = [f"score_{c}" for c in range(10)]
    assert list(rows[0]) == ["id", "target", "prediction", *scores, "present"]
    predictor = mce.load(run_dir)
    expected = predictor.predict(dict(test_split.inputs)).prediction
    assert [int(row["prediction"]) for row in rows] == expected.tolist()
    assert {row["present"] for row in rows} == {"image+audio"}
    # presence from a CSV (samples named by their index), with attribution
    presence = tmp_path / "presence.csv"
    chosen = np.random.default_rng(0).integers(1, 4, len(test_split))
    lines = ["id,audio,image"] + [f"{n},{c >> 1 & 1},{c & 1}" for n, c in enumerate(chosen)]
    presence.write_text("\n".join(lines) + "\n")
    out2 = tmp_path / "attributed.csv"
    code = predict_main(
        [
            str(run_dir),
            *("--out", str(out2), "--presence-csv", str(presence)),
            *("--attribution", "--method", "baseline"),
        ]
    )
    assert code == 0
    rows = read_csv(out2)
    assert len(rows) == len(test_split)
    assert list(rows[0])[-3:] == ["present", "shapley_image", "shapley_audio"]
    names = {1: "image", 2: "audio", 3: "image+audio"}
    assert [row["present"] for row in rows] == [names[int(c)] for c in chosen]
    for row, c in zip(rows, chosen):
        assert (row["shapley_image"] == "") == (not c & 1)
        assert (row["shapley_audio"] == "") == (not c & 2)
        total = sum(float(row[k]) for k in ("shapley_image", "shapley_audio") if row[k])
        assert total == pytest.approx(float(row[f"score_{row['prediction']}"]), abs=1e-4)


def test_cli_errors_are_one_line(run_dir: Path, tmp_path: Path, capsys) -> None:
    code = predict_main([str(tmp_path / "nothing"), "--out", str(tmp_path / "p.csv")])
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    bad = tmp_path / "presence.csv"
    bad.write_text("id,image\n0,1\n")
    out = str(tmp_path / "p.csv")
    code = predict_main([str(run_dir), "--out", out, "--presence-csv", str(bad)])
    assert code == 1
    assert capsys.readouterr().err.startswith("error: presence CSV")
    with pytest.raises(SystemExit) as exit_info:
        predict_main([str(run_dir)])  # --out missing
    assert exit_info.value.code == 2
