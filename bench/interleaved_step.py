"""The training-step ratio of bench_step.py, measured interleaved to cancel machine drift.

pytest-benchmark times each variant in its own block of rounds, so a noisy machine can move one
variant and not the others; here the baseline, MCE exact, MCE Monte Carlo and RedCore steps
alternate.
Run: ``python bench/interleaved_step.py [rounds]`` (one torch thread, CPU).
"""

from __future__ import annotations

import statistics
import sys
import time

import bench_step  # beside this script: python puts the script's folder first on the path
import torch

from mce.experiment.costs import training_step


def make_step(variant: str):
    torch.manual_seed(0)
    model = bench_step.build_model(variant)
    batch, upper = bench_step._batch("cpu")
    return training_step(model, bench_step.make_method(variant, batch, upper), batch, "cpu")


def main(rounds: int) -> None:
    torch.set_num_threads(1)
    steps = {variant: make_step(variant) for variant in ("baseline", "exact", "mc", "redcore")}
    times: dict[str, list[float]] = {variant: [] for variant in steps}
    for step in steps.values():
        step()  # warm-up
    for _ in range(rounds):
        for variant, step in steps.items():
            start = time.perf_counter()
            step()
            times[variant].append(time.perf_counter() - start)
    base = statistics.median(times["baseline"])
    for variant, values in times.items():
        median = statistics.median(values)
        print(
            f"{variant:8s} median {median * 1e3:7.1f} ms  min {min(values) * 1e3:7.1f} ms  "
            f"ratio {median / base:.2f}"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 25)
