"""The ``accnn`` command installed by the wheel: the same program as the cargo-built binary."""

import signal
import sys

from . import _accnn


def main() -> None:
    # Ctrl-C stops the command as it stops the binary: Python's own handler would only raise once the
    # native call returned.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.stdout.flush()
    # "accnn" as the program name, so that usage and help read as the binary's do.
    sys.exit(_accnn.run_cli(["accnn", *sys.argv[1:]]))
