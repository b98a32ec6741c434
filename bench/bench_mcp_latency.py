"""What does a tool call through natsop's MCP server cost, over doing the same with nats-py?

Against one embedded nats-server, each operation (server_info, stream_info,
stream_get, kv_get, publish) is timed four ways, one call at a time:

- nats-py: the same request made directly in this process (the floor);
- toolkit: natsop's operations layer in this process (`Toolkit.call`): validation,
  the requests the operation makes, the result model;
- mcp: a real MCP client (`mcp.Client` over stdio) calling `python -m natsop serve`;
- mcp noop: the same client calling a bare SDK server whose tool does nothing
  (bench/_hello_server.py): what the stdio transport and the SDK cost on their own.

The layers are measured in interleaved rounds so that load from other processes
falls on all of them alike. Reported per operation: median and p95 in ms, the
overhead mcp - nats-py (target: <= 0.8 ms median) and the ratio, the requests each
call sends (counted on the connections), and how the overhead splits into natsop's
operations layer (toolkit - nats-py) and the MCP layer (mcp - toolkit: SDK, stdio, JSON, the text rendering).
With --profile, the natsop server runs under cProfile for a further series of calls
and the report says where its CPU time goes, by package and by function.

    python bench/bench_mcp_latency.py [--calls 200] [--warmup 20] [--rounds 4] [--profile] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pstats
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
from mcp import Client, StdioServerParameters
from nats.aio.client import Client as NATS

from natsop import EmbeddedServer, Toolkit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import BENCH_DIR, log, natsop_env, ratio, summary, time_calls, write_result

TARGET_MS = 0.8
OPS = ("server_info", "stream_info", "stream_get", "kv_get", "publish")
LAYERS = ("nats_py", "toolkit", "mcp")
STREAM, BUCKET, KEY = "LAT", "LATKV", "k"
PAYLOAD = "x" * 16

Call = Callable[[], Awaitable[Any]]


def tool_args() -> dict[str, dict[str, Any]]:
    """The arguments each tool is called with (the same for toolkit and MCP)."""
    return {
        "server_info": {},
        "stream_info": {"stream": STREAM},
        "stream_get": {"stream": STREAM, "seq": 1},
        "kv_get": {"bucket": BUCKET, "key": KEY},
        "publish": {"subject": f"{STREAM.lower()}.pub", "payload": PAYLOAD},
    }


async def prepare(tk: Toolkit) -> None:
    await tk.call("stream_add", stream=STREAM, subjects=[f"{STREAM.lower()}.>"], max_msgs=100_000)
    await tk.call("publish", subject=f"{STREAM.lower()}.first", payload=PAYLOAD)
    await tk.call("kv_add", bucket=BUCKET)
    await tk.call("kv_put", bucket=BUCKET, key=KEY, value="v" * 16)


async def floor_calls(nc: NATS, sys_nc: NATS) -> dict[str, Call]:
    """The same operations done directly with nats-py: the floor natsop is compared against."""
    js = nc.jetstream()
    kv = await js.key_value(BUCKET)
    server_id = nc._server_info["server_id"]
    subject = f"{STREAM.lower()}.pub"
    payload = PAYLOAD.encode()
    return {
        "server_info": lambda: sys_nc.request(f"$SYS.REQ.SERVER.{server_id}.VARZ", b"{}", timeout=5),
        "stream_info": lambda: nc.request(f"$JS.API.STREAM.INFO.{STREAM}", b"", timeout=5),
        "stream_get": lambda: nc.request(f"$JS.API.STREAM.MSG.GET.{STREAM}", b'{"seq":1}', timeout=5),
        "kv_get": lambda: kv.get(KEY),
        "publish": lambda: js.publish(subject, payload, timeout=5),
    }


def toolkit_calls(tk: Toolkit) -> dict[str, Call]:
    return {op: (lambda op=op, a=args: tk.call(op, **a)) for op, args in tool_args().items()}  # type: ignore[misc]


def mcp_calls(client: Client) -> dict[str, Call]:
    async def call(op: str, args: dict[str, Any]) -> Any:
        res = await client.call_tool(op, args)
        if res.is_error:
            raise RuntimeError(f"{op} failed over MCP: {res.content}")
        return res

    return {op: (lambda op=op, a=args: call(op, a)) for op, args in tool_args().items()}  # type: ignore[misc]


def sent(*conns: NATS) -> int:
    return sum(int(c.stats["out_msgs"]) for c in conns)


async def requests_per_call(call: Call, conns: tuple[NATS, ...], n: int = 20) -> float:
    """Messages the call sends (requests, publishes), counted on the connections it uses."""
    before = sent(*conns)
    for _ in range(n):
        await call()
    return round((sent(*conns) - before) / n, 2)


async def client_validation_ms(client: Client, n: int) -> dict[str, Any]:
    """The client's own share: revalidating each tool's structured result against its output schema."""
    out: dict[str, Any] = {}
    for op, args in tool_args().items():
        res = await client.call_tool(op, args)

        async def validate(op: str = op, res: Any = res) -> None:
            await client.session.validate_tool_result(op, res)

        out[op] = summary(await time_calls(validate, n))
    return out


async def result_costs_ms(tk: Toolkit, n: int) -> dict[str, dict[str, float]]:
    """In process, per tool: what turning its result into MCP content costs (text rendering, JSON dump)."""
    from natsop.faces.render import to_text

    out: dict[str, dict[str, float]] = {}
    for op, args in tool_args().items():
        res = await tk.call(op, **args)

        async def text(res: Any = res) -> None:
            to_text(res)

        async def dump(res: Any = res) -> None:
            res.model_dump(mode="json")

        out[op] = {"to_text_ms": summary(await time_calls(text, n, warmup=2))["median"],
                   "model_dump_ms": summary(await time_calls(dump, n, warmup=2))["median"],
                   "text_chars": len(to_text(res))}
    return out


async def measure(server: EmbeddedServer, work: Path, calls: int, warmup: int, rounds: int) -> dict[str, Any]:
    env = natsop_env(server, work / "config")
    conn = {"user": server.app.user, "password": server.app.password}
    nc = await nats.connect(server.url, **conn)
    sys_nc = await nats.connect(server.url, user=server.system.user, password=server.system.password)
    samples: dict[str, dict[str, list[float]]] = {op: {layer: [] for layer in LAYERS} for op in OPS}
    noop: list[float] = []
    noop_natsop: list[float] = []
    try:
        async with Toolkit.for_server(server) as tk:
            await prepare(tk)
            floor = await floor_calls(nc, sys_nc)
            ours = toolkit_calls(tk)
            params = StdioServerParameters(command=sys.executable, args=["-m", "natsop", "serve"], env=env)
            hello = StdioServerParameters(command=sys.executable, args=[str(BENCH_DIR / "_hello_server.py")],
                                          env=env)
            hello_natsop = StdioServerParameters(command=sys.executable, env=env,
                                                 args=[str(BENCH_DIR / "_hello_server.py"), "--natsop-stdio"])
            async with Client(params, read_timeout_seconds=60) as client, \
                    Client(hello, read_timeout_seconds=60) as bare, \
                    Client(hello_natsop, read_timeout_seconds=60) as bare_natsop:
                over_mcp = mcp_calls(client)
                await bare.call_tool("noop", {})
                await bare_natsop.call_tool("noop", {})
                layers = {"nats_py": floor, "toolkit": ours, "mcp": over_mcp}
                per_round = max(1, -(-calls // rounds))
                for r in range(rounds):
                    w = warmup if r == 0 else min(warmup, 3)
                    for op in OPS:
                        for layer in LAYERS:
                            samples[op][layer] += await time_calls(layers[layer][op], per_round, warmup=w)
                    noop.extend(await time_calls(lambda: bare.call_tool("noop", {}), per_round, warmup=w))
                    noop_natsop.extend(await time_calls(lambda: bare_natsop.call_tool("noop", {}), per_round,
                                                        warmup=w))
                    log(f"round {r + 1}/{rounds} done")
                tk_nc, tk_sys = await tk.context.nc(), await tk.context.system()
                requests = {op: {"nats_py": await requests_per_call(floor[op], (nc, sys_nc)),
                                 "toolkit": await requests_per_call(ours[op], (tk_nc, tk_sys))} for op in OPS}
                validation = await client_validation_ms(client, max(20, calls // 4))
                costs = await result_costs_ms(tk, max(20, calls // 4))
    finally:
        await nc.close()
        await sys_nc.close()

    noop_summary = summary(noop)
    # natsop serves stdio on its own transport (natsop.faces.stdio): the floor is the bare server on that transport.
    floor_summary = summary(noop_natsop)
    results: dict[str, Any] = {}
    for op in OPS:
        s = {layer: summary(samples[op][layer]) for layer in LAYERS}
        floor_ms, tk_ms, mcp_ms = (s[layer]["median"] for layer in LAYERS)
        overhead = round(mcp_ms - floor_ms, 3)
        results[op] = {
            **s,
            "requests_per_call": requests[op],
            "overhead_ms": overhead,
            "overhead_p95_ms": round(s["mcp"]["p95"] - s["nats_py"]["p95"], 3),
            "ratio_mcp_to_nats_py": ratio(mcp_ms, floor_ms),
            "ratio_toolkit_to_nats_py": ratio(tk_ms, floor_ms),
            "ops_layer_ms": round(tk_ms - floor_ms, 3),
            "mcp_layer_ms": round(mcp_ms - tk_ms, 3),
            # What natsop adds beyond a bare SDK server's round trip on the same transport and the request itself.
            "beyond_sdk_floor_ms": round(mcp_ms - floor_summary["median"] - floor_ms, 3),
            "client_validation_ms": validation[op]["median"],
            **costs[op],
            "target_met": overhead <= TARGET_MS,
        }
    return {"ops": results, "mcp_noop": noop_summary, "mcp_noop_natsop_stdio": floor_summary}


# --- profile -------------------------------------------------------------------------------------

_AREAS = (
    ("natsop", ("/natsop/",)),
    ("rich (text rendering)", ("/rich/",)),
    ("mcp SDK", ("/mcp/", "/mcp_types/")),
    ("pydantic", ("/pydantic/", "/pydantic_core/")),
    ("nats-py", ("/nats/",)),
    ("anyio", ("/anyio/",)),
    ("json", ("/json/", "_json")),
    ("asyncio", ("/asyncio/", "selectors.py", "_asyncio")),
)


# Functions whose cumulative time is a stage of a tool call in the server.
_STAGES = {
    "operation (natsop runner: validate, requests, result model)": ("natsop/runner.py", "run_operation"),
    "text content (natsop render.to_text)": ("natsop/render.py", "to_text"),
    "structured content (model_dump)": ("pydantic/main.py", "model_dump"),
}


def _area(filename: str, name: str) -> str:
    if filename == "~":  # a builtin: method of a C type or a C function
        if "pydantic_core" in name or "SchemaSerializer" in name or "SchemaValidator" in name:
            return "pydantic"
        if "json" in name:
            return "json"
        return "builtins (I/O, C calls)"
    for area, marks in _AREAS:
        if any(m in filename for m in marks):
            return area
    return "other Python"


def read_profile(path: Path, calls_per_op: int, extra_calls: int = 0) -> dict[str, Any]:
    """Where the server's CPU time went: by package (self time) and the top functions."""
    stats = pstats.Stats(str(path))
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    areas: dict[str, float] = {}
    idle = 0.0
    funcs = []
    for (filename, line, name), (_cc, ncalls, tottime, cumtime, _callers) in raw.items():
        if "select.epoll" in name or "select.select" in name:  # waiting for input, not work
            idle += tottime
            continue
        area = _area(filename, name)
        areas[area] = areas.get(area, 0.0) + tottime
        short = filename.split("site-packages/")[-1].split("/src/")[-1]
        funcs.append({"function": f"{short}:{line}({name})", "area": area, "calls": ncalls,
                      "self_ms": round(tottime * 1000, 2), "cum_ms": round(cumtime * 1000, 2)})
    busy = sum(areas.values())
    stages = {}
    for label, (suffix, fname) in _STAGES.items():
        cum = sum(v[3] for (f, _l, n), v in raw.items() if f.endswith(suffix) and n == fname)
        stages[label] = {"ms_per_call": round(cum * 1000 / (calls_per_op * len(OPS) + extra_calls), 3),
                         "share": round(cum / busy, 3) if busy else 0.0}
    total_calls = calls_per_op * len(OPS) + extra_calls
    natsop_cum = sorted((f for f in funcs if f["area"] == "natsop"), key=lambda f: -f["cum_ms"])[:12]
    return {
        "tool_calls": total_calls,
        "cpu_ms_per_call": round(busy * 1000 / total_calls, 3),
        "idle_s": round(idle, 3),
        "stages": stages,
        "areas": {k: {"ms_per_call": round(v * 1000 / total_calls, 3), "share": round(v / busy, 3)}
                  for k, v in sorted(areas.items(), key=lambda kv: -kv[1])},
        "top_self": sorted(funcs, key=lambda f: -f["self_ms"])[:15],
        "top_natsop_cumulative": natsop_cum,
    }


