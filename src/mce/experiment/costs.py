"""The paper's Table 8 measured here: the cost of one training step of the baseline, MCE with
exact Shapley values and MCE with Monte Carlo Shapley values (K = 200) on the IEMOCAP network.

The iemocap task's own model (:func:`mce.tasks.iemocap.build_model`) on a batch of 128 padded
utterances whose lengths are drawn like IEMOCAP's (log-normal around a median, capped), missing
rates (A, L, V) = (0.2, 0.5, 0.8), as the paper's table; random features, so no data set is
needed. Per recipe: the median time of a full step (forward, backward, Adam update), the recipes
alternating call by call to cancel machine drift; the floating-point operations of one step as
``torch.utils.flop_counter`` counts them (matrix products and convolutions: the LSTM layers are
not counted, so the numbers are below the paper's model FLOPs, while their ratios compare); and,
on a GPU, the peak memory allocated during a step. ``python -m mce.experiment --protocol table8``
writes ``costs.json`` and ``summary.md``; ``bench/`` times the same batch under pytest-benchmark.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from mce.data.dataset import Batch
from mce.data.masks import draw_presence
from mce.methods import BaselineMethod, MCEConfig, MCEMethod, MethodInputs, TrainingMethod
from mce.science.lce import presence_counts
from mce.tasks import classification_loss, classification_utility
from mce.tasks.iemocap import WIDTHS, build_model
from mce.training.trainer import autocast

__all__ = [
    "LENGTHS",
    "RECIPES",
    "costs_markdown",
    "draw_lengths",
    "iemocap_like_batch",
    "measure_costs",
    "training_step",
]

MODALITIES = ("acoustic", "lexical", "visual")
LENGTHS = {"acoustic": (40, 150), "lexical": (15, 40), "visual": (30, 100)}
"""Per modality: (median, cap) of the sequence lengths drawn."""
CLASSES = 4
RATES = (0.2, 0.5, 0.8)
RECIPES = ("baseline", "mce-exact", "mce-mc200")
"""Table 8's rows: the plain baseline, MCE exact, MCE Monte Carlo with K = 200."""


def draw_lengths(count: int, median: int, cap: int, generator: torch.Generator) -> torch.Tensor:
    """Log-normal lengths (sigma 0.6) around ``median``, in [1, cap]."""
    normal = torch.randn(count, generator=generator)
    return (median * torch.exp(0.6 * normal)).round().clamp(1, cap).long()


def iemocap_like_batch(
    batch_size: int = 128, seed: int = 0, device: str | torch.device = "cpu"
) -> tuple[Batch, torch.Tensor]:
    """(a batch of IEMOCAP-shaped random utterances at rates (0.2, 0.5, 0.8), the upper-bound
    table U of its samples: 1 where a modality is present)."""
    generator = torch.Generator().manual_seed(seed)
    present = draw_presence(batch_size, RATES, seed=seed)
    inputs, lengths = {}, {}
    for name in MODALITIES:
        median, cap = LENGTHS[name]
        lengths[name] = draw_lengths(batch_size, median, cap, generator)
        frames = torch.randn(
            batch_size, int(lengths[name].max()), WIDTHS[name], generator=generator
        )
        valid = torch.arange(frames.shape[1])[None, :] < lengths[name][:, None]
        inputs[name] = frames * valid[..., None]
    target = torch.randint(0, CLASSES, (batch_size,), generator=generator)
    upper = torch.stack([(present >> m) & 1 for m in range(len(MODALITIES))], 1).float()
    batch = Batch(inputs, target, present, torch.arange(batch_size), lengths)
    return batch.to(device), upper


def _method(recipe: str, batch: Batch, upper: torch.Tensor) -> TrainingMethod:
    inputs = MethodInputs(
        loss=classification_loss,
        utility=classification_utility,
        counts=presence_counts(batch.present.cpu(), len(MODALITIES)),
        dataset_size=batch.target.shape[0],
        seed=0,
        upper=upper,
    )
    if recipe == "baseline":
        return BaselineMethod(inputs)
    if recipe == "mce-exact":
        return MCEMethod(inputs, MCEConfig(shapley="exact"))
    if recipe == "mce-mc200":
        return MCEMethod(inputs, MCEConfig(shapley="mc", mc_k=200))
    raise ValueError(f"unknown recipe {recipe!r}; known: {', '.join(RECIPES)}")


def _step(recipe: str, batch: Batch, upper: torch.Tensor, device: torch.device) -> Callable:
    torch.manual_seed(0)
    model = build_model().to(device)
    return training_step(model, _method(recipe, batch, upper.to(device)), batch, device)


