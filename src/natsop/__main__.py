"""`python -m natsop` is the `natsop` command."""

from natsop.faces.cli import main

main()
