"""`python -m mce.experiment`: see :mod:`mce.experiment.cli`."""

import sys

from mce.experiment.cli import main

if __name__ == "__main__":
    sys.exit(main())