def training_step(
    model: torch.nn.Module,
    method: TrainingMethod,
    batch: Batch,
    device: str | torch.device,
    precision: str = "32",
) -> Callable[[], None]:
    """() -> one training step of ``method`` on ``batch``: forward and loss under
    :func:`~mce.training.trainer.autocast` at ``precision``, backward, an Adam update (lr 2e-4),
    synchronised on a GPU so that a timer around it measures the step."""
    device = torch.device(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
    counter = iter(range(10**9))

    def step() -> None:
        with autocast(precision, device):
            result = method.step(model, batch, next(counter))
        optimizer.zero_grad()
        result.loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return step


def measure_costs(
    device: str | torch.device = "cpu", rounds: int = 20, batch_size: int = 128
) -> dict[str, Any]:
    """Table 8's columns for each of :data:`RECIPES`.

    Returns:
        ``{"machine": ..., "rows": {recipe: {"time_ms", "time_ms_min", "ratio", "flops_g",
        "memory_mb"}}}``: median and fastest step time over ``rounds`` interleaved steps, the
        median's ratio to the baseline's, counted GFLOPs of one step, peak GPU memory of one
        step in MB (None on the CPU).
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    device = torch.device(device)
    batch, upper = iemocap_like_batch(batch_size, device=device)
    steps = {recipe: _step(recipe, batch, upper, device) for recipe in RECIPES}
    rows: dict[str, dict[str, Any]] = {recipe: {} for recipe in RECIPES}
    for recipe, step in steps.items():
        step()  # warm-up
        with FlopCounterMode(display=False) as counter:
            step()
        rows[recipe]["flops_g"] = counter.get_total_flops() / 1e9
        memory = None
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            step()
            memory = torch.cuda.max_memory_allocated(device) / 2**20
        rows[recipe]["memory_mb"] = memory
    times: dict[str, list[float]] = {recipe: [] for recipe in RECIPES}
    for _ in range(rounds):
        for recipe, step in steps.items():
            started = time.perf_counter()
            step()
            times[recipe].append(time.perf_counter() - started)
    base = statistics.median(times["baseline"])
    for recipe, values in times.items():
        rows[recipe]["time_ms"] = 1e3 * statistics.median(values)
        rows[recipe]["time_ms_min"] = 1e3 * min(values)
        rows[recipe]["ratio"] = statistics.median(values) / base
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    return {
        "machine": {
            "device": str(device),
            "name": name or platform.machine(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        },
        "batch_size": batch_size,
        "rounds": rounds,
        "rates": list(RATES),
        "rows": rows,
    }


def _verdict(claim, rows: Mapping[str, Mapping[str, Any]]) -> tuple[str, str]:
    """(verdict, why) of one of Table 8's claims on measured ``rows``."""
    mine = rows.get(claim.method, {})
    other = rows.get(claim.others[0], {}) if claim.others else {}
    metric = claim.metrics[0]
    column = {"time_ms": "time_ms", "gpu_memory_mb": "memory_mb", "flops_g": "flops_g"}
    if metric not in column:
        return "cannot tell", f"{metric} needs trained runs (--protocol table5 --settings a)"
    a, b = mine.get(column[metric]), other.get(column[metric])
    if a is None or b is None:
        return "cannot tell", f"{metric} not measured on this device (GPU memory needs a GPU)"
    if claim.kind == "cost_ratio":
        ratio = a / b
        close = abs(ratio - claim.value) <= claim.tolerance
        return (
            "supported" if close else "contradicted",
            f"ours {ratio:.2f}x, the paper's {claim.value:g}x (tolerance {claim.tolerance:g})",
        )
    return (
        "supported" if a > b else "contradicted",
        f"{claim.method} {a:.1f} against {claim.others[0]} {b:.1f}",
    )


def costs_markdown(result: Mapping[str, Any]) -> str:
    """Table 8 measured, beside the paper's, and its claims with a verdict each."""
    from mce.experiment.published import published_table

    table = published_table("table8")
    machine = result["machine"]
    lines = [
        "# Table 8 protocol: the cost of a training step",
        "",
        f"Measured {machine['date']} on {machine['device']} ({machine['name']}, "
        f"{machine['threads']} torch thread(s), torch {machine['torch']}): batch "
        f"{result['batch_size']}, rates (A, L, V) = (0.2, 0.5, 0.8), median of "
        f"{result['rounds']} interleaved steps. FLOPs: torch.utils.flop_counter over one "
        "training step (forward and backward; LSTM layers not counted). The paper's numbers: "
        f"{table.training.get('device', 'RTX4090')}, as printed.",
        "",
        "| recipe | time (ms) | × baseline | paper time (ms) | paper × baseline | GFLOPs | "
        "paper GFLOPs | memory (MB) | paper memory (MB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    paper_base = table.mean("baseline", "a", "time_ms")
    for recipe, row in result["rows"].items():
        paper_time = table.mean(recipe, "a", "time_ms")
        memory = "n/a" if row["memory_mb"] is None else f"{row['memory_mb']:.0f}"
        lines.append(
            f"| {recipe} | {row['time_ms']:.1f} | {row['ratio']:.2f} | {paper_time} | "
            f"{paper_time / paper_base:.2f} | {row['flops_g']:.2f} | "
            f"{table.mean(recipe, 'a', 'flops_g')} | {memory} | "
            f"{table.mean(recipe, 'a', 'gpu_memory_mb')} |"
        )
    lines += ["", "| claim | paper's text | our measurement | why |", "|---|---|---|---|"]
    for claim in table.claims:
        verdict, why = _verdict(claim, result["rows"])
        lines.append(f"| {claim.id} | {claim.text} (line {claim.line}) | **{verdict}** | {why} |")
    return "\n".join(lines) + "\n"
