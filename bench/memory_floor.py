"""Shapley aggregation against the memory floor: how close the kernel comes to the device's copy
bandwidth.

The aggregation must read each row once (16 B: sample, subset), its utility (4 B) and, for Monte
Carlo plans, its coefficients (4 M B), read the presence masks (8 B per sample) and write phi
(4 M B per sample). Those bytes over the bandwidth of a large device-to-device torch copy
(counting bytes read plus bytes written) are the floor: no kernel runs much faster.

For each case it prints: the op's time as a caller sees it (CUDA events around
``plan_shapley``: validation, row offsets and the kernel), the GPU time of the op's kernels and
of the Shapley kernel alone (torch profiler), the floor, the Shapley kernel's achieved GB/s, the
copy's GB/s and their ratio. Inputs rotate among enough copies to exceed the L2 cache, so small
cases are not timed from the cache. Same presence masks as ``bench_shapley.py``.

Run: ``python bench/memory_floor.py [--json PATH] [--markdown PATH] [--device cuda|cpu]``
(cpu: a dry run of the plumbing with host timers; its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time

import bench_shapley  # beside this script: python puts the script's folder first on the path
import torch

from mce.science.shapley import coalition_plan, plan_shapley

CASES = [("exact", 16, 128), ("exact", 16, 1024), ("mc100", 16, 1024)]
REPS, WARMUP = 30, 3
GB = 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_time_s(fn, device: torch.device, reps: int) -> float:
    """Median seconds of ``fn(i)`` over reps (CUDA events on a GPU, the host clock on a CPU)."""
    for i in range(WARMUP):
        fn(i)
    _sync(device)
    times = []
    for i in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn(i)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            start_s = time.perf_counter()
            fn(i)
            times.append(time.perf_counter() - start_s)
    return statistics.median(times)


def copy_bandwidth(device: torch.device) -> dict:
    """GB/s of a large device-to-device copy, counting bytes read plus bytes written."""
    size = (1 << 30) if device.type == "cuda" else (64 << 20)
    source = torch.randint(0, 256, (size,), dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    seconds = _median_time_s(lambda _: target.copy_(source), device, 20)
    return {"bytes": 2 * size, "seconds": seconds, "gbps": 2 * size / seconds / GB}


def _cache_bytes(device: torch.device) -> int:
    if device.type != "cuda":
        return 32 << 20
    properties = torch.cuda.get_device_properties(device)
    return int(getattr(properties, "L2_cache_size", 0) or (64 << 20))


def _kernel_times_us(fn, device: torch.device, reps: int) -> tuple[float | None, float | None, str]:
    """Per call: GPU time of all kernels the call launched, and of those named *shapley*."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activity = ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU
    wanted = DeviceType.CUDA if cuda else DeviceType.CPU
    try:
        with profile(activities=[activity]) as prof:
            for i in range(reps):
                fn(i)
            _sync(device)
        events = [e for e in prof.events() if getattr(e, "device_type", None) == wanted]
    except (RuntimeError, ValueError, TypeError, AttributeError) as error:  # a bonus: report it
        return None, None, f"profiler failed: {type(error).__name__}: {error}"
    if not cuda:  # host ops nest: count the op itself
        events = [e for e in events if e.name.startswith("mce::")]
    if not events:
        return None, None, "the profiler recorded no kernels"
    total = sum(e.time_range.elapsed_us() for e in events) / reps
    shapley = [e for e in events if "shapley" in e.name.lower()]
    names = sorted({e.name for e in events})
    shapley_us = sum(e.time_range.elapsed_us() for e in shapley) / reps if shapley else None
    return total, shapley_us, "; ".join(name[:60] for name in names)


def aggregation_case(
    method: str, num_modalities: int, num_samples: int, device: torch.device, copy_gbps: float
) -> dict:
    present = bench_shapley._present(num_samples, num_modalities).to(device)
    plan = coalition_plan(present, num_modalities, seed=0, **bench_shapley._plan_args(method))
    rows = plan.num_rows
    row_bytes = 16 + 4 + (4 * num_modalities if plan.coef is not None else 0)
    moved = rows * row_bytes + num_samples * (8 + 4 * num_modalities)
    copies = max(2, min(16, math.ceil(4 * _cache_bytes(device) / moved)))
    generator = torch.Generator().manual_seed(1)
    utilities = [torch.rand(rows, generator=generator).to(device) for _ in range(copies)]
    plans = [plan] + [
        dataclasses.replace(
            plan,
            rows=plan.rows.clone(),
            present=plan.present.clone(),
            coef=None if plan.coef is None else plan.coef.clone(),
        )
        for _ in range(copies - 1)
    ]

    def call(i: int) -> torch.Tensor:
        return plan_shapley(plans[i % copies], utilities[i % copies])

    op_s = _median_time_s(call, device, REPS)
    kernels_us, shapley_us, kernel_names = _kernel_times_us(call, device, REPS)
    floor_us = moved / (copy_gbps * GB) * 1e6
    achieved = moved / (shapley_us * 1e-6) / GB if shapley_us else None
    return {
        "case": f"{method} M={num_modalities} N={num_samples}",
        "rows": rows,
        "bytes": moved,
        "input_copies": copies,
        "op_us": op_s * 1e6,
        "kernels_us": kernels_us,
        "shapley_kernel_us": shapley_us,
        "floor_us": floor_us,
        "achieved_gbps": achieved,
        "op_gbps": moved / op_s / GB,
        "copy_gbps": copy_gbps,
        "ratio": achieved / copy_gbps if achieved else None,
        "kernels": kernel_names,
    }


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def markdown(report: dict) -> str:
    lines = [
        (
            f"{report['device_name']}; copy {report['copy']['gbps']:.0f} GB/s (bytes read + "
            f"written, {report['copy']['bytes'] // 2 >> 20} MiB device-to-device torch copy)"
        ),
        "",
        (
            "| case | rows | MB moved | op (us) | op kernels (us) | Shapley kernel (us) "
            "| floor (us) | achieved GB/s | copy GB/s | ratio |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case in report["cases"]:
        lines.append(
            f"| {case['case']} | {case['rows']} | {case['bytes'] / 1e6:.1f} "
            f"| {case['op_us']:.1f} | {_fmt(case['kernels_us'], '.1f')} "
            f"| {_fmt(case['shapley_kernel_us'], '.1f')} | {case['floor_us']:.1f} "
            f"| {_fmt(case['achieved_gbps'], '.0f')} | {case['copy_gbps']:.0f} "
            f"| {_fmt(case['ratio'], '.2f')} |"
        )
    kernels = {case["kernels"] for case in report["cases"]}
    lines += ["", "Kernels profiled: " + " | ".join(sorted(kernels))]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", help="write the numbers here")
    parser.add_argument("--markdown", help="write the table here too")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("no GPU visible: torch.cuda.is_available() is False")
    torch.set_num_threads(1)
    copy = copy_bandwidth(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run)"
    cases = [aggregation_case(*case, device, copy["gbps"]) for case in CASES]
    report = {"device_name": name, "torch": torch.__version__, "copy": copy, "cases": cases}
    if args.json:
        with open(args.json, "w") as file:
            json.dump(report, file, indent=1)
    table = markdown(report)
    if args.markdown:
        with open(args.markdown, "w") as file:
            file.write(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
