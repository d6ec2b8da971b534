"""The cost of every compared method against the plain baseline on the IEMOCAP network.

Per step: one training step (forward, backward, Adam) of each method on bench_step.py's batch
(128 padded utterances, missing rates (A, L, V) = (0.2, 0.5, 0.8)), the methods alternating
call by call to cancel machine drift. Per epoch, for the methods that act between epochs
(MBT-Sample's valuation, PMR's prototypes, PASSION's beta update): the ``begin_epoch`` pass
over a split of ``--samples`` utterances drawn like the batch, and the size of the epoch it
plans (MBT-Sample's resampled copies). An epoch's cost is
``pass + steps x step``, against the baseline's ``ceil(N / 128) x step``; the copies of
MBT-Sample depend on how well the model predicts, so they are reported from an untrained model
(near chance: the most copies) and from one whose every subset predicts correctly (none).

Run: ``python bench/method_costs.py [rounds] [--samples N]`` (one torch thread, CPU).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import bench_step  # beside this script: python puts the script's folder first on the path
import torch

from mce.data.dataset import MultimodalData
from mce.data.masks import draw_presence
from mce.methods import METHODS, EpochMethod, MethodInputs, get_method
from mce.science.lce import presence_counts
from mce.tasks import classification_loss, classification_utility
from mce.tasks.iemocap import WIDTHS

COMPARED = ("baseline", "mce", "redcore", "mbt-sample", "pmr", "passion", "shaspec")


def draw_split(count: int, seed: int) -> MultimodalData:
    """``count`` utterances drawn like bench_step's batch (lengths, rates, 4 classes)."""
    generator = torch.Generator().manual_seed(seed)
    present = draw_presence(count, (0.2, 0.5, 0.8), seed=seed)
    inputs, lengths = {}, {}
    for name in bench_step.MODALITIES:
        median, cap = bench_step.LENGTHS[name]
        lengths[name] = bench_step.draw_lengths(count, median, cap, generator)
        frames = torch.randn(count, int(lengths[name].max()), WIDTHS[name], generator=generator)
        valid = torch.arange(frames.shape[1])[None, :] < lengths[name][:, None]
        inputs[name] = frames * valid[..., None]
    target = torch.randint(0, bench_step.CLASSES, (count,), generator=generator)
    data = MultimodalData(bench_step.MODALITIES, inputs, target, present, lengths)
    return data.with_presence(present)


def build(name: str, split: MultimodalData):
    """(model, method) of ``name`` with its default options, trained on ``split``."""
    torch.manual_seed(0)
    spec = get_method(name)
    model = bench_step.build_model()
    if spec.adapt_model is not None:
        model = spec.adapt_model(model, None)
    upper = torch.stack([(split.present >> m) & 1 for m in range(3)], 1).float()
    inputs = MethodInputs(
        loss=classification_loss,
        utility=classification_utility,
        counts=presence_counts(split.present, 3),
        dataset_size=len(split),
        seed=0,
        upper=upper if spec.needs_upper_bounds(None) else None,
        batch_size=bench_step.BATCH,
    )
    return model, spec.build(inputs, None)


def epoch_pass(model, method, split: MultimodalData, epoch: int) -> tuple[float, int]:
    """Seconds of ``begin_epoch(epoch)`` and the entries of the epoch it plans."""
    model.eval()
    start = time.perf_counter()
    with torch.no_grad():
        plan = method.begin_epoch(model, split, epoch)
    seconds = time.perf_counter() - start
    model.train()
    return seconds, len(split) if plan is None else len(plan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rounds", nargs="?", type=int, default=25)
    parser.add_argument("--samples", type=int, default=1024)
    args = parser.parse_args()
    torch.set_num_threads(1)
    split = draw_split(args.samples, seed=1)
    names = [name for name in COMPARED if name in METHODS]
    batch = split.batch(torch.arange(bench_step.BATCH))
    steps, passes = {}, {}
    for name in names:
        model, method = build(name, split)
        if isinstance(method, EpochMethod):
            # an epoch after MBT-Sample's warm-up; PMR and PASSION need a pass before stepping
            passes[name] = [epoch_pass(model, method, split, 5)]
        optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
        counter = iter(range(10**9))

        def step(model=model, method=method, optimizer=optimizer, counter=counter) -> None:
            result = method.step(model, batch, next(counter))
            optimizer.zero_grad()
            result.loss.backward()
            optimizer.step()

        steps[name] = step
    times: dict[str, list[float]] = {name: [] for name in steps}
    for step in steps.values():
        step()  # warm-up
    for _ in range(args.rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["baseline"])
    base_epoch = math.ceil(len(split) / bench_step.BATCH) * base
    print(f"{len(split)} samples, batch {bench_step.BATCH}, {args.rounds} interleaved rounds")
    print("| method | step median (ms) | step ratio | epoch pass (s) | epoch entries | epoch ratio |")
    print("|---|---|---|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        seconds, entries = passes.get(name, [(0.0, len(split))])[0]
        epoch = seconds + math.ceil(entries / bench_step.BATCH) * median
        print(
            f"| {name} | {median * 1e3:.1f} | {median / base:.2f} | {seconds:.2f} | {entries} "
            f"| {epoch / base_epoch:.2f} |"
        )


if __name__ == "__main__":
    main()
