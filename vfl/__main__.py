"""``python -m vfl`` is the same as the ``vfl`` command."""

from vfl.cli.main import run

run()