async def profile(server: EmbeddedServer, work: Path, calls_per_op: int) -> dict[str, Any]:
    """Profile `natsop serve` (cProfile, switched on after a warm-up) over calls_per_op calls of each tool."""
    out = work / "serve.prof"
    env = natsop_env(server, work / "config")
    params = StdioServerParameters(command=sys.executable,
                                   args=[str(BENCH_DIR / "_profiled_serve.py"), str(out)], env=env)
    async with Client(params, read_timeout_seconds=60) as client:
        calls = mcp_calls(client)
        for op in OPS:
            for _ in range(5):
                await calls[op]()
        pid = int((work / "serve.prof.pid").read_text())
        os.kill(pid, signal.SIGUSR1)
        await client.call_tool("server_info", {})  # the signal is handled before this call is read
        for op in OPS:
            for _ in range(calls_per_op):
                await calls[op]()
        os.kill(pid, signal.SIGUSR2)
        for _ in range(200):
            if out.exists():
                break
            await asyncio.sleep(0.05)
    result = read_profile(out, calls_per_op, extra_calls=1)
    result["note"] = ("cProfile in the server process during the timed calls only; it slows Python code "
                      "several-fold, so read the shares rather than the absolute times.")
    return result


async def bench(calls: int, warmup: int, rounds: int, profile_calls: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="natsop-bench-") as tmp:
        work = Path(tmp)
        async with EmbeddedServer(store_dir=work / "store") as server:
            data = await measure(server, work, calls, warmup, rounds)
            if profile_calls:
                log(f"profiling the server over {profile_calls} calls per tool")
                data["profile"] = await profile(server, work, profile_calls)
    ops = data["ops"]
    return {
        "calls": calls, "warmup": warmup, "rounds": rounds, "target_ms": TARGET_MS,
        "all_targets_met": all(v["target_met"] for v in ops.values()),
        **data,
    }


