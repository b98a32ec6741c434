"""Parameters on the command line: JSON for models, lists of models and dicts; text for the rest.

Each command runs end to end against the embedded server.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import nats

from natsop import EmbeddedServer
from tests.conftest import CliFn, cli_json


async def _raw(server: EmbeddedServer) -> Any:
    return await nats.connect(server.url, user=server.app.user, password=server.app.password)


def _payloads(cli: CliFn, stream: str) -> list[tuple[str, str]]:
    view = cli_json(cli("--json", "stream", "view", stream))
    return [(m["subject"], m["payload"]["data"]) for m in view["messages"]]


def test_batch_pub_takes_json_messages(cli: CliFn, uniq: str) -> None:
    assert cli("stream", "add", uniq, "--subjects", f"{uniq}.>", "--allow-atomic").exit_code == 0
    one = json.dumps({"subject": f"{uniq}.a", "payload": "first"})
    more = json.dumps([{"subject": f"{uniq}.b", "payload": "second", "headers": {"X-N": "2"}},
                       {"subject": f"{uniq}.c", "payload": "dGhpcmQ=", "payload_encoding": "base64"}])
    done = cli("--json", "batch", "pub", "--messages", one, "--messages", more)
    assert done.exit_code == 0, done.output
    assert (cli_json(done)["count"], cli_json(done)["first_seq"], cli_json(done)["last_seq"]) == (3, 1, 3)
    assert _payloads(cli, uniq) == [(f"{uniq}.a", "first"), (f"{uniq}.b", "second"), (f"{uniq}.c", "third")]
    # Bad JSON is refused before anything is sent, with what to write instead.
    bad = cli("--json", "batch", "pub", "--messages", one, "--messages", "{subject: x}")
    assert bad.exit_code == 1
    err = json.loads(bad.stdout)["error"]
    assert err["code"] == "invalid_json" and "--messages" in err["message"] and '{"subject":' in err["hint"]
    not_a_message = cli("batch", "pub", "--messages", json.dumps({"subject": f"{uniq}.a", "colour": "red"}))
    assert not_a_message.exit_code == 1 and "invalid_arguments" in not_a_message.output
    assert cli_json(cli("--json", "stream", "state", uniq))["state"]["messages"] == 3


async def test_req_gets_the_reply(cli: CliFn, server: EmbeddedServer, uniq: str) -> None:
    nc = await _raw(server)
    try:
        async def answer(msg: Any) -> None:
            seen = ",".join(f"{k}={v}" for k, v in sorted((msg.headers or {}).items()))
            await msg.respond(msg.data.upper() + b" " + seen.encode())

        await nc.subscribe(f"{uniq}.svc", cb=answer)
        await nc.flush()
        # The CLI runs its own event loop, so here it runs in a worker thread.
        got = await asyncio.to_thread(cli, "--json", "req", f"{uniq}.svc", "hello", "--headers", "A:1",
                                      "--headers", '{"B": "2"}', "--timeout-s", "5")
        assert got.exit_code == 0, got.output
        assert cli_json(got)["payload"]["data"] == "HELLO A=1,B=2"
        table = await asyncio.to_thread(cli, "req", f"{uniq}.svc", "again")
        assert table.exit_code == 0 and "AGAIN" in table.output
    finally:
        await nc.close()
    nobody = await asyncio.to_thread(cli, "--json", "req", f"{uniq}.nobody", "x")
    assert nobody.exit_code == 1 and json.loads(nobody.stdout)["error"]["code"] == "no_responders"


async def test_schedule_add_takes_a_time(cli: CliFn, server: EmbeddedServer, uniq: str) -> None:
    made = await asyncio.to_thread(cli, "stream", "add", uniq, "--subjects", f"{uniq}.>", "--allow-msg-schedules")
    assert made.exit_code == 0, made.output
    nc = await _raw(server)
    try:
        js = nc.jetstream()
        sub = await js.subscribe(f"{uniq}.out.reminder", stream=uniq, ordered_consumer=True)
        at = (datetime.now(UTC) + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        added = await asyncio.to_thread(cli, "--json", "schedule", "add", f"{uniq}.sched.reminder",
                                        f"{uniq}.out.reminder", at, "--payload", "ping")
        assert added.exit_code == 0, added.output
        assert cli_json(added)["seq"] == 1 and cli_json(added)["at"] == at
        delivered = await sub.next_msg(timeout=15)
        assert delivered.data == b"ping"
    finally:
        await nc.close()
    bad = await asyncio.to_thread(cli, "schedule", "add", f"{uniq}.sched.x", f"{uniq}.out.x", "next tuesday")
    assert bad.exit_code == 1 and "at:" in bad.output


def test_dict_options_take_pairs_or_json(cli: CliFn, uniq: str) -> None:
    made = cli("stream", "add", uniq, "--subjects", f"{uniq}.>", "--metadata", "team=orders",
               "--metadata", '{"tier": "gold"}')
    assert made.exit_code == 0, made.output
    metadata = cli_json(cli("--json", "stream", "info", uniq))["config"]["metadata"]
    assert metadata.items() >= {"team": "orders", "tier": "gold"}.items()
    wrong = cli("stream", "add", f"{uniq}_2", "--metadata", "[1, 2]")
    assert wrong.exit_code == 1 and "KEY=VALUE or a JSON object" in wrong.output
