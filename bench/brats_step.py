"""BraTS training step: seconds per step and peak memory of the baseline, MCE exact (15 rows a
sample) and MCE with a row budget (``--shapley sampled --row-budget R``), measured interleaved.

Run: ``python bench/brats_step.py [--device cuda] [--crop 80] [--base 8] [--levels 5]``.
One sample (batch 1, as Table 1) with all four sequences, random inputs and labels; a step is
the method's loss, backward and an AdamW update; MCE scores U with four frozen unimodal U-Nets
on the step's own crop, as the brats task does. Memory: the bytes of the tensors a step saves
for its backward pass (exact, on any machine), and on a GPU ``torch.cuda.max_memory_allocated``
of a step (reset after a warm-up step). Prints a Markdown table and, with ``--json``,
writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from mce.data.dataset import Batch
from mce.methods import MethodInputs
from mce.methods.baseline import BaselineMethod
from mce.methods.mce import MCEConfig, MCEMethod
from mce.pretrain import BatchUpperBounds
from mce.segmentation import dice_ce_loss, dice_utility
from mce.tasks.brats import build_model, build_unimodal

VARIANTS = ("baseline", "exact", "sampled")


def make_step(variant: str, args: argparse.Namespace):
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(args.crop, args.base, args.levels).to(device)
    model.row_memory_gb = args.row_memory_gb
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(1)
    shape = (1, 1, args.crop, args.crop, args.crop)
    inputs = {name: torch.randn(shape, generator=generator) for name in model.modalities}
    target = torch.randint(0, 4, shape[:1] + shape[2:], generator=generator)
    batch = Batch(inputs, target, torch.tensor([0b1111]), torch.tensor([0])).to(device)
    method_inputs = MethodInputs(
        loss=dice_ce_loss,
        utility=dice_utility,
        counts=torch.tensor([44, 44, 110, 175]),  # (0.8, 0.5, 0.2) of 219 cases
        dataset_size=219,
        seed=0,
        upper=BatchUpperBounds(
            {
                name: build_unimodal(args.crop, args.base, args.levels).to(device)
                for name in model.modalities
            },
            model.modalities,
            dice_utility,
        ),
    )
    if variant == "baseline":
        method = BaselineMethod(method_inputs)
    else:
        method = MCEMethod(method_inputs, MCEConfig(shapley=variant, row_budget=args.row_budget))
    counter = iter(range(10**9))

    def step() -> float:
        result = method.step(model, batch, next(counter))
        optimizer.zero_grad()
        result.loss.backward()
        optimizer.step()
        return result.logs.get("rows", 1.0)

    step.model, step.batch, step.method = model, batch, method  # type: ignore[attr-defined]
    return step


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_steps(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    steps = {variant: make_step(variant, args) for variant in args.variants}
    rows = {variant: step() for variant, step in steps.items()}  # warm-up
    times: dict[str, list[float]] = {variant: [] for variant in steps}
    for _ in range(args.rounds):
        for variant, step in steps.items():
            _sync(args.device)
            start = time.perf_counter()
            step()
            _sync(args.device)
            times[variant].append(time.perf_counter() - start)
    return {
        variant: {
            "median_s": statistics.median(values),
            "min_s": min(values),
            "rows": rows[variant],
        }
        for variant, values in times.items()
    }


def saved_activation_bytes(variant: str, args: argparse.Namespace) -> float:
    """Bytes of the tensors one step keeps for its backward pass (each storage counted once):
    the activation memory of the step, exact and the same on every machine."""
    step_of = make_step(variant, args)
    model, batch, method = step_of.model, step_of.batch, step_of.method
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        result = method.step(model, batch, 0)
    result.loss.backward()
    return float(sum(storages.values()))


def peak_memory(variant: str, args: argparse.Namespace) -> float:
    """CUDA allocator peak of one step (after a warm-up step); NaN on the CPU."""
    if not args.device.startswith("cuda"):
        return float("nan")
    step = make_step(variant, args)
    step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return float(torch.cuda.max_memory_allocated())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--crop", type=int, default=32)
    parser.add_argument("--base", type=int, default=8)
    parser.add_argument("--levels", type=int, default=4)
    parser.add_argument("--row-budget", type=int, default=3)
    parser.add_argument("--row-memory-gb", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    timings = time_steps(args)
    for variant in args.variants:
        timings[variant]["saved_bytes"] = saved_activation_bytes(variant, args)
        timings[variant]["peak_bytes"] = peak_memory(variant, args)
    base = timings["baseline"]["median_s"] if "baseline" in timings else None
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(
        f"BraTS step, {where}, crop {args.crop}^3, base {args.base}, levels {args.levels}, "
        f"batch 1, all 4 sequences, {args.rounds} interleaved rounds, torch {torch.__version__}"
    )
    print(
        "| variant | rows | median s/step | min s/step | x baseline | saved for backward (MB) "
        "| peak allocated (MB) |"
    )
    print("|---|---|---|---|---|---|---|")
    for variant, numbers in timings.items():
        ratio = numbers["median_s"] / base if base else float("nan")
        label = f"sampled R={args.row_budget}" if variant == "sampled" else variant
        print(
            f"| {label} | {numbers['rows']:.0f} | {numbers['median_s']:.3f} | "
            f"{numbers['min_s']:.3f} | {ratio:.2f} | {numbers['saved_bytes'] / 2**20:.0f} | "
            f"{numbers['peak_bytes'] / 2**20:.0f} |"
        )
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"args": vars(args), "device": where, "timings": timings}, file, indent=1)


if __name__ == "__main__":
    main()
