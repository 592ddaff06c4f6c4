"""``python -m accnn``: the ``accnn`` command."""

from ._cli import main

main()
