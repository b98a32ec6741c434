"""The command line: natscli's nouns and verbs, generated from the registry.

`app` builds the commands; `params` turns model fields into options; `wording` says MCP
advice as commands; `progress` is what a terminal shows while a command runs.
"""

from natsop.faces.cli.app import build_cli, main

__all__ = ["build_cli", "main"]
