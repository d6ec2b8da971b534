"""`python -m mce.predict RUN --out preds.csv`: predict with a run's trained model, on a split
of its task's data or on a folder of new files. The command itself is
:mod:`mce.inference.cli`; this module is the entry point and keeps its names importable from
``mce.predict``.
"""

from __future__ import annotations

import sys

from mce.inference.cli import ID_COLUMNS, build_parser, main, presence_from_file, write_predictions

__all__ = ["build_parser", "main", "write_predictions", "presence_from_file", "ID_COLUMNS"]

if __name__ == "__main__":
    sys.exit(main())
