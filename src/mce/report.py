"""`python -m mce.report RUN_DIR`: the figures of a run folder or an experiment folder; the
module itself is :mod:`mce.experiment.report`."""

from __future__ import annotations

import sys

from mce.experiment.report import (
    MARKER,
    batch_view,
    build_report,
    main,
    plot_batch,
    plot_capability,
    plot_scores,
    plot_trajectories,
    read_log,
)

__all__ = [
    "MARKER",
    "batch_view",
    "build_report",
    "main",
    "plot_batch",
    "plot_capability",
    "plot_scores",
    "plot_trajectories",
    "read_log",
]

if __name__ == "__main__":
    sys.exit(main())
