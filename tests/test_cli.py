"""The CLI face: generated commands, help, --json, errors and confirmation."""

from __future__ import annotations

import json
import re

import click

from natsop import EmbeddedServer
from natsop.faces.cli import build_cli
from natsop.registry import operations
from tests.conftest import CliFn, cli_json, mcp_client


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


def test_natscli_aliases_of_nouns_and_verbs(cli: CliFn, uniq: str) -> None:
    assert cli("stream", "add", uniq).exit_code == 0
    assert cli("consumer", "add", uniq, "c1").exit_code == 0
    info = cli_json(cli("--json", "stream", "info", uniq))["config"]
    for noun in ("stream", "str", "st", "ms", "s"):
        for verb in ("info", "nfo", "i"):
            out = cli("--json", noun, verb, uniq)
            assert out.exit_code == 0, (noun, verb, out.output)
            assert cli_json(out)["config"] == info
    names = [c["name"] for c in cli_json(cli("--json", "consumer", "ls", uniq))["consumers"]]
    for noun in ("consumer", "con", "obs", "c"):
        assert [c["name"] for c in cli_json(cli("--json", noun, "l", uniq))["consumers"]] == names == ["c1"]
        assert cli_json(cli("--json", noun, "nfo", uniq, "c1"))["name"] == "c1"
    assert cli("a", "nfo").exit_code == 0


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


def test_refused_destructive_command_prints_one_json_document(cli: CliFn, uniq: str) -> None:
    assert cli("stream", "add", uniq).exit_code == 0
    for argv in (("--json", "stream", "rm", uniq), ("stream", "rm", uniq, "--json")):
        refused = cli(*argv)
        assert refused.exit_code == 1
        doc = json.loads(refused.stdout)  # the whole of stdout is one document
        assert doc["error"]["code"] == "confirmation_required" and "--force" in doc["error"]["hint"]
        dry_run = doc["error"]["details"]["dry_run"]
        assert dry_run["done"] is False and dry_run["confirm_with"] == uniq
    assert cli("stream", "info", uniq).exit_code == 0  # still there


def test_global_options_also_follow_the_verb(cli: CliFn, server: EmbeddedServer, uniq: str) -> None:
    assert cli("stream", "add", uniq).exit_code == 0
    listed = cli("stream", "ls", "--subject", uniq, "--json")  # one page of a shared server holds only some
    assert listed.exit_code == 0, listed.output
    assert uniq in {s["name"] for s in cli_json(listed)["streams"]}
    assert cli_json(cli("stream", "info", uniq, "--json"))["config"]["name"] == uniq
    # Given in both places, the one after the command wins.
    nowhere = "nats://127.0.0.1:1"
    won = cli("-s", nowhere, "stream", "info", uniq, "-s", server.url, "--json")
    assert won.exit_code == 0, won.output
    lost = cli("-s", server.url, "stream", "info", uniq, "--server", nowhere, "--json")
    assert lost.exit_code == 1 and json.loads(lost.stdout)["error"]["code"] == "not_connected"
    # --read-only after the verb refuses a write.
    refused = cli("stream", "add", f"{uniq}_2", "--read-only")
    assert refused.exit_code == 1 and "read_only" in refused.output
    assert cli("stream", "info", f"{uniq}_2").exit_code == 1
    for option, code in (("--account", "unknown_account"), ("--context", "unknown_context"),
                         ("--creds", "bad_creds_file")):
        wrong = cli("kv", "ls", option, "/no/such/thing", "--json")
        assert wrong.exit_code == 1 and json.loads(wrong.stdout)["error"]["code"] == code, (option, wrong.output)
    # A command with a parameter of the same name keeps its own.
    commands = dict(_walk(build_cli(read_only=False)))
    assert [p.name for p in commands[("account", "report", "connections")].params].count("account") == 1


async def test_serve_read_only_after_the_verb(server_env: dict[str, str]) -> None:
    async with mcp_client(server_env, "serve", "--read-only") as client:
        tools = {t.name for t in (await client.list_tools()).tools}
    assert "stream_info" in tools
    assert "stream_add" not in tools and "kv_put" not in tools


def test_help_says_commands_not_mcp_tools() -> None:
    ops = operations()
    tools = "|".join(sorted((o.tool for o in ops), key=len, reverse=True))
    mcp_word = re.compile(rf"(?<![\w-])({tools})(?![\w-])")
    texts: dict[tuple[str, ...], list[str]] = {}
    for path, cmd in _walk(build_cli(read_only=False)):
        texts[path] = [cmd.help or "", cmd.short_help or "", cmd.epilog or ""]
        texts[path] += [p.help or "" for p in cmd.params if isinstance(p, click.Option)]
    for path, parts in texts.items():
        for text in parts:
            # One-word tool names (`request`, `audit`) are English words too: only backticked ones are tools.
            for found in mcp_word.finditer(text):
                assert "_" not in found[1] and text[found.start() - 1:found.start()] != "`", (path, text)
    audit = " ".join(texts[("audit",)])
    assert "natsop audit-rules" in audit and "--skip ID" in audit
    assert "Pass --ack" in " ".join(texts[("consumer", "next")])
    assert "natsop kv purge removes it" in " ".join(texts[("kv", "del")])


def test_kv_rm_with_a_key_deletes_the_key(cli: CliFn, uniq: str) -> None:
    bucket = uniq.lower()
    assert cli("kv", "add", bucket).exit_code == 0
    assert cli("kv", "put", bucket, "k1", "v1").exit_code == 0
    assert cli("kv", "put", bucket, "k2", "v2").exit_code == 0
    gone = cli("--json", "kv", "rm", bucket, "k1")
    assert gone.exit_code == 0, gone.output
    assert cli_json(gone)["operation"] == "DEL"
    assert "key_deleted" in cli("kv", "get", bucket, "k1").output
    assert cli_json(cli("--json", "kv", "get", bucket, "k2"))["value"]["data"] == "v2"
    stray = cli("kv", "rm", bucket, "--revision", "3")
    assert stray.exit_code == 1 and "--revision does not apply" in stray.output
    refused = cli("kv", "rm", bucket)  # the bucket: still asks
    assert refused.exit_code == 1 and "confirmation_required" in refused.output
    assert cli("kv", "info", bucket).exit_code == 0
    assert cli("kv", "rm", bucket, "--force").exit_code == 0
    assert cli("kv", "info", bucket).exit_code == 1
