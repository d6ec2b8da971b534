"""Evaluation on every non-empty modality combination and their average (Tables 3-5)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from mce.data.dataset import MultimodalData
from mce.model import MultimodalModel, combination_rows
from mce.tasks.base import Task

__all__ = ["combination_name", "evaluate_combinations", "markdown_table", "write_results"]


def combination_name(mask: int, modalities: Sequence[str]) -> str:
    return "+".join(name for m, name in enumerate(modalities) if (mask >> m) & 1)


@torch.no_grad()
def evaluate_combinations(
    model: MultimodalModel,
    task: Task,
    data: MultimodalData,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> dict[str, float]:
    """Mean utility of the model on ``data`` for each non-empty combination C of modalities
    (each sample given C & its present set; samples where that is empty are left out of C),
    plus ``average``, the mean over combinations. All combinations of a batch run as one
    batched forward."""
    model.eval()
    combos = list(range(1, 1 << model.num_modalities))
    totals = torch.zeros(len(combos), dtype=torch.float64)
    counts = torch.zeros(len(combos), dtype=torch.float64)
    batches = data.batches(batch_size)
    for batch in tqdm(
        batches,
        total=-(-len(data) // batch_size),
        desc="evaluate",
        disable=not progress,
        leave=False,
    ):
        batch = batch.to(device)
        h = model.encode(batch.inputs, batch.present)
        rows, which = combination_rows(batch.present, combos)
        _, outputs = model.forward_rows(h, rows)
        utility = task.utility(outputs, batch.target[rows[:, 0]]).double().cpu()
        totals.index_add_(0, which.cpu(), utility)
        counts.index_add_(0, which.cpu(), torch.ones_like(utility))
    scores = {
        combination_name(c, model.modalities): float(totals[i] / counts[i])
        for i, c in enumerate(combos)
        if counts[i] > 0
    }
    scores["average"] = sum(scores.values()) / len(scores)
    return scores


def markdown_table(results: dict[str, dict[str, float]], metric: str) -> str:
    """Rows: combinations (and average); columns: methods."""
    methods = list(results)
    combos = list(next(iter(results.values())))
    lines = [
        f"| combination | {' | '.join(f'{m} ({metric})' for m in methods)} |",
        "|---|" + "---|" * len(methods),
    ]
    for combo in combos:
        cells = " | ".join(f"{100 * results[m][combo]:.2f}" for m in methods)
        label = f"**{combo}**" if combo == "average" else combo
        lines.append(f"| {label} | {cells} |")
    return "\n".join(lines)


def write_results(out_dir: Path, results: dict[str, dict[str, float]], metric: str) -> str:
    """Writes results.json and results.md; returns the Markdown table."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown_table(results, metric)
    (out_dir / "results.md").write_text(table + "\n")
    return table
