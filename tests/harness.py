"""Helpers for the hardening tests: clean environments, the CLI and MCP faces with any
environment, natscli contexts, and minimal arguments for any registered tool.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any

from click.testing import CliRunner, Result
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from nats.aio.client import Client as NATS

from natsop.faces.cli import build_cli
from natsop.registry import Operation

# Values for the parameters most tools share, naming the objects `seed_objects` creates.
STREAM = "HARD"
NAMES: dict[str, Any] = {
    "stream": STREAM,
    "consumer": "HARDC",
    "bucket": "hard",
    "key": "k1",
    "name": "obj1",
    "subject": "hard.one",
    "subjects": ["hard.>"],
    "source": "hard.*",
    "destination": "out.{{wildcard(1)}}",
    "target": "hard.two",
    "target_bucket": "hard",
    "target_name": "obj1",
    "directory": "backups/hard",
    "type": "hard.happened",
    "value": "v",
    "data": "d",
    "payload": "p",
    "at": "2099-01-01T00:00:00Z",
    "messages": [{"subject": "hard.one", "payload": "x"}],
    "increment": 1,
    "revision": 1,
    "seq": 1,
}
# Bounds that keep a sweep of every tool quick: waits and scans as short as each tool allows.
FAST: dict[str, float] = {
    "timeout_s": 0.1,
    "time_budget_s": 0.1,
    "expected": 1,
    "iterations": 1,
    "stall_timeout_s": 1,
    "sample_streams": 1,
    "sample_messages": 1,
    "max_scan": 100,
    "max_entries": 5,
    "max_messages": 5,
}


def clean_env(config_home: Path, **extra: str) -> dict[str, str]:
    """os.environ without any NATS or natsop setting, with its own natscli config home, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "NATSOP_"))}
    env["XDG_CONFIG_HOME"] = str(config_home)
    env.update(extra)
    return env


def write_context(config_home: Path, name: str, **fields: Any) -> Path:
    """A natscli context file (ADR-21 layout)."""
    cdir = config_home / "nats" / "context"
    cdir.mkdir(parents=True, exist_ok=True)
    path = cdir / f"{name}.json"
    path.write_text(json.dumps({k: v for k, v in fields.items() if v is not None}))
    path.chmod(0o600)
    return path


def run_cli(env: dict[str, str], *args: str, files_dir: Path | None = None, read_only: bool | None = False) -> Result:
    """The CLI in-process with exactly `env` as its NATS/natsop environment."""
    overlay: dict[str, str | None] = {k: None for k in os.environ if k.startswith(("NATS_", "NATSOP_"))}
    overlay.update(env)
    prefix = ["--files-dir", str(files_dir)] if files_dir is not None else []
    saved = {k: os.environ.get(k) for k in overlay}
    # build_cli reads NATSOP_READ_ONLY when read_only is None: give it the environment it will run in.
    try:
        for k, v in overlay.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        app = build_cli(read_only=read_only)
    finally:
        for k, old in saved.items():
            if old is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = old
    return CliRunner().invoke(app, [*prefix, *args], env=overlay, catch_exceptions=False)


def stdout_json(result: Result) -> Any:
    return json.loads(result.stdout)


@asynccontextmanager
async def mcp_stdio(env: dict[str, str], *args: str, errlog: IO[str] | None = None,
                    cwd: str | os.PathLike[str] | None = None) -> AsyncIterator[Client]:
    """A real MCP client over stdio to `python -m natsop <args>` (default `serve`); stderr to `errlog`."""
    params = StdioServerParameters(command=sys.executable, args=["-m", "natsop", *(args or ("serve",))],
                                   env=env, cwd=cwd)
    transport = stdio_client(params, errlog=errlog) if errlog is not None else stdio_client(params)
    async with Client(transport, read_timeout_seconds=60) as client:
        yield client


