"""Stream settings newer than some servers (2.11 / 2.12) are refused plainly on an older server.

An older server ignores a configuration field or header it does not know, so the setting
would silently not take effect. The bundled server is 2.15.1: the "too old" cases fake
the version the server announced on a real connection; everything else is real.
KV buckets are streams, so their limit markers are checked here too.
"""

from __future__ import annotations

from typing import Any

import pytest

from natsop import Toolkit
from natsop.errors import NotFound, Unsupported

SETTINGS_2_11: list[dict[str, Any]] = [
    {"allow_msg_ttl": True},
    {"subject_delete_marker_ttl_s": 60, "allow_rollup_hdrs": True},
]
SETTINGS_2_12: list[dict[str, Any]] = [
    {"allow_atomic": True},
    {"allow_msg_counter": True},
    {"allow_msg_schedules": True},
]


async def _announce(toolkit: Toolkit, version: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the connected server look like `version` to the version checks."""
    nc = await toolkit.context.nc()
    monkeypatch.setitem(nc._server_info, "version", version)


def _refusal(err: Unsupported, setting: dict[str, Any], need: str) -> None:
    assert err.code == "server_too_old", err
    assert f"needs nats-server {need}" in err.message and next(iter(setting)) in err.message, err.message
    assert "2.10.22" in err.message or "2.11.4" in err.message


@pytest.mark.parametrize(("setting", "need"),
                         [(s, "2.11.0") for s in SETTINGS_2_11] + [(s, "2.12.0") for s in SETTINGS_2_12],
                         ids=[next(iter(s)) for s in SETTINGS_2_11 + SETTINGS_2_12])
async def test_add_and_update_refuse_new_settings_on_an_old_server(
        toolkit: Toolkit, uniq: str, monkeypatch: pytest.MonkeyPatch, setting: dict[str, Any], need: str) -> None:
    existing = f"{uniq}_old"
    await toolkit.call("stream_add", stream=existing)
    await _announce(toolkit, "2.10.22", monkeypatch)
    with pytest.raises(Unsupported) as add:
        await toolkit.call("stream_add", stream=uniq, **setting)
    _refusal(add.value, setting, need)
    with pytest.raises(NotFound):
        await toolkit.call("stream_info", stream=uniq)
    with pytest.raises(Unsupported) as update:
        await toolkit.call("stream_update", stream=existing, **setting)
    _refusal(update.value, setting, need)
    info: Any = await toolkit.call("stream_info", stream=existing)
    assert not any(info.config.get(k) for k in ("allow_msg_ttl", "subject_delete_marker_ttl", "allow_atomic",
                                                "allow_msg_counter", "allow_msg_schedules"))


async def test_a_2_11_server_takes_2_11_settings_only(toolkit: Toolkit, uniq: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    await _announce(toolkit, "2.11.4", monkeypatch)
    made: Any = await toolkit.call("stream_add", stream=uniq, allow_msg_ttl=True, allow_rollup_hdrs=True,
                                   subject_delete_marker_ttl_s=60)
    assert made.config["allow_msg_ttl"] is True and made.config["subject_delete_marker_ttl"] == 60 * 10**9
    for setting in SETTINGS_2_12:
        with pytest.raises(Unsupported) as err:
            await toolkit.call("stream_add", stream=f"{uniq}_2", **setting)
        _refusal(err.value, setting, "2.12.0")
    # Turning a feature off, or leaving it alone, needs no check.
    plain: Any = await toolkit.call("stream_add", stream=f"{uniq}_3", allow_atomic=False, allow_msg_schedules=False)
    assert plain.name == f"{uniq}_3"


async def test_kv_limit_markers_refused_on_an_old_server(toolkit: Toolkit, uniq: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    await _announce(toolkit, "2.10.22", monkeypatch)
    with pytest.raises(Unsupported) as markers:
        await toolkit.call("kv_add", bucket=uniq, limit_marker_ttl_s=60)
    assert markers.value.code == "server_too_old" and "limit_marker_ttl_s" in markers.value.message
    assert "2.11" in markers.value.message
    with pytest.raises(NotFound):
        await toolkit.call("kv_info", bucket=uniq)
    plain: Any = await toolkit.call("kv_add", bucket=uniq)
    assert plain.limit_marker_ttl_s is None


async def test_the_bundled_server_takes_every_new_setting(toolkit: Toolkit, uniq: str) -> None:
    made: Any = await toolkit.call("stream_add", stream=uniq, allow_msg_ttl=True, allow_rollup_hdrs=True,
                                   subject_delete_marker_ttl_s=60, allow_atomic=True, allow_msg_schedules=True)
    cfg = made.config
    assert (cfg["allow_msg_ttl"], cfg["allow_atomic"], cfg["allow_msg_schedules"]) == (True, True, True)
    assert cfg["subject_delete_marker_ttl"] == 60 * 10**9
    counter: Any = await toolkit.call("stream_add", stream=f"{uniq}_c", allow_msg_counter=True)
    assert counter.config["allow_msg_counter"] is True
    later: Any = await toolkit.call("stream_add", stream=f"{uniq}_u")
    updated: Any = await toolkit.call("stream_update", stream=f"{uniq}_u", allow_msg_ttl=True, allow_atomic=True)
    assert (updated.config["allow_msg_ttl"], updated.config["allow_atomic"]) == (True, True) and later.name
    bucket: Any = await toolkit.call("kv_add", bucket=uniq, limit_marker_ttl_s=60)
    assert bucket.limit_marker_ttl_s == 60
