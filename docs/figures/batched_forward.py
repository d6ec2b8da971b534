"""Draws docs/figures/batched_forward.svg: the rows (sample, subset) of one batched forward,
from the plan :func:`mce.coalition_plan` makes for a batch of three samples.

    python docs/figures/batched_forward.py [OUT.svg]
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

import mce  # noqa: E402

MODALITIES = ("image", "audio", "text")
PRESENT = torch.tensor([0b011, 0b001, 0b111])  # bit m: modality m present
COLOURS = {"used": "#3b75af", "rebuilt": "#f2b134", "absent": "#d9d9d9"}


def row_cells(present: int, subset: int) -> list[str]:
    """Per modality: used by the row, rebuilt for it (present, dropped) or absent."""
    return [
        "used" if subset >> m & 1 else "rebuilt" if present >> m & 1 else "absent"
        for m in range(len(MODALITIES))
    ]


def draw(out: Path) -> None:
    plan = mce.coalition_plan(PRESENT, len(MODALITIES), method="exact")
    rows = plan.rows.tolist()
    fig, ax = plt.subplots(figsize=(7.5, 0.42 * len(rows) + 1.4))
    for r, (n, subset) in enumerate(rows):
        y = len(rows) - 1 - r
        present = int(PRESENT[n])
        for m, kind in enumerate(row_cells(present, subset)):
            ax.add_patch(Rectangle((m, y + 0.08), 0.92, 0.84, color=COLOURS[kind]))
        read = ["L_sub", "v_n(S)"] + (["L_task"] if subset == present else [])
        read += ["L_aux"] if subset != present else []
        ax.text(-0.25, y + 0.5, f"sample {n}", ha="right", va="center", fontsize=9)
        ax.text(3.2, y + 0.5, ", ".join(read), ha="left", va="center", fontsize=9)
    for m, name in enumerate(MODALITIES):
        ax.text(m + 0.46, len(rows) + 0.25, name, ha="center", va="bottom", fontsize=9)
    ax.text(3.2, len(rows) + 0.25, "read by", ha="left", va="bottom", fontsize=9)
    handles = [Rectangle((0, 0), 1, 1, color=c) for c in COLOURS.values()]
    labels = ["in the subset S", "present, dropped: rebuilt (L_aux)", "absent in the sample"]
    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.45, 0.0), ncol=3,
              frameon=False, fontsize=8)
    ax.set_xlim(-1.4, 5.2)
    ax.set_ylim(-0.1, len(rows) + 0.8)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, format="svg", metadata={"Date": None})
    plt.close(fig)


if __name__ == "__main__":
    plt.rcParams.update({"svg.hashsalt": "mce", "svg.fonttype": "none"})  # text stays text
    draw(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_suffix(".svg"))