def _resolve(schema: dict[str, Any], prop: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in prop:
        return _resolve(schema, schema["$defs"][prop["$ref"].rsplit("/", 1)[1]])
    if "anyOf" in prop:
        options = [p for p in prop["anyOf"] if p.get("type") != "null"]
        return _resolve(schema, options[0]) if options else prop
    return prop


def _value(schema: dict[str, Any], name: str, prop: dict[str, Any]) -> Any:
    if name in NAMES:
        return NAMES[name]
    prop = _resolve(schema, prop)
    if "enum" in prop:
        return prop["enum"][0]
    if "const" in prop:
        return prop["const"]
    kind = prop.get("type")
    if kind == "integer":
        return int(prop.get("minimum", 1))
    if kind == "number":
        return float(prop.get("minimum", 1))
    if kind == "boolean":
        return False
    if kind == "array":
        return [_value(schema, name, prop.get("items", {"type": "string"}))]
    if kind == "object":
        props = prop.get("properties", {})
        return {k: _value(schema, k, p) for k, p in props.items() if k in prop.get("required", [])}
    return "x"


# Optional parameters without which some tools have nothing to do.
USEFUL = ("destination", "seq")


def minimal_args(op: Operation, **overrides: Any) -> dict[str, Any]:
    """Arguments for `op`: its required parameters (named after NAMES where they can be), short waits."""
    schema = op.params.model_json_schema()
    props: dict[str, Any] = schema.get("properties", {})
    args = {name: _value(schema, name, props[name]) for name in schema.get("required", [])}
    args |= {name: NAMES[name] for name in USEFUL if name in props}
    for name, value in FAST.items():
        if name in props:
            prop = _resolve(schema, props[name])
            low = prop.get("minimum", prop.get("exclusiveMinimum", value))
            args[name] = max(value, low) if isinstance(low, (int, float)) else value
    args.update(overrides)
    return args


def cli_args(op: Operation, args: dict[str, Any]) -> list[str]:
    """The command line for `op` with `args` (positionals in order, then --options)."""
    out = list(op.cli)
    fields = op.params.model_fields
    for name in op.args:
        if name in args:
            value = args[name]
            out += [str(v) for v in value] if isinstance(value, list) else [_cli_scalar(value)]
    for name, value in args.items():
        if name in op.args or name in ("account_name", "confirm"):
            continue
        if name not in fields:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            out.append(flag if value else "--no-" + name.replace("_", "-"))
        elif isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
            for v in value:
                out += [flag, str(v)]
        elif isinstance(value, (dict, list)):
            out += [flag, json.dumps(value)]
        else:
            out += [flag, _cli_scalar(value)]
    return out


def _cli_scalar(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


async def snapshot(nc: NATS) -> dict[str, Any]:
    """Streams with their state and durable consumers with their delivery state (ephemerals left out)."""
    async def api(subject: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        msg = await nc.request(subject, json.dumps(body or {}).encode(), timeout=5)
        return dict(json.loads(msg.data))

    out: dict[str, Any] = {}
    for info in (await api("$JS.API.STREAM.LIST")).get("streams") or []:
        state = {k: v for k, v in info["state"].items() if k != "consumer_count"}
        config = {k: v for k, v in info["config"].items() if k != "metadata"}
        consumers = {}
        for c in (await api(f"$JS.API.CONSUMER.LIST.{info['config']['name']}")).get("consumers") or []:
            if c["config"].get("durable_name"):
                consumers[c["name"]] = {"config": c["config"], "delivered": c["delivered"]["stream_seq"],
                                        "ack_floor": c["ack_floor"]["stream_seq"], "pending": c["num_pending"],
                                        "ack_pending": c["num_ack_pending"], "paused": c.get("paused", False)}
        out[info["config"]["name"]] = {"config": config, "state": state, "consumers": consumers}
    return out


def stop_process(proc: subprocess.Popen[Any], grace_s: float = 10) -> None:
    """Ask a child process to stop, and kill it if it has not within `grace_s`."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def await_interest(monitor_url: str, subject: str, within_s: float = 20) -> None:
    """Wait until the server has a subscription matching `subject` (its /subsz test), e.g. one a tool made."""
    url = f"{monitor_url}/subsz?subs=1&test={urllib.parse.quote(subject)}"
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
        if json.loads(body).get("total"):
            return
        assert asyncio.get_running_loop().time() < deadline, f"no subscription for {subject} within {within_s}s"
        await asyncio.sleep(0.02)


def unanswered(nc: Any, monkeypatch: Any, marker: str, which: range) -> list[str]:
    """Leave unanswered the requests whose subject holds `marker` and whose number (from 1) is in `which`.

    They go to a subject nobody serves, so the real server answers them with a 503 status, as
    it does when a new stream or consumer has not yet made its interest known to this server
    (a cluster). nats-py's request() publishes through `publish` too. Returns every subject
    sent that holds `marker`.
    """
    sent: list[str] = []
    real_publish = nc.publish

    async def publish(subject: str, payload: bytes = b"", reply: str = "", headers: Any = None) -> None:
        if marker in subject:
            sent.append(subject)
            if len(sent) in which:
                subject = "_natsop_test.nobody_home"
        await real_publish(subject, payload, reply=reply, headers=headers)

    monkeypatch.setattr(nc, "publish", publish)
    return sent


async def seed_world(tk: Any, subjects: list[str], **stream_config: Any) -> None:
    """The objects the NAMES point at: stream STREAM with a message on each of `subjects`, its
    consumer, a KV bucket with a key, an object bucket with an object, and a stream backup."""
    await tk.call("stream_add", stream=STREAM, subjects=["hard.>"], **stream_config)
    for i, subject in enumerate(subjects):
        await tk.call("publish", subject=subject, payload=f"m{i}", jetstream=True)
    await tk.call("consumer_add", stream=STREAM, consumer=NAMES["consumer"])
    await tk.call("kv_add", bucket=NAMES["bucket"], history=3)
    await tk.call("kv_put", bucket=NAMES["bucket"], key=NAMES["key"], value="v")
    await tk.call("object_add", bucket=NAMES["bucket"])
    await tk.call("object_put", bucket=NAMES["bucket"], name=NAMES["name"], data="body")
    await tk.call("stream_backup", stream=STREAM, directory=NAMES["directory"])
