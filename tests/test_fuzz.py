"""Property-based fuzzing of every registered tool through one real MCP session (stdio).

Arguments come from each tool's input schema, mixed with hostile values: wrong types, huge
numbers, empty, unicode and over-long names, wildcards where none belong, oversized
payloads, path traversal in file parameters, unknown parameters, missing required ones,
and random confirmations for destructive tools. Whatever arrives:

- the server process stays up and keeps answering;
- a failure is an `isError` result whose text is an error with a code, never a traceback
  or an internal error; a success carries structured content matching the output schema;
- every call returns within its time limit (and quickly: waits are drawn short);
- a destructive tool acts only when `confirm` equals the `confirm_with` its dry run gives;
- no file appears outside the files directory.

CI runs a few examples per tool; `NATSOP_FUZZ_EXAMPLES=500` runs a long campaign.
The MCP client lives in an event loop on a background thread, so that hypothesis drives
plain synchronous tests.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any, TypeVar

import jsonschema
import nats
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client
from mcp_types import CallToolResult, Tool
from nats.aio.client import Client as NATS

from natsop import EmbeddedServer, Toolkit
from natsop.registry import Operation, operations
from tests.conftest import env_for
from tests.harness import NAMES, STREAM, clean_env, mcp_stdio, run_cli, seed_world, snapshot

EXAMPLES = int(os.environ.get("NATSOP_FUZZ_EXAMPLES", "10"))
SENTINEL = "escape-natsop-fuzz"
T = TypeVar("T")

NAME_POOL = [STREAM, NAMES["bucket"], NAMES["consumer"], NAMES["key"], NAMES["name"], "FUZZ", "fuzz", "a", "A-b_c",
             "", " ", "*", ">", "a.b", "a.*", "a.>", "..", "../x", "名前", "a\x00b", "x" * 300, "$JS.API.>",
             "_INBOX.x", "KV_hard", "OBJ_hard", "a/b", "-1", "null", "[/b]"]
SUBJECT_POOL = ["hard.one", "hard.two", "hard.>", "hard.*", "fuzz.a", "fuzz.b.c", ">", "*", "", "a..b", " a", "a b",
                "a.", ".a", "$SYS.REQ.SERVER.PING", "$JS.API.STREAM.DELETE.HARD", "_INBOX.x", "a.\t.b", "名.前",
                "$KV.hard.k1", "x" * 5000, "a.>.b", "[/x].:ok:"]
PATH_POOL = ["f1", "sub/f2", f"../{SENTINEL}", f"../../{SENTINEL}", f"/tmp/{SENTINEL}", f"~/{SENTINEL}", "./", "",
             NAMES["directory"], "a\x00b", "/etc/passwd", "/", "..", "backups", "sub/../../" + SENTINEL]
PAYLOAD_POOL = ["", "[/bold] :AB: [red]x", "hello", "名前 ✓", "\x00\x01", "x" * 70_000, "y" * (1024 * 1024 + 1), "aGVsbG8=", "not base64!"]
HOSTILE: list[Any] = [None, True, False, -1, 0, 2**63, -(2**63), 10**30, 1.5, -0.0, 1e308, "", "x" * 10_000, [],
                      {}, [1, "a", None], {"a": {"b": [1]}}, "1", "true", "*", ">"]
PATH_FIELDS = {"file", "directory", "config_file"}
SUBJECT_FIELDS = {"subject", "source", "destination", "target", "filter", "filter_subject", "deliver_subject",
                  "reply", "subjects", "filter_subjects", "deliver_group", "queue", "last_by_subj"}
PAYLOAD_FIELDS = {"payload", "value", "data", "description"}
# Waits are drawn short so that a sweep of every tool stays quick; out-of-range values are still drawn.
WAIT_MAX_S = 0.2
COUNT_MAX = 3


class McpThread:
    """One MCP client session held by an event loop on a background thread."""

    def __init__(self, env: dict[str, str], args: tuple[str, ...], cwd: Path, errlog: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="mcp-fuzz", daemon=True)
        self.thread.start()
        self.client: Client | None = None
        self.witness: NATS | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._errlog = open(errlog, "w")  # noqa: SIM115 - closed in close()
        self._holder = asyncio.run_coroutine_threadsafe(self._hold(env, args, cwd), self.loop)
        deadline = time.monotonic() + 60
        while not self._ready.wait(0.05):
            if self._holder.done() or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("the MCP session did not start")

    async def _hold(self, env: dict[str, str], args: tuple[str, ...], cwd: Path) -> None:
        self._stop = asyncio.Event()
        async with mcp_stdio(env, *args, errlog=self._errlog, cwd=cwd) as client:
            self.client = client
            self._ready.set()
            await self._stop.wait()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def call(self, tool: str, args: dict[str, Any], timeout_s: float) -> CallToolResult:
        assert self.client is not None
        return self.run(self.client.call_tool(tool, args), timeout_s)

    def snapshot(self) -> dict[str, Any]:
        """The account's streams and durable consumers, read with a connection of our own."""
        return self.run(self._snapshot(), 30)

    async def _snapshot(self) -> dict[str, Any]:
        assert self.witness is not None
        return await snapshot(self.witness)

    def close(self) -> None:
        if self.witness is not None:
            self.run(self.witness.close(), 10)
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        try:
            self._holder.result(30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()
            self._errlog.close()


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz-sandbox")
    (root / "cwd" / "files").mkdir(parents=True)
    return root


@pytest.fixture(scope="module")
def fuzz_server(sandbox: Path) -> Iterator[EmbeddedServer]:
    srv = EmbeddedServer(store_dir=sandbox / "store")
    srv.start_sync()
    try:
        asyncio.run(_seed(srv, sandbox / "cwd" / "files"))
        yield srv
    finally:
        srv.stop_sync()


async def _seed(srv: EmbeddedServer, files: Path) -> None:
    async with Toolkit.for_server(srv, files_dir=files) as tk:
        await seed_world(tk, [f"hard.{'one' if i % 2 else 'two'}" for i in range(5)], allow_msg_counter=False)


@pytest.fixture(scope="module")
def session(fuzz_server: EmbeddedServer, sandbox: Path) -> Iterator[McpThread]:
    env = clean_env(sandbox / "config", **env_for(fuzz_server, sandbox / "config"))
    mcp = McpThread(env, ("--files-dir", str(sandbox / "cwd" / "files"), "serve"), sandbox / "cwd",
                    sandbox / "serve-stderr.log")
    mcp.witness = mcp.run(nats.connect(fuzz_server.url, user=fuzz_server.app.user,
                                       password=fuzz_server.app.password), 30)
    try:
        yield mcp
    finally:
        mcp.close()
    stderr = (sandbox / "serve-stderr.log").read_text(errors="replace")
    assert "Traceback" not in stderr, stderr[-3000:]


@pytest.fixture(scope="module")
def tools(session: McpThread) -> dict[str, Tool]:
    assert session.client is not None
    listed = session.run(session.client.list_tools(), 30)
    return {t.name: t for t in listed.tools}


# -- drawing arguments from a JSON schema


def _resolve(root: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = root["$defs"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _is_wait(name: str) -> bool:
    return "timeout" in name or name in ("time_budget_s", "for_s") or name.endswith("wait_s")


def _number(data: st.DataObject, schema: dict[str, Any], name: str, integer: bool) -> Any:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    if _is_wait(name) or name == "count":
        cap = COUNT_MAX if name == "count" else WAIT_MAX_S
        base = low if low is not None else 0
        high = min(high, max(base, cap)) if high is not None else max(base, cap)
    if integer:
        lo = math.ceil(low) if low is not None else -(2**31)
        hi = math.floor(high) if high is not None else 2**31
        if hi > lo + 1000:
            return data.draw(st.one_of(st.integers(lo, min(hi, lo + 20)), st.sampled_from([lo, hi]),
                                       st.integers(lo, hi)))
        return data.draw(st.integers(lo, hi))
    lo_f = float(low) if low is not None else -1e6
    hi_f = float(high) if high is not None else 1e6
    return data.draw(st.floats(lo_f, hi_f, allow_nan=False, allow_infinity=False,
                               exclude_min="exclusiveMinimum" in schema, exclude_max="exclusiveMaximum" in schema))


def _string(data: st.DataObject, schema: dict[str, Any], name: str) -> str:
    if schema.get("format") == "date-time":
        return data.draw(st.one_of(st.sampled_from(["2099-01-01T00:00:00Z", "2000-01-01T00:00:00Z", "not a time",
                                                    "2099-13-40T99:99:99Z", "1970-01-01T00:00:00+14:00"]),
                                   st.datetimes().map(lambda d: d.isoformat() + "Z")))
    if name in PATH_FIELDS:
        pool = PATH_POOL
    elif name in SUBJECT_FIELDS:
        pool = SUBJECT_POOL
    elif name in PAYLOAD_FIELDS:
        pool = PAYLOAD_POOL
    else:
        pool = NAME_POOL
    return data.draw(st.one_of(st.sampled_from(pool), st.sampled_from(pool), st.text(max_size=40)))


def draw_value(data: st.DataObject, root: dict[str, Any], schema: dict[str, Any], name: str, depth: int = 0) -> Any:
    if data.draw(st.integers(0, 9), label=f"{name}: hostile?") == 0:
        return data.draw(st.sampled_from(HOSTILE))
    schema = _resolve(root, schema)
    if "anyOf" in schema:
        options = [_resolve(root, s) for s in schema["anyOf"]]
        return draw_value(data, root, data.draw(st.sampled_from(options)), name, depth)
    if "enum" in schema:
        return data.draw(st.one_of(st.sampled_from(schema["enum"]), st.text(max_size=10)))
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if kind == "null":
        return None
    if kind == "boolean":
        return data.draw(st.booleans())
    if kind in ("integer", "number"):
        return _number(data, schema, name, kind == "integer")
    if kind == "string":
        return _string(data, schema, name)
    if kind == "array":
        items = schema.get("items", {})
        size = data.draw(st.sampled_from([0, 1, 2, 3] + ([schema["maxItems"] + 1] if "maxItems" in schema else [])))
        size = min(size, 4) if depth else size
        return [draw_value(data, root, items, name, depth + 1) for _ in range(size)]
    if kind == "object":
        return draw_object(data, root, schema, depth + 1)
    return data.draw(st.sampled_from(HOSTILE))


def draw_object(data: st.DataObject, root: dict[str, Any], schema: dict[str, Any], depth: int = 0) -> dict[str, Any]:
    props: dict[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", []))
    out: dict[str, Any] = {}
    for key, prop in props.items():
        if key == "account_name" and data.draw(st.integers(0, 9)) > 0:
            continue  # mostly the default account: other names are refused before anything happens
        if key in required:
            keep = data.draw(st.integers(0, 19)) > 0
        else:  # waits are always given (drawn short), so that no call sits out a default of seconds
            keep = _is_wait(key) or data.draw(st.integers(0, 9)) < 3
        if keep:
            out[key] = draw_value(data, root, prop, key, depth)
    if not props and schema.get("additionalProperties") not in (False, None):
        out.update(data.draw(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3)))
    if depth == 0 and data.draw(st.integers(0, 19)) == 0:
        out["bogus_parameter"] = 1
    return out


# -- the property


def _check(tool: Tool, op: Operation, args: dict[str, Any], result: CallToolResult, took: float) -> None:
    assert took <= op.timeout_s, (op.tool, took)
    if result.is_error:
        assert result.content, (op.tool, args)
        text = getattr(result.content[0], "text", "")
        assert text.startswith("error ["), (op.tool, args, text)
        for bad in ("Traceback", "[internal]", "natsop bug", 'File "'):
            assert bad not in text, (op.tool, args, text)
        return
    assert result.structured_content is not None, (op.tool, args)
    assert tool.output_schema is not None
    jsonschema.validate(result.structured_content, tool.output_schema)


# Destructive tools that ask for confirmation only when the call would remove data: without it they may
# still change settings (stream_update with a harmless change), never messages, streams or consumers.
CONFIRMS_ONLY_LOSSES = frozenset({"stream_update"})


def _fuzz_call(session: McpThread, tool: Tool, op: Operation, args: dict[str, Any]) -> None:
    limit = min(op.timeout_s, 60) + 10
    confirm = args.get("confirm")
    expected: str | None = None
    if op.destructive and isinstance(confirm, str) and confirm:
        dry = session.call(op.tool, {k: v for k, v in args.items() if k != "confirm"}, limit)
        if not dry.is_error and dry.structured_content is not None:
            expected = dry.structured_content.get("confirm_with")
    # Without the right confirmation a destructive tool may create (a restore into nothing) or
    # report a no-op, but nothing that existed may change.
    unconfirmed = op.destructive and not (isinstance(confirm, str) and confirm and confirm == expected)
    before = session.snapshot() if unconfirmed else {}
    started = time.monotonic()
    try:
        result = session.call(op.tool, args, limit)
    except FutureTimeout:
        pytest.fail(f"{op.tool} did not return within {limit:g}s for {args!r:.300}")
    took = time.monotonic() - started
    _check(tool, op, args, result, took)
    if unconfirmed:
        after = session.snapshot()
        if op.tool in CONFIRMS_ONLY_LOSSES:  # a harmless change applies at once; losing messages does not
            before = {name: {k: v for k, v in s.items() if k != "config"} for name, s in before.items()}
            after = {name: {k: v for k, v in s.items() if k != "config"} for name, s in after.items()}
        changed = sorted(name for name in before if after.get(name) != before[name])
        assert changed == [], (op.tool, args, expected, changed)
    mismatched = isinstance(confirm, str) and confirm and expected is not None and confirm != expected
    if op.destructive and result.is_error and mismatched:
        assert "[confirmation_mismatch]" in getattr(result.content[0], "text", ""), (op.tool, args)


HOSTILE_TEXT = "[/bold] :AB: [red]x[/red] \x1b[31m"


def test_hostile_text_is_shown_literally(session: McpThread, fuzz_server: EmbeddedServer, sandbox: Path) -> None:
    """Values that look like rich markup, emoji codes or escape sequences are data, in MCP text and CLI tables.

    It runs before the fuzzing below, on the world as seeded."""
    put = session.call("kv_put", {"bucket": NAMES["bucket"], "key": "hostile", "value": HOSTILE_TEXT}, 30)
    assert not put.is_error, put.content
    got = session.call("kv_get", {"bucket": NAMES["bucket"], "key": "hostile"}, 30)
    assert not got.is_error, got.content
    assert "[/bold] :AB: [red]x[/red]" in getattr(got.content[0], "text", "")
    env = clean_env(sandbox / "config", **env_for(fuzz_server, sandbox / "config"))
    table = run_cli(env, "kv", "get", NAMES["bucket"], "hostile")
    assert table.exit_code == 0, table.output
    assert "[/bold] :AB: [red]x[/red]" in table.stdout


@pytest.mark.parametrize("op", operations(), ids=lambda op: op.tool)
def test_fuzz_tool(op: Operation, session: McpThread, tools: dict[str, Tool], sandbox: Path) -> None:
    tool = tools[op.tool]
    root = tool.input_schema

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=EXAMPLES <= 10,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.function_scoped_fixture])
    @given(data=st.data())
    def fuzz(data: st.DataObject) -> None:
        args = draw_object(data, root, root)
        if op.destructive and data.draw(st.booleans()):
            args["confirm"] = data.draw(st.one_of(st.sampled_from(NAME_POOL), st.text(max_size=12)))
        _fuzz_call(session, tool, op, args)

    fuzz()
    # Still up and answering, and nothing escaped the files directory.
    alive = session.call("stream_info", {"stream": STREAM}, 30)
    assert not alive.is_error or "[stream_not_found]" in getattr(alive.content[0], "text", "")
    escaped = [p for p in (sandbox, sandbox / "cwd", Path("/tmp"), Path.home()) if (p / SENTINEL).exists()]
    assert escaped == []
    assert sorted(p.name for p in (sandbox / "cwd").iterdir()) == ["files"]



# Numbers that are rightly unbounded: the audit's thresholds are the caller's own, and counters
# hold integers of any size (ADR-49).
_UNBOUNDED = {"audit.thresholds{}", "counter_add.increment"}


def _unbounded_numbers(schema: dict[str, Any], defs: dict[str, Any], path: str) -> Iterator[str]:
    if "$ref" in schema:
        yield from _unbounded_numbers(defs[schema["$ref"].split("/")[-1]], defs, path)
        return
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key, []):
            yield from _unbounded_numbers(sub, defs, path)
    if schema.get("type") in ("integer", "number") and "maximum" not in schema and "exclusiveMaximum" not in schema:
        yield path
    for name, sub in (schema.get("properties") or {}).items():
        yield from _unbounded_numbers(sub, defs, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _unbounded_numbers(schema["items"], defs, f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _unbounded_numbers(schema["additionalProperties"], defs, f"{path}{{}}")


def test_every_number_a_tool_takes_has_an_upper_bound() -> None:
    """A number beyond what the server's field holds is refused by name, before anything is sent,
    not by the server's JSON decoder (or, for keep=10**30, echoed back in a dry run)."""
    found = set()
    for op in operations():
        schema = op.params.model_json_schema()
        found |= set(_unbounded_numbers(schema, schema.get("$defs", {}), op.tool))
    assert found == _UNBOUNDED, sorted(found - _UNBOUNDED)


async def test_numbers_beyond_the_servers_fields_are_refused_by_name(toolkit: Toolkit, uniq: str) -> None:
    from natsop.errors import UserError

    await toolkit.call("stream_add", stream=uniq)
    for args, field in (({"keep": 10**30}, "keep"), ({"seq": 2**64 + 5, "confirm": uniq}, "seq")):
        with pytest.raises(UserError) as refused:
            await toolkit.call("stream_purge", stream=uniq, **args)
        assert refused.value.code == "invalid_arguments" and field in refused.value.message
    with pytest.raises(UserError) as refused:
        await toolkit.call("stream_update", stream=uniq, max_age_s=1e12)
    assert "max_age_s" in refused.value.message
