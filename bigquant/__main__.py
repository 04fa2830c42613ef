"""``python -m bigquant``: the ``bigquant`` command (see :mod:`bigquant.cli`)."""

from bigquant.cli import run

if __name__ == "__main__":
    run()
