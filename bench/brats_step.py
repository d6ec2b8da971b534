"""BraTS training step: seconds per step and peak memory of the baseline, MCE exact (15 rows a
sample) and MCE with a row budget (``--shapley sampled --row-budget R``), measured interleaved.

Run: ``python bench/brats_step.py [--device cuda] [--crop 80] [--base 8] [--levels 5]``.
One sample (batch 1, as Table 1) with all four sequences, random inputs and labels; a step is
the method's loss, backward and an AdamW update. Peak memory: ``torch.cuda.max_memory_allocated``
on a GPU (reset before each variant's steps), the growth of the peak resident set of a fresh
subprocess running the variant alone on the CPU. Prints a Markdown table and, with ``--json``,
writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch

from mce.data.dataset import Batch
from mce.methods import MethodInputs
from mce.methods.baseline import BaselineMethod
from mce.methods.mce import MCEConfig, MCEMethod
from mce.segmentation import dice_ce_loss, dice_utility
from mce.tasks.brats import build_model

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
        upper=torch.full((219, 4), 0.6),
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


def peak_memory(variant: str, args: argparse.Namespace) -> float:
    """Peak bytes of one variant's steps: CUDA allocator peak, or RSS growth in a subprocess."""
    if args.device.startswith("cuda"):
        step = make_step(variant, args)
        step()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return float(torch.cuda.max_memory_allocated())
    command = [sys.executable, __file__, "--rss-of", variant, *_forwarded(args)]
    return float(subprocess.run(command, capture_output=True, text=True, check=True).stdout)


def _forwarded(args: argparse.Namespace) -> list[str]:
    return [
        "--device", args.device, "--crop", str(args.crop), "--base", str(args.base),
        "--levels", str(args.levels), "--row-budget", str(args.row_budget),
        "--row-memory-gb", str(args.row_memory_gb),
    ]  # fmt: skip


def _peak_rss() -> int:
    """Bytes: this process's peak resident set (VmHWM; unlike ``ru_maxrss``, which Linux keeps
    across ``execve``, it starts afresh in a new program)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _rss_of(variant: str, args: argparse.Namespace) -> None:
    step = make_step(variant, args)
    before = _peak_rss()
    step()
    step()
    print(_peak_rss() - before)


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
    parser.add_argument("--rss-of", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.rss_of:
        _rss_of(args.rss_of, args)
        return
    timings = time_steps(args)
    for variant in args.variants:
        timings[variant]["peak_bytes"] = peak_memory(variant, args)
    base = timings["baseline"]["median_s"] if "baseline" in timings else None
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(
        f"BraTS step, {where}, crop {args.crop}^3, base {args.base}, levels {args.levels}, "
        f"batch 1, all 4 sequences, {args.rounds} interleaved rounds, torch {torch.__version__}"
    )
    print("| variant | rows | median s/step | min s/step | x baseline | peak memory (MB) |")
    print("|---|---|---|---|---|---|")
    for variant, numbers in timings.items():
        ratio = numbers["median_s"] / base if base else float("nan")
        label = f"sampled R={args.row_budget}" if variant == "sampled" else variant
        print(
            f"| {label} | {numbers['rows']:.0f} | {numbers['median_s']:.3f} | "
            f"{numbers['min_s']:.3f} | {ratio:.2f} | {numbers['peak_bytes'] / 2**20:.0f} |"
        )
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"args": vars(args), "device": where, "timings": timings}, file, indent=1)


if __name__ == "__main__":
    main()
