"""`natsop skill install|show`: the skill documents for Claude Code (not NATS operations)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from natsop.errors import NatsopError
from natsop.faces.render import error_text
from natsop.skill import DOCS, default_skill_dir, install, read_doc

__all__ = ["skill_group"]


@click.group("skill")
def skill_group() -> None:
    """The skill documents that teach an assistant to use natsop (SKILL.md, reference.md, auth.md)."""


@skill_group.command("install")
@click.option("--dir", "target", type=click.Path(file_okay=False, path_type=Path),
              help="Where to write them (default ~/.claude/skills/nats)")
@click.option("--force", "-f", is_flag=True, help="Overwrite copies you have changed")
def install_command(target: Path | None, force: bool) -> None:
    """Install the skill documents where Claude Code finds a user skill."""
    try:
        written = install(target or default_skill_dir(), force=force)
    except NatsopError as err:
        click.echo(f"natsop: {error_text(err)}", err=True)
        sys.exit(1)
    for path in written:
        click.echo(f"wrote {path}")


@skill_group.command("show")
@click.argument("document", type=click.Choice(DOCS), default="SKILL.md")
def show_command(document: str) -> None:
    """Print one of the skill documents."""
    click.echo(read_doc(document))
