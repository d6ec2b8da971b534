"""How v_n(S) should be evaluated: the noise dropout puts into phi, and what a clean utility costs.

1. Noise (bundled digits): a model trained for a few epochs; on training batches, the batch
   Shapley sums phi_m from the training-mode forward (dropout on), drawn many times, against
   phi_m from an eval-mode forward (dropout off, deterministic).
2. Cost (IEMOCAP shapes of bench_step.py, one torch thread): the MCE step with the utility from
   an extra eval-mode no-grad forward over the rows (``clean_utility=True``) against the step
   that reads the training outputs, interleaved with the baseline step.

Run: ``python bench/utility_noise.py``.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import bench_step  # beside this script
import torch

from mce.data.masks import apply_missing_rates
from mce.methods import MCEConfig, MCEMethod, MethodInputs
from mce.science.shapley import coalition_plan, plan_shapley
from mce.support.checkpoint import load_checkpoint
from mce.tasks import classification_loss, classification_utility, get_task
from mce.train import config_for, run

DRAWS = 100


def phi_noise(epochs: int = 10) -> None:
    task = get_task("digits")
    with tempfile.TemporaryDirectory() as folder:
        run(config_for("digits", method="baseline", epochs=epochs, out=folder, progress=False))
        state = load_checkpoint(Path(folder) / "baseline" / "checkpoint.pt")["model"]
    model = task.build_model()
    model.load_state_dict(state)
    train = task.splits(None).train
    masked = apply_missing_rates(train, task.hparams.rates_for(task.modalities), seed=0).data
    print(f"phi_m, batch sums over 128 samples, {DRAWS} dropout draws vs the eval-mode value")
    print("| batch | modality | eval phi | train-mode mean | train-mode std | max abs dev |")
    print("|---|---|---|---|---|---|")
    for b, batch in enumerate(masked.batches(128)):
        if b == 4:
            break
        plan = coalition_plan(batch.present, model.num_modalities)
        model.eval()
        with torch.no_grad():
            h = model.encode(batch.inputs, batch.present)
            _, outputs = model.forward_rows(h, plan.rows)
            target = batch.target[plan.samples]
            clean = plan_shapley(plan, classification_utility(outputs, target)).sum(0)
            model.train()
            draws = torch.stack(
                [
                    plan_shapley(
                        plan, classification_utility(model.forward_rows(h, plan.rows)[1], target)
                    ).sum(0)
                    for _ in range(DRAWS)
                ]
            )
        for m, name in enumerate(model.modalities):
            column = draws[:, m]
            print(
                f"| {b} | {name} | {clean[m]:.2f} | {column.mean():.2f} | {column.std():.2f} "
                f"| {(column - clean[m]).abs().max():.2f} |"
            )


def step_cost(rounds: int = 20) -> None:
    torch.set_num_threads(1)
    batch, upper = bench_step._batch("cpu")
    steps = {}
    for name, clean in (
        ("baseline", None),
        ("mce clean utility", True),
        ("mce train utility", False),
    ):
        torch.manual_seed(0)
        model = bench_step.build_model()
        optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
        if clean is None:
            method = bench_step.make_method("baseline", batch, upper)
        else:
            inputs = MethodInputs(
                classification_loss,
                classification_utility,
                bench_step.presence_counts(batch.present, 3),
                128,
                0,
                upper,
            )
            method = MCEMethod(inputs, MCEConfig(lambda_sub=2.0, clean_utility=clean))
        counter = iter(range(10**9))

        def step(model=model, optimizer=optimizer, method=method, counter=counter) -> None:
            result = method.step(model, batch, next(counter))
            optimizer.zero_grad()
            result.loss.backward()
            optimizer.step()

        steps[name] = step
    times = {name: [] for name in steps}
    for step in steps.values():
        step()
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["baseline"])
    print("\n| step | median (ms) | ratio to baseline |\n|---|---|---|")
    for name, values in times.items():
        print(
            f"| {name} | {statistics.median(values) * 1e3:.1f} | "
            f"{statistics.median(values) / base:.2f} |"
        )


if __name__ == "__main__":
    phi_noise()
    step_cost(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
