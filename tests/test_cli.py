"""The CLI face: generated commands, help, --json, errors and confirmation."""

from __future__ import annotations

import json

import click

from natsop.cli import build_cli
from natsop.registry import operations
from tests.conftest import CliFn, cli_json


def _walk(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    out = []
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        assert cmd is not None
        out.append(((*path, name), cmd))
        if isinstance(cmd, click.Group):
            out.extend(_walk(cmd, (*path, name)))
    return out


def test_every_operation_has_a_command_with_help() -> None:
    app = build_cli(read_only=False)
    commands = dict(_walk(app))
    for op in operations():
        assert op.cli in commands, op.tool
        cmd = commands[op.cli]
        assert cmd.help and len(cmd.help) > 10, op.tool
        for param in cmd.params:
            if isinstance(param, click.Option) and param.name not in ("help",):
                assert param.help and param.help.strip(), (op.tool, param.name)
    for path, cmd in commands.items():
        assert cmd.help or cmd.short_help, path


def test_aliases_resolve_to_the_same_command(cli: CliFn) -> None:
    ls = cli("--json", "stream", "ls")
    alias = cli("--json", "stream", "list")
    assert ls.exit_code == 0 and alias.exit_code == 0
    assert cli_json(ls)["total"] == cli_json(alias)["total"]


def test_natscli_short_nouns(cli: CliFn) -> None:
    assert cli_json(cli("--json", "str", "ls"))["total"] == cli_json(cli("--json", "stream", "ls"))["total"]
    assert cli("obj", "ls").exit_code == 0


def test_table_and_json_output(cli: CliFn, uniq: str) -> None:
    made = cli("stream", "add", uniq, "--subjects", f"{uniq}.a", "--subjects", f"{uniq}.b",
               "--description", "made by a test")
    assert made.exit_code == 0, made.output
    table = cli("stream", "info", uniq)
    assert table.exit_code == 0
    assert uniq in table.output and "messages" in table.output
    data = cli_json(cli("--json", "stream", "info", uniq))
    assert data["config"]["subjects"] == [f"{uniq}.a", f"{uniq}.b"]
    assert data["config"]["description"] == "made by a test"


def test_errors_exit_non_zero_with_code_and_hint(cli: CliFn) -> None:
    missing = cli("stream", "info", "NO_SUCH_STREAM_X")
    assert missing.exit_code == 1
    assert "stream_not_found" in missing.output and "hint:" in missing.output
    as_json = cli("--json", "stream", "info", "NO_SUCH_STREAM_X")
    assert as_json.exit_code == 1
    assert json.loads(as_json.output)["error"]["code"] == "stream_not_found"
    bad = cli("stream", "info", "bad name")
    assert bad.exit_code == 1 and "invalid_name" in bad.output


def test_destructive_command_refuses_without_terminal_unless_forced(cli: CliFn, uniq: str) -> None:
    assert cli("stream", "add", uniq).exit_code == 0
    refused = cli("stream", "rm", uniq)
    assert refused.exit_code == 1
    assert "--force" in refused.output
    assert cli("--json", "stream", "info", uniq).exit_code == 0  # still there
    forced = cli("--json", "stream", "rm", uniq, "--force")
    assert forced.exit_code == 0, forced.output
    assert cli_json(forced)["done"] is True
    assert cli("stream", "info", uniq).exit_code == 1


def test_read_only_cli_has_no_write_commands(cli: CliFn) -> None:
    app = build_cli(read_only=True)
    paths = {p for p, _ in _walk(app)}
    assert ("stream", "info") in paths
    assert ("stream", "rm") not in paths and ("stream", "add") not in paths
    result = cli("stream", "add", "X", read_only=True)
    assert result.exit_code != 0
