"""server_mapping: natsop's local evaluation against what a real nats-server delivers.

Every mapping of the table is configured in the APP account of one embedded server;
each case publishes its subject and the subject a `>` subscriber receives must equal
natsop's local result. Invalid mappings must be refused by both.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
import pytest_asyncio

from natsop import EmbeddedServer, Toolkit
from natsop.embedded.server import find_server_binary
from natsop.errors import ConfigError, UserError
from natsop.logic.transforms import SubjectTransform, fnv1a_32
from tests.conftest import CliFn, cli_json, mcp_client

# (source, destination, published subject). Every source has its own first token.
CASES: list[tuple[str, str, str]] = [
    # wildcard and the legacy $n
    ("w1.*", "w1out.{{wildcard(1)}}", "w1.alpha"),
    ("w2.*.*", "w2out.{{wildcard(2)}}.{{wildcard(1)}}", "w2.a.b"),
    ("w3.*.*", "w3out.$2.$1", "w3.left.right"),
    ("w4.*.>", "w4out.$1.>", "w4.x.y.z"),
    ("w5.*", "w5out.{{ Wildcard( 1 ) }}", "w5.spaced"),
    ("w6.*", "w6out.{{wildcard(0)}}", "w6.zero"),
    ("w7.>", "w7out.>", "w7.a.b.c"),
    ("w8.*", "w8out.$notanumber.$1", "w8.literal"),
    ("w9.*.*", "w9out.{{wildcard(1)}}.{{wildcard(1)}}", "w9.twice.x"),
    # partition with several n and token selections
    ("p1.*", "p1out.{{partition(1,1)}}", "p1.any"),
    ("p2.*", "p2out.{{partition(2,1)}}", "p2.customer-42"),
    ("p3.*", "p3out.{{partition(3,1)}}", "p3.customer-42"),
    ("p4.*.*", "p4out.{{partition(7,1,2)}}", "p4.ab.cd"),
    ("p5.*.*", "p5out.{{partition(7,2,1)}}", "p5.ab.cd"),
    ("p6.*.*.*", "p6out.{{partition(10,3)}}.$3", "p6.a.b.order-9"),
    ("p7.*.*", "p7out.{{Partition(16,1,2)}}.$1", "p7.eu.4711"),
    ("p8.*", "p8out.{{partition(100,1)}}", "p8.héllo"),
    ("p9.*", "p9out.{{partition(1000,1)}}", "p9.xyz"),
    ("p10.*", "p10out.{{partition(0,1)}}", "p10.zero"),
    ("p11.*", "p11out.{{ partition( 5 , 1 ) }}", "p11.spaces"),
    # partition(n): the whole subject, joined with '.'
    ("q1.*", "q1out.{{partition(3)}}", "q1.abc"),
    ("q2.*.*", "q2out.{{partition(7)}}.$2", "q2.a.b"),
    ("q3.>", "q3out.{{partition(11)}}.>", "q3.a.b.c"),
    # A literal source: the server hashes the subject, or an empty key when this mapping is
    # the first it checks (the order is the server's own): natsop gives both.
    ("q4", "q4out.{{partition(5)}}", "q4"),
    ("q5", "q5out.{{partition(1000,1)}}", "q5"),
    # split
    ("s1.*", "s1out.{{split(1,-)}}", "s1.a-b-c"),
    ("s2.*", "s2out.{{split(1,-)}}", "s2.a--b-"),
    ("s3.*", "s3out.{{split(1,-)}}", "s3.-a-b"),
    ("s4.*", "s4out.{{split(1,__)}}", "s4.one__two__three"),
    ("s5.*", "s5out.{{Split(1,x)}}", "s5.nosplithere"),
    ("s6.*.*", "s6out.{{split(2,:)}}.$1", "s6.k.a:b"),
    # splitfromleft / splitfromright
    ("l1.*", "l1out.{{splitfromleft(1,3)}}", "l1.abcdef"),
    ("l2.*", "l2out.{{SplitFromLeft(1,10)}}", "l2.short"),
    ("l3.*", "l3out.{{splitFromLeft(1,0)}}", "l3.abc"),
    ("l4.*", "l4out.{{splitfromleft(1,3)}}", "l4.héllo"),
    ("r1.*", "r1out.{{splitfromright(1,2)}}", "r1.abcdef"),
    ("r2.*", "r2out.{{SplitFromRight(1,6)}}", "r2.abcdef"),
    ("r3.*", "r3out.{{splitfromright(1,-1)}}", "r3.abc"),
    # slicefromleft / slicefromright
    ("c1.*", "c1out.{{slicefromleft(1,2)}}", "c1.abcdef"),
    ("c2.*", "c2out.{{SliceFromLeft(1,3)}}", "c2.abcdefgh"),
    ("c3.*", "c3out.{{slicefromleft(1,9)}}", "c3.abc"),
    ("c4.*", "c4out.{{slicefromright(1,3)}}", "c4.abcdefgh"),
    ("c5.*", "c5out.{{SliceFromRight(1,2)}}", "c5.abcdef"),
    ("c6.*", "c6out.{{slicefromright(1,1)}}", "c6.xyz"),
    # left / right
    ("e1.*", "e1out.{{left(1,2)}}", "e1.abcdef"),
    ("e2.*", "e2out.{{Left(1,10)}}", "e2.abc"),
    ("e3.*", "e3out.{{right(1,2)}}", "e3.abcdef"),
    ("e4.*", "e4out.{{Right(1,0)}}", "e4.abc"),
    ("e5.*.*", "e5out.{{left(2,1)}}.{{right(1,1)}}.$2", "e5.first.second"),
    # everything together
    ("x1.*.*.>", "x1out.{{partition(4,1)}}.{{splitfromleft(2,2)}}.{{left(1,1)}}.>", "x1.tenant.abcd.rest.of"),
]

RANDOM = ("rnd.*", "rndout.$1.{{random(5)}}", "rnd.r")
# Weighted: 50/50; 50 with the remainder left unmapped; the source itself at 50 (the rest is dropped).
WEIGHTED_CONFIG = (
    '"wa.*": [ { destination: "waone.$1", weight: 50% }, { destination: "watwo.$1", weight: 50% } ]\n'
    '"wb.*": [ { destination: "wbout.$1", weight: 50% } ]\n'
    '"wc.>": [ { destination: "wc.>", weight: 50% } ]'
)


def _conf_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid nats-server config string


def _mappings_block(cases: list[tuple[str, str, str]]) -> str:
    lines = [f"{_conf_string(src)}: {_conf_string(dst)}" for src, dst, _ in cases]
    return "mappings {\n" + "\n".join(lines) + "\n" + WEIGHTED_CONFIG + "\n}"


@pytest.fixture(scope="module")
def mapped_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    with EmbeddedServer(store_dir=tmp_path_factory.mktemp("mapping-store"),
                        app_account_config=_mappings_block([*CASES, RANDOM])) as srv:
        yield srv


async def _deliveries(server: EmbeddedServer, subjects: list[str]) -> dict[str, list[str]]:
    """Publish each subject (payload = its index) and collect the subjects a `>` subscriber receives."""
    nc = await nats.connect(server.url, user=server.app.user, password=server.app.password)
    got: dict[str, list[str]] = {}
    done = asyncio.Event()
    sentinel = "sentinel.end"

    async def on_msg(msg: Any) -> None:
        if msg.subject == sentinel:
            done.set()
        else:
            got.setdefault(msg.data.decode(), []).append(msg.subject)

    try:
        await nc.subscribe(">", cb=on_msg)
        await nc.flush()
        for i, subject in enumerate(subjects):
            await nc.publish(subject, str(i).encode())
        # One connection delivers in order: once the sentinel is here, everything deliverable is.
        await nc.publish(sentinel, b"")
        await asyncio.wait_for(done.wait(), 10)
    finally:
        await nc.close()
    return got


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def delivered(mapped_server: EmbeddedServer) -> dict[str, list[str]]:
    return await _deliveries(mapped_server, [subject for _, _, subject in CASES])


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def local_toolkit(mapped_server: EmbeddedServer) -> AsyncIterator[Toolkit]:
    async with Toolkit.for_server(mapped_server) as tk:
        yield tk


def test_the_table_covers_every_function() -> None:
    assert len(CASES) >= 40
    assert len({src.split(".")[0] for src, _, _ in CASES}) == len(CASES)
    text = " ".join(dst.lower() for _, dst, _ in CASES)
    for fn in ("wildcard(", "$1", "partition(", "split(", "splitfromleft(", "splitfromright(",
               "slicefromleft(", "slicefromright(", "left(", "right("):
        assert fn in text, fn
    partition_counts = set(re.findall(r"partition\(\s*(\d+)", text))
    assert len(partition_counts) >= 6


@pytest.mark.parametrize(("source", "destination", "subject"), CASES, ids=[c[0] for c in CASES])
async def test_local_result_equals_what_the_server_delivers(
    local_toolkit: Toolkit, delivered: dict[str, list[str]], source: str, destination: str, subject: str
) -> None:
    index = str(next(i for i, c in enumerate(CASES) if c[0] == source))
    result = await local_toolkit.call("server_mapping", source=source, destination=destination, subjects=[subject])
    dumped = result.model_dump()
    [row] = dumped["results"]
    assert row["error"] is None
    expected = [row["mapped"]]
    if row["server_may_deliver"] is not None:
        assert "*" not in source and ">" not in source
        expected = [delivered.get(index, [""])[0]]
        assert expected[0] in (row["mapped"], row["server_may_deliver"])
    assert delivered.get(index) == expected, (source, destination, subject)


async def test_a_literal_source_partition_hashes_an_empty_key_when_it_is_the_first_mapping(
    tmp_path: Path, toolkit: Toolkit
) -> None:
    source, destination = "only", "only.out.{{partition(1000)}}"
    async with EmbeddedServer(store_dir=tmp_path, app_account_config=f'mappings {{ "{source}": "{destination}" }}') as srv:
        got = await _deliveries(srv, [source])
    result = (await toolkit.call("server_mapping", source=source, destination=destination,
                                 subjects=[source])).model_dump()
    [row] = result["results"]
    assert row["mapped"] == f"only.out.{fnv1a_32(b'only') % 1000}"
    assert row["server_may_deliver"] == f"only.out.{0x811C9DC5 % 1000}" == "only.out.261"
    assert got == {"0": [row["server_may_deliver"]]}
    assert "empty key" in result["note"]


async def test_a_mapping_to_an_empty_token_is_not_delivered(mapped_server: EmbeddedServer) -> None:
    # A leading double separator makes an empty first piece: the server cannot deliver that subject.
    mapped = SubjectTransform.parse("s1.*", "s1out.{{split(1,-)}}").match("s1.--a-b")
    assert mapped == "s1out..a.b"
    got = await _deliveries(mapped_server, ["s1.--a-b", "s1.a-b"])
    assert got == {"1": ["s1out.a.b"]}


async def test_random_stays_within_its_range(mapped_server: EmbeddedServer, local_toolkit: Toolkit) -> None:
    source, destination, subject = RANDOM
    got = await _deliveries(mapped_server, [subject] * 30)
    values = {int(s[0].rsplit(".", 1)[1]) for s in got.values()}
    assert len(got) == 30 and values <= set(range(5)) and len(values) > 1
    result = (await local_toolkit.call("server_mapping", source=source, destination=destination,
                                       subjects=[subject] * 20)).model_dump()
    local = {int(r["mapped"].rsplit(".", 1)[1]) for r in result["results"]}
    assert local <= set(range(5)) and all(r["random"] for r in result["results"])
    assert all(r["mapped"].startswith("rndout.r.") for r in result["results"])
    assert "random" in result["note"]


async def test_weighted_destinations_are_the_ones_the_server_picks(
    mapped_server: EmbeddedServer, local_toolkit: Toolkit
) -> None:
    got = await _deliveries(mapped_server, ["wa.k"] * 60 + ["wb.k"] * 60)
    seen_a = {got[str(i)][0] for i in range(60)}
    seen_b = {got[str(i)][0] for i in range(60, 120)}
    even = (await local_toolkit.call("server_mapping", source="wa.*", subjects=["wa.k"], destinations=[
        {"destination": "waone.$1", "weight": 50}, {"destination": "watwo.$1", "weight": 50}])).model_dump()
    assert even["weighted"] is True
    assert [d["implicit"] for d in even["destinations"]] == [False, False]
    assert {r["mapped"] for r in even["results"]} == seen_a == {"waone.k", "watwo.k"}
    half = (await local_toolkit.call("server_mapping", source="wb.*", destination="wbout.$1", weight=50,
                                     subjects=["wb.k"])).model_dump()
    assert [(d["destination"], d["weight"], d["implicit"]) for d in half["destinations"]] == [
        ("wbout.$1", 50, False), ("wb.*", 50, True)]
    assert {r["mapped"]: r["weight"] for r in half["results"]} == {"wbout.k": 50, "wb.k": 50}
    assert seen_b == {"wbout.k", "wb.k"}
    assert "at random" in half["note"]


async def test_weights_under_100_with_the_source_as_a_destination_drop_the_rest(
    mapped_server: EmbeddedServer, local_toolkit: Toolkit
) -> None:
    got = await _deliveries(mapped_server, ["wc.k"] * 80)
    assert 15 <= len(got) <= 65  # about half of 80 arrive; the chance of falling outside is below 1e-9
    assert {s[0] for s in got.values()} == {"wc.k"}
    lossy = (await local_toolkit.call("server_mapping", source="wc.>", destination="wc.>", weight=50,
                                      subjects=["wc.k"])).model_dump()
    assert [(d["destination"], d["weight"], d["implicit"]) for d in lossy["destinations"]] == [("wc.>", 50, False)]
    assert [r["mapped"] for r in lossy["results"]] == ["wc.k"]
    assert "the other 50% of the messages are dropped" in lossy["note"]


# Mappings the server refuses to load, and the error natsop must give for them.
INVALID: list[tuple[str, str | list[dict[str, Any]], str]] = [
    ("a.*", "b.{{wildcard(2)}}", "invalid mapping destination: wildcard index out of range in {{wildcard(2)}}: [2]"),
    ("a", "b.{{split(1,-)}}", "invalid mapping destination: wildcard index out of range in {{split(1,-)}}"),
    ("a.*", "b.{{foo(1)}}", "invalid mapping destination: unknown function in {{foo(1)}}"),
    ("a.*", "b.{{random()}}",
     "invalid mapping destination: function argument is invalid or in the wrong format in {{random()}}"),
    ("a.*", "b.{{left(1)}}",
     "invalid mapping destination: not enough arguments passed to the function in {{left(1)}}"),
    ("a.*", "b.{{right(1,2,3)}}",
     "invalid mapping destination: too many arguments passed to the function in {{right(1,2,3)}}"),
    ("a.*", "b.{{wildcard(x)}}",
     "invalid mapping destination: function argument is invalid or in the wrong format in {{wildcard(x)}}"),
    ("a.*", "b.{{slicefromleft(1,99999999999)}}",
     "invalid mapping destination: function argument is invalid or in the wrong format in "
     "{{slicefromleft(1,99999999999)}}"),
    ("a.*", "b.{{SPLIT(1,-)}}", "invalid mapping destination: unknown function in {{SPLIT(1,-)}}"),
    ("a.*", "b.*", "invalid subject"),
    ("a.>", "b", "invalid subject"),
    ("a.*", "b..c", "invalid mapping destination: invalid transform"),
    ("a.*", [{"destination": "x.$1", "weight": 60}, {"destination": "y.$1", "weight": 50}],
     "total weight needs to be <= 100"),
    ("a.*", [{"destination": "x.$1", "weight": 10}, {"destination": "x.$1", "weight": 10}],
     'duplicate entry for "x.$1"'),
]


def _server_check(tmp_path: Path, source: str, destination: str | list[dict[str, Any]]) -> tuple[int, str]:
    """`nats-server -t`: load the configuration and say whether it is valid."""
    if isinstance(destination, str):
        value = _conf_string(destination)
    else:
        value = "[" + ", ".join(f"{{ destination: {_conf_string(d['destination'])}, weight: {d['weight']}% }}"
                                for d in destination) + "]"
    conf = tmp_path / "check.conf"
    conf.write_text(f"listen: 127.0.0.1:-1\nmappings {{ {_conf_string(source)}: {value} }}\n")
    done = subprocess.run([find_server_binary(), "-c", str(conf), "-t"], capture_output=True, text=True,
                          timeout=30, check=False)
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize(("source", "destination", "message"), INVALID, ids=[str(c[1]) for c in INVALID])
async def test_invalid_mappings_are_refused_by_both(
    local_toolkit: Toolkit, tmp_path: Path, source: str, destination: str | list[dict[str, Any]], message: str
) -> None:
    status, output = _server_check(tmp_path, source, destination)
    assert status != 0 and message in output, output
    kwargs: dict[str, Any] = ({"destination": destination} if isinstance(destination, str)
                              else {"destinations": destination})
    with pytest.raises(UserError) as err:
        await local_toolkit.call("server_mapping", source=source, subjects=["a.b"], **kwargs)
    assert err.value.code == "invalid_mapping"
    assert err.value.message.startswith(message)


@pytest.mark.parametrize(("source", "destination"), [("a.*", "b.{{split(1,.)}}"), ("a.*", "b.$x.$1")])
async def test_odd_but_valid_mappings_are_accepted_by_both(
    local_toolkit: Toolkit, tmp_path: Path, source: str, destination: str
) -> None:
    status, output = _server_check(tmp_path, source, destination)
    assert status == 0, output
    await local_toolkit.call("server_mapping", source=source, destination=destination)


def test_the_embedded_server_refuses_to_start_with_an_invalid_mapping(tmp_path: Path) -> None:
    srv = EmbeddedServer(store_dir=tmp_path, app_account_config='mappings { "a.*": "b.{{left(1)}}" }')
    with pytest.raises(ConfigError) as err:
        srv.start_sync()
    assert "not enough arguments passed to the function in {{left(1)}}" in err.value.message
    with pytest.raises(UserError, match=r"not enough arguments passed to the function in \{\{left\(1\)\}\}"):
        SubjectTransform.parse("a.*", "b.{{left(1)}}")


def test_fnv1a_matches_the_published_test_vectors() -> None:
    assert fnv1a_32(b"") == 0x811C9DC5
    assert fnv1a_32(b"a") == 0xE40C292C
    assert fnv1a_32(b"foobar") == 0xBF9CF968


# --- the faces


async def test_ops_reports_per_subject_errors_and_checks_without_subjects(toolkit: Toolkit) -> None:
    result = (await toolkit.call("server_mapping", source="orders.*.*",
                                 destination="shard.{{partition(4,1)}}.{{wildcard(2)}}",
                                 subjects=["orders.eu.new", "orders.eu", "orders.*.x", "other.a.b"])).model_dump()
    rows = result["results"]
    assert rows[0]["mapped"] == f"shard.{fnv1a_32(b'eu') % 4}.new" and rows[0]["error"] is None
    assert [r["error_code"] for r in rows[1:]] == ["no_match", "invalid_subject", "no_match"]
    assert rows[1]["mapped"] is None and "does not match the source" in rows[1]["error"]
    assert result["weighted"] is False
    assert result["note"].startswith("This only tests the mapping, it does not add it to the server.")
    empty = (await toolkit.call("server_mapping", source="a.*", destination="b.$1")).model_dump()
    assert empty["results"] == [] and empty["destinations"][0]["destination"] == "b.$1"


async def test_ops_refuses_bad_arguments(toolkit: Toolkit) -> None:
    with pytest.raises(UserError) as err:
        await toolkit.call("server_mapping", source="a.*")
    assert err.value.code == "invalid_arguments" and "destination" in err.value.message
    with pytest.raises(UserError) as err:
        await toolkit.call("server_mapping", source="a.*", destination="b", subjects=["a.x"] * 101)
    assert err.value.code == "invalid_arguments"
    with pytest.raises(UserError) as err:
        await toolkit.call("server_mapping", source="a.*", destinations=[{"destination": "b", "weight": 101}])
    assert err.value.code == "invalid_arguments"
    with pytest.raises(UserError) as err:
        await toolkit.call("server_mapping", source="a b", destination="c")
    assert err.value.code == "invalid_mapping"


async def test_mcp_server_mapping(server_env: dict[str, str]) -> None:
    async with mcp_client(server_env) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert tools["server_mapping"].annotations is not None
        assert tools["server_mapping"].annotations.read_only_hint is True
        ok = await client.call_tool("server_mapping", {
            "source": "orders.*", "destination": "orders.{{partition(3,1)}}.$1", "subjects": ["orders.abc", "x"]})
        assert not ok.is_error, ok.content
        assert ok.structured_content is not None
        rows = ok.structured_content["results"]
        assert rows[0]["mapped"] == f"orders.{fnv1a_32(b'abc') % 3}.abc"
        assert rows[1]["error_code"] == "no_match"
        weighted = await client.call_tool("server_mapping", {
            "source": "a.>", "destinations": [{"destination": "b.>", "weight": 80, "cluster": "east"}],
            "subjects": ["a.x"]})
        assert weighted.structured_content is not None
        assert [(d["destination"], d["cluster"], d["weight"]) for d in weighted.structured_content["destinations"]] \
            == [("a.>", None, 100), ("b.>", "east", 80), ("a.>", "east", 20)]
        assert "Cluster-scoped" in weighted.structured_content["note"]
        bad = await client.call_tool("server_mapping", {"source": "a.*", "destination": "b.{{wildcard(2)}}"})
        assert bad.is_error
        text = getattr(bad.content[0], "text", "")
        assert "invalid_mapping" in text and "wildcard index out of range in {{wildcard(2)}}: [2]" in text


def test_cli_server_mapping(cli: CliFn) -> None:
    out = cli("--json", "server", "mapping", "orders.*.*", "shard.{{partition(4,1)}}.$2", "orders.eu.new")
    assert out.exit_code == 0, out.output
    data = cli_json(out)
    assert data["results"][0]["mapped"] == f"shard.{fnv1a_32(b'eu') % 4}.new"
    text = cli("server", "mapping", "a.*", "b.{{split(1,-)}}", "a.x-y", "zzz")
    assert text.exit_code == 0, text.output
    assert "b.x.y" in text.output and "does not match the source" in text.output
    assert "it does not add it to the server" in text.output
    weighted = cli("--json", "server", "mapping", "a.*", "one.$1", "--weight", "70",
                   "--destinations", "two.$1=20%", "a.k")
    assert weighted.exit_code == 0, weighted.output
    rows = cli_json(weighted)["results"]
    assert [(r["mapped"], r["weight"]) for r in rows] == [("one.k", 70), ("two.k", 20), ("a.k", 10)]
    bad = cli("server", "mapping", "a.*", "b.{{foo(1)}}", "a.b")
    assert bad.exit_code != 0
    assert "unknown function in {{foo(1)}}" in bad.output
    badweight = cli("server", "mapping", "a.*", "b", "--destinations", "c.$1=lots")
    assert badweight.exit_code != 0 and "SUBJECT=WEIGHT%" in badweight.output
