"""Mixed precision on the CPU: training-step time and test accuracy of bf16 (and fp16) against
float32, as ``--precision`` runs them (autocast around the forward pass and loss).

Step time, interleaved (the precisions alternate, one torch thread): the iemocap task's model
on the IEMOCAP-shaped batch of ``bench_step.py`` (LSTMs, a TextCNN, the reconstruction
Transformer) and the bundled digits model (two LeNet-5) on a batch of 128, each with the
baseline and MCE (exact Shapley values); fp16 on the digits model only (it is refused on the
CPU, and this is why). Accuracy: whole digits runs (``mce.train``'s run) per precision, method
and seed: their test average over the three combinations and the time of their epochs (the
upper-bound models, float32 and cached, are trained once per seed).

Run: ``python bench/precision.py [rounds] [--epochs E] [--seeds 0,1] [--steps-only]`` (CPU).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import bench_step  # beside this script: python puts the script's folder first on the path
import torch

from mce.experiment.costs import training_step
from mce.methods import MethodInputs, get_method
from mce.science.lce import presence_counts
from mce.tasks import get_task
from mce.training.run import config_for, run

CPU = torch.device("cpu")


def _digits_step_parts(method: str):
    task = get_task("digits")
    train = task.splits(None).train
    batch = next(iter(train.batches(128, torch.arange(len(train)))))
    upper = torch.rand(len(train), 2, generator=torch.Generator().manual_seed(0))
    inputs = MethodInputs(
        loss=task.loss,
        utility=task.utility,
        counts=presence_counts(train.present, 2),
        dataset_size=len(train),
        seed=0,
        upper=upper,
    )
    training = get_method(method).build(inputs, task.options_for_method(method))
    return task.build_model, batch, training


def _iemocap_step_parts(method: str):
    batch, upper = bench_step._batch("cpu")
    name = "baseline" if method == "baseline" else "exact"
    return (lambda: bench_step.build_model(name)), batch, bench_step.make_method(name, batch, upper)


def make_step(model_name: str, method: str, precision: str):
    """One training step (forward and loss under autocast, backward, Adam) of a fresh model."""
    parts = _digits_step_parts if model_name == "digits" else _iemocap_step_parts
    build, batch, training = parts(method)
    torch.manual_seed(0)
    return training_step(build(), training, batch, CPU, precision)


def step_times(rounds: int) -> None:
    print("| model | method | precision | median (ms) | min (ms) | vs float32 |")
    print("|---|---|---|---|---|---|")
    for model_name in ("iemocap", "digits"):
        for method in ("baseline", "mce"):
            precisions = ("32", "bf16", "fp16") if model_name == "digits" else ("32", "bf16")
            steps = {p: make_step(model_name, method, p) for p in precisions}
            times: dict[str, list[float]] = {p: [] for p in steps}
            for step in steps.values():
                step()  # warm-up
            for _ in range(rounds):
                for precision, step in steps.items():
                    start = time.perf_counter()
                    step()
                    times[precision].append(time.perf_counter() - start)
            base = statistics.median(times["32"])
            for precision, values in times.items():
                median = statistics.median(values)
                print(
                    f"| {model_name} | {method} | {precision} | {median * 1e3:.1f} | "
                    f"{min(values) * 1e3:.1f} | {median / base:.2f}x |"
                )


def accuracy(epochs: int, seeds: tuple[int, ...]) -> None:
    print("\n| method | precision | seed | test accuracy, average (%) | training (s) |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        cache = Path(folder) / "cache"  # the upper bounds, float32, shared by both precisions
        for method in ("baseline", "mce"):
            for seed in seeds:
                for precision in ("32", "bf16"):
                    out = Path(folder) / f"{method}-{precision}-{seed}"
                    config = config_for(
                        "digits",
                        method=method,
                        precision=precision,
                        seed=seed,
                        epochs=epochs,
                        out=str(out),
                        cache_dir=str(cache),
                        progress=False,
                        threads=1,
                    )
                    scores = run(config)
                    results = json.loads((out / "results.json").read_text())
                    seconds = results["timing_s"][method]["train"]  # not the upper bounds
                    print(
                        f"| {method} | {precision} | {seed} | {scores[method]['average']:.2f} | "
                        f"{seconds:.1f} |"
                    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rounds", nargs="?", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=10, help="epochs of each digits run")
    parser.add_argument("--seeds", default="0,1", help="seeds of the digits runs")
    parser.add_argument("--steps-only", action="store_true", help="no digits runs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    step_times(args.rounds)
    if not args.steps_only:
        accuracy(args.epochs, tuple(int(seed) for seed in args.seeds.split(",")))


if __name__ == "__main__":
    main()
