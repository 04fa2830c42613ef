"""``python -m bigquant``: the ``bigquant`` command (see :mod:`bigquant.cli`)."""

import sys

from bigquant.cli import main

if __name__ == "__main__":
    sys.exit(main())
