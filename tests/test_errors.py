"""The error tree: nats-py and JetStream API errors are always mapped; secrets are scrubbed."""

from __future__ import annotations

import inspect

import nats.errors as ne
import nats.js.errors as jse
import pytest

from natsop import errors
from natsop.errors import NatsopError, from_api_error, from_nats, scrub


def all_subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out.add(sub)
        out |= all_subclasses(sub)
    return out


def _instances() -> list[Exception]:
    out = []
    for cls in sorted(all_subclasses(ne.Error), key=lambda c: c.__name__):
        # Build each with as many placeholder arguments as its constructor demands.
        required = [
            p for p in inspect.signature(cls.__init__).parameters.values()
            if p.name != "self" and p.default is inspect.Parameter.empty
            and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        out.append(cls(*["x"] * len(required)))
    return out


@pytest.mark.parametrize("exc", _instances(), ids=lambda e: type(e).__name__)
def test_every_nats_py_error_maps_into_the_tree(exc: Exception) -> None:
    mapped = from_nats(exc)
    assert isinstance(mapped, NatsopError)
    assert mapped.code and mapped.message and mapped.hint


def test_timeouts_and_connection_errors() -> None:
    assert from_nats(TimeoutError()).code == "timeout"
    assert from_nats(ne.NoRespondersError()).code == "no_responders"
    assert from_nats(ConnectionRefusedError()).code == "not_connected"
    assert from_nats(ValueError("boom")).code == "server_error"


def test_api_errors_map_by_err_code() -> None:
    err = from_api_error({"code": 404, "err_code": 10059, "description": "stream not found"}, context="stream X")
    assert isinstance(err, errors.NotFound) and err.code == "stream_not_found"
    assert err.message == "stream X: stream not found"
    cas = from_api_error({"code": 400, "err_code": 10071, "description": "wrong last sequence: 5"})
    assert isinstance(cas, errors.Conflict) and cas.code == "wrong_last_sequence"
    unknown = from_api_error({"code": 503, "err_code": 99999, "description": "x"})
    assert isinstance(unknown, errors.Unavailable)
    via_nats = from_nats(jse.APIError(code=404, err_code=10014, description="consumer not found"))
    assert via_nats.code == "consumer_not_found"


def test_scrub_removes_secrets() -> None:
    seed = "SUAM" + "A" * 54
    text = f"password=hunter2 token: abc123 nats://bob:pw@host:4222 seed {seed} jwt eyJhbGciOiJ.eyJzdWIiOiJVQ.sig"
    clean = scrub(text)
    for secret in ("hunter2", "abc123", "bob:pw", seed, "eyJhbGciOiJ.eyJzdWIiOiJVQ"):
        assert secret not in clean