def table(result: dict[str, Any]) -> str:
    lines = ["| tool | nats-py | toolkit | mcp | overhead | ratio | requests (natsop / nats-py) | target |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for op, r in result["ops"].items():
        req = r["requests_per_call"]
        lines.append(f"| {op} | {r['nats_py']['median']:.3f} | {r['toolkit']['median']:.3f} "
                     f"| {r['mcp']['median']:.3f} | {r['overhead_ms']:+.3f} | {r['ratio_mcp_to_nats_py']} "
                     f"| {req['toolkit']:g} / {req['nats_py']:g} | {'met' if r['target_met'] else 'missed'} |")
    lines.append(f"\nmcp noop (transport alone): median {result['mcp_noop']['median']:.3f} ms, "
                 f"p95 {result['mcp_noop']['p95']:.3f} ms (SDK stdio); "
                 f"median {result['mcp_noop_natsop_stdio']['median']:.3f} ms (natsop stdio)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="Timed calls per tool and layer (after warm-up)")
    parser.add_argument("--warmup", type=int, default=20, help="Untimed calls first")
    parser.add_argument("--rounds", type=int, default=4, help="Interleaved rounds the calls are split into")
    parser.add_argument("--profile", action="store_true", help="Also profile the natsop server (cProfile)")
    parser.add_argument("--profile-calls", type=int, default=200, help="Calls per tool under the profiler")
    parser.add_argument("--quick", action="store_true", help="50 calls, 5 warm-up, 2 rounds")
    parser.add_argument("--smoke", action="store_true", help="A few calls: checks that the bench runs")
    parser.add_argument("--output", help="Write the JSON here instead of bench/results/mcp_latency.json")
    args = parser.parse_args(argv)
    if args.smoke:
        args.calls, args.warmup, args.rounds, args.profile_calls, args.profile = 4, 1, 1, 3, True
    elif args.quick:
        args.calls, args.warmup, args.rounds = 50, 5, 2
    result = asyncio.run(bench(args.calls, args.warmup, args.rounds, args.profile_calls if args.profile else 0))
    path = write_result("mcp_latency", result, args.output)
    print(table(result))
    if "profile" in result:
        print(json.dumps(result["profile"]["areas"], indent=1))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
