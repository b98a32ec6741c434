"""Skill documents, MCP resources and prompts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from natsop.errors import Conflict
from natsop.registry import operations
from natsop.skill import DOCS, install, read_doc
from tests.conftest import CliFn, mcp_client


def test_skill_md_has_front_matter_and_every_tool() -> None:
    text = read_doc("SKILL.md")
    assert text.startswith("---\nname: nats\ndescription: ")
    tables = {m for m in re.findall(r"^\|\s*`mcp__nats__([a-z_]+)`", text, flags=re.M)}
    registered = {op.tool for op in operations()}
    missing = registered - tables
    assert not missing, f"registered tools missing from SKILL.md's tables: {sorted(missing)}"


@pytest.mark.parametrize("doc", DOCS)
def test_documents_name_only_real_tools_and_commands(doc: str) -> None:
    text = read_doc(doc)
    registered = {op.tool for op in operations()}
    named = set(re.findall(r"mcp__nats__([a-z_]+)", text))
    assert named <= registered, f"{doc} names tools that do not exist: {sorted(named - registered)}"
    paths = {" ".join(op.cli) for op in operations()} | {"serve", "skill install", "skill show"}
    for cmd in re.findall(r"`natsop ([a-z][a-z -]*[a-z])", text):
        words = cmd.split()
        assert any(" ".join(words[:n]) in paths for n in range(1, len(words) + 1)), f"{doc}: `natsop {cmd}`"


_TOOL_SHAPED = re.compile(r"(?<![\w${.-])((?:stream|kv|object|consumer|account|server|event|counter|schedule|backup|"
                          r"audit|publish|batch)_[a-z0-9_]+)(?![\w}-])")


def test_tool_names_in_advice_are_real_tools() -> None:
    """Every tool-shaped word (stream_update, kv_compact, ...) in the documents, the prompts and the
    audit's advice names a registered tool or one of the tools' parameters."""
    import ast
    import inspect

    import natsop.logic.audit_rules
    from natsop.faces.mcp_server import _PROMPTS

    known = {op.tool for op in operations()} | {name for op in operations() for name in op.params.model_fields}
    texts = {doc: read_doc(doc) for doc in DOCS}
    texts["prompts"] = " ".join(text for _title, _args, text in _PROMPTS.values())
    # The audit's advice: the why and do of each Finding(...) (also when first bound to why/do/accept),
    # and each Rule's rationale.
    advice: list[ast.AST] = []
    for node in ast.walk(ast.parse(inspect.getsource(natsop.logic.audit_rules))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("Finding", "Rule"):
            advice.extend(node.args[4:6] if node.func.id == "Finding" else node.args[3:4])
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id in ("why", "do", "accept")
                                                  for t in node.targets):
            advice.append(node.value)
    texts["audit advice"] = " ".join(c.value for part in advice for c in ast.walk(part)
                                     if isinstance(c, ast.Constant) and isinstance(c.value, str))
    assert "stream_update" in texts["audit advice"]
    for where, text in texts.items():
        unknown = set(_TOOL_SHAPED.findall(text)) - known
        assert not unknown, f"{where} names tools that do not exist: {sorted(unknown)}"


def test_install_refuses_to_overwrite_a_changed_copy(tmp_path: Path) -> None:
    target = tmp_path / "skills" / "nats"
    written = install(target)
    assert sorted(p.name for p in written) == sorted(DOCS)
    install(target)  # unchanged copies are refreshed silently
    (target / "SKILL.md").write_text("my own notes")
    with pytest.raises(Conflict):
        install(target)
    install(target, force=True)
    assert (target / "SKILL.md").read_text() == read_doc("SKILL.md")


def test_cli_skill_commands(cli: CliFn, tmp_path: Path) -> None:
    shown = cli("skill", "show", "auth.md")
    assert shown.exit_code == 0 and "Auth callout" in shown.output
    done = cli("skill", "install", "--dir", str(tmp_path / "s"))
    assert done.exit_code == 0 and "SKILL.md" in done.output


async def test_resources_and_prompts_over_mcp(server_env: dict[str, str], uniq: str) -> None:
    async with mcp_client(server_env) as client:
        made = await client.call_tool("stream_add", {"stream": uniq})
        assert not made.is_error
        resources = {str(r.uri) for r in (await client.list_resources()).resources}
        assert {"nats://skill/SKILL.md", "nats://skill/reference.md", "nats://skill/auth.md", "nats://streams"} <= resources
        doc = await client.read_resource("nats://skill/reference.md")
        assert "sync_interval" in getattr(doc.contents[0], "text", "")
        streams = json.loads(getattr((await client.read_resource("nats://streams")).contents[0], "text", "{}"))
        assert streams["total"] >= 1 and len(streams["streams"]) <= 50  # bounded like stream_list
        templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
        assert "nats://stream/{name}" in templates
        one = await client.read_resource(f"nats://stream/{uniq}")
        assert f'"name": "{uniq}"' in getattr(one.contents[0], "text", "")
        prompts = {p.name for p in (await client.list_prompts()).prompts}
        assert {"design_subjects", "review_config", "plan_event_sourcing", "investigate_consumer_lag"} <= prompts
        prompt = await client.get_prompt("investigate_consumer_lag", {"stream": uniq, "consumer": "worker"})
        assert "worker" in getattr(prompt.messages[0].content, "text", "")
