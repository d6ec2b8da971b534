"""Prediction vs prediction with exact modality attribution (Predictor.predict), CPU.

Run: ``pytest bench/bench_attribution.py --benchmark-only -s``. 128 samples, every modality
present, two 3-modality models: ``own_data``, shaped as ``examples/own_data.py`` (MLP encoders
on 10 features, the reconstruction Transformer, concatenation, a decoder), and ``iemocap``, the
IEMOCAP task's network (LSTM and TextCNN encoders over utterance sequences). Goal: exact
attribution at most 1.5x the time of prediction. Attribution runs the encoders once and the
reconstruction, fusion and decoder over 7 rows per sample instead of 1, so the ratio lies
between 1x (encoders dominate) and about 7x (the rows dominate).

``python bench/bench_attribution.py [rounds]`` measures the same ratio with the two calls
alternating (the reference on a noisy machine), for both models.
"""

from __future__ import annotations

import statistics
import sys
import time

import pytest
import torch
from torch import nn

from mce import MultimodalModel, Task
from mce.inference import Predictor
from mce.nn import ConcatFusion, ReconstructionTransformer

MODALITIES = ("mean", "error", "worst")
DIM = 32
FEATURES = 10
SAMPLES = 128
TIMES: dict[tuple[str, bool], float] = {}


def build_model() -> MultimodalModel:
    fusion = ConcatFusion(len(MODALITIES), DIM)
    return MultimodalModel(
        MODALITIES,
        encoders={
            name: nn.Sequential(nn.Linear(FEATURES, DIM), nn.ReLU()) for name in MODALITIES
        },
        heads={name: nn.Linear(DIM, 2) for name in MODALITIES},
        fusion=fusion,
        decoder=nn.Sequential(nn.Linear(fusion.out_dim, DIM), nn.ReLU(), nn.Linear(DIM, 2)),
        reconstruction=ReconstructionTransformer(len(MODALITIES), DIM, heads=4, ff_dim=64),
        dim=DIM,
    )


TASK = Task(name="bench", modalities=MODALITIES, load=lambda d: None, build_model=build_model)


def setup(model: str) -> tuple[Predictor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The predictor, inputs and sequence lengths of one model."""
    torch.manual_seed(0)
    if model == "own_data":
        predictor = Predictor(build_model(), TASK, "mce")
        return predictor, {name: torch.randn(SAMPLES, FEATURES) for name in MODALITIES}, {}
    from mce.tasks.iemocap import TASK as IEMOCAP
    from mce.tasks.iemocap import WIDTHS

    frames = {"acoustic": 60, "lexical": 22, "visual": 50}
    inputs = {name: torch.randn(SAMPLES, frames[name], WIDTHS[name]) for name in WIDTHS}
    lengths = {name: torch.randint(1, frames[name] + 1, (SAMPLES,)) for name in WIDTHS}
    return Predictor(IEMOCAP.build_model(), IEMOCAP, "mce"), inputs, lengths


@pytest.mark.parametrize("model", ["own_data", "iemocap"])
@pytest.mark.parametrize("attribution", [False, True], ids=["predict", "exact-attribution"])
def test_predict(benchmark, model: str, attribution: bool) -> None:
    predictor, inputs, lengths = setup(model)
    benchmark.group = f"{model}: M=3, N={SAMPLES}, CPU"

    def call():
        return predictor.predict(
            inputs, lengths=lengths, batch_size=SAMPLES, attribution=attribution
        )

    benchmark.pedantic(call, rounds=30 if model == "iemocap" else 200, warmup_rounds=3)
    TIMES[(model, attribution)] = benchmark.stats.stats.median
    if (model, not attribution) in TIMES:
        plain, attributed = TIMES[(model, False)], TIMES[(model, True)]
        print(
            f"\n{model}: median predict {1e3 * plain:.3f} ms, exact attribution "
            f"{1e3 * attributed:.3f} ms, ratio {attributed / plain:.2f}x (goal <= 1.5x)"
        )


def interleaved(rounds: int) -> None:
    """Median times of prediction and exact attribution, alternating call by call."""
    for model in ("own_data", "iemocap"):
        predictor, inputs, lengths = setup(model)
        times: dict[bool, list[float]] = {False: [], True: []}
        for attribution in (False, True, False, True):  # warm-up
            predictor.predict(inputs, lengths=lengths, batch_size=SAMPLES, attribution=attribution)
        for _ in range(rounds if model == "own_data" else max(rounds // 10, 5)):
            for attribution in (False, True):
                start = time.perf_counter()
                predictor.predict(
                    inputs, lengths=lengths, batch_size=SAMPLES, attribution=attribution
                )
                times[attribution].append(time.perf_counter() - start)
        plain, attributed = (statistics.median(times[flag]) for flag in (False, True))
        print(
            f"{model}: {len(times[False])} rounds, {torch.get_num_threads()} thread(s): median "
            f"predict {1e3 * plain:.3f} ms, exact attribution {1e3 * attributed:.3f} ms, ratio "
            f"{attributed / plain:.2f}x (goal <= 1.5x)"
        )


if __name__ == "__main__":
    interleaved(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
