"""`python -m natsop` is the `natsop` command."""

from natsop.cli import main

main()
