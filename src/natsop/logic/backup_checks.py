"""What backup.json must hold for a server to accept the restore, checked without a server.

`config_problems()` reads the stream configuration the way nats-server decodes and
checks a restore request: the JSON type of every field it knows (a string where a
list belongs is refused before anything else), the enumerations, the limits and
durations it rejects, the stream name and the subjects. Each problem is a sentence
that names the field, what it holds and what is allowed. Fields natsop does not
know are not problems (newer servers add fields); they are returned as notes,
because a server that does not know a field refuses the request (2.12+ decode API
requests strictly).

`state_problems()` checks the recorded stream state, which the restore request
carries too: its types must decode; values that cannot describe a stream are notes
(the server takes the real state from the archive).

Every rule here was checked against nats-server 2.15.1's answer to a restore
request carrying the bad value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from natsop.errors import UserError
from natsop.logic.validate import check_stream_name, check_subject

__all__ = ["config_problems", "state_problems"]

_INT64 = (-(1 << 63), (1 << 63) - 1)
_INT32 = (-(1 << 31), (1 << 31) - 1)
_UINT64 = (0, (1 << 64) - 1)
_MIN_WINDOW_NS = 100_000_000  # 100 ms: the smallest max_age and duplicate_window the server accepts
_MAX_REPLICAS = 5
_MAX_DESCRIPTION = 4096
_MAX_METADATA = 128 * 1024

# Exact spellings the server decodes; discard alone is matched without regard to case.
_ENUMS: dict[str, tuple[str, ...]] = {
    "retention": ("limits", "interest", "workqueue"),
    "storage": ("file", "memory"),
    "discard": ("old", "new"),
    "compression": ("none", "s2"),
    "persist_mode": ("default", "async", ""),
}
# Count and size limits: -1 is the server's "unlimited"; it takes any negative value the same way.
_LIMITS: dict[str, tuple[int, int]] = {
    "max_consumers": _INT64, "max_msgs": _INT64, "max_bytes": _INT64, "max_msgs_per_subject": _INT64,
    "max_msg_size": _INT32,
}
_DURATIONS = ("max_age", "duplicate_window", "subject_delete_marker_ttl")  # nanoseconds, int64
_BOOLS = ("no_ack", "allow_direct", "mirror_direct", "sealed", "deny_delete", "deny_purge", "allow_rollup_hdrs",
          "discard_new_per_subject", "allow_msg_ttl", "allow_atomic", "allow_msg_counter", "allow_msg_schedules",
          "allow_batched")
_OBJECTS = ("placement", "mirror", "subject_transform", "republish", "consumer_limits")
_OTHER = ("name", "description", "subjects", "num_replicas", "first_seq", "sources", "metadata")
_KNOWN_FIELDS = frozenset((*_ENUMS, *_LIMITS, *_DURATIONS, *_BOOLS, *_OBJECTS, *_OTHER))


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "a number"
    if isinstance(value, float):
        return "a fractional number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _integer(problems: list[str], where: str, value: Any, bounds: tuple[int, int], unit: str = "") -> int | None:
    """The value when it is a whole number the server's integer type holds; otherwise a problem."""
    if value is None:
        return None  # JSON null leaves a Go integer at zero
    if isinstance(value, bool) or not isinstance(value, int):
        problems.append(f"{where} is {_kind(value)} ({_shown(value)}); it must be a whole number{unit}")
        return None
    if not bounds[0] <= value <= bounds[1]:
        problems.append(f"{where} is {value}, outside the range the server stores ({bounds[0]}..{bounds[1]})")
        return None
    return value


def _string(problems: list[str], where: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        problems.append(f"{where} is {_kind(value)} ({_shown(value)}); it must be a string")
        return None
    return value


def _bool(problems: list[str], where: str, value: Any) -> bool:
    if value is not None and not isinstance(value, bool):
        problems.append(f"{where} is {_kind(value)} ({_shown(value)}); it must be true or false")
        return False
    return bool(value)


def _string_list(problems: list[str], where: str, value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        problems.append(f"{where} is {_kind(value)} ({_shown(value)}); it must be a list of strings")
        return []
    out: list[str] = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            out.append(item)
        else:
            problems.append(f"{where}[{i}] is {_kind(item)} ({_shown(item)}); it must be a string")
    return out


def _object(problems: list[str], where: str, value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        problems.append(f"{where} is {_kind(value)} ({_shown(value)}); it must be an object")
        return None
    return value


def _user_error_text(check: Callable[[str], str], value: str) -> str | None:
    try:
        check(value)
    except UserError as err:
        return err.message
    return None


def _collide(a: str, b: str) -> bool:
    """True when some subject matches both filters (nats-server's SubjectsCollide)."""
    ta, tb = a.split("."), b.split(".")
    for i in range(max(len(ta), len(tb))):
        x = ta[i] if i < len(ta) else None
        y = tb[i] if i < len(tb) else None
        if x is None or y is None:
            return False
        if x == ">" or y == ">":
            return True
        if x != y and "*" not in (x, y):
            return False
    return True


def _in_api_space(tokens: list[str]) -> bool:
    """Inside $JS.>, $JSC.> or $SYS.> (but not $JS.EVENT.> or $SYS.ACCOUNT.>, allowed for old streams)."""
    if len(tokens) < 2 or tokens[0] not in ("$JS", "$JSC", "$SYS"):
        return False
    exempt = {"$JS": "EVENT", "$SYS": "ACCOUNT"}.get(tokens[0])
    return not (tokens[1] == exempt and len(tokens) > 2)


def _check_subjects(problems: list[str], config: dict[str, Any], no_ack: bool, replicas: int | None) -> list[str]:
    subjects = _string_list(problems, "config.subjects", config.get("subjects"))
    valid: list[str] = []
    for i, subject in enumerate(subjects):
        bad = _user_error_text(check_subject, subject)
        if bad is not None:
            problems.append(f"config.subjects[{i}]: {bad}")
            continue
        tokens = subject.split(".")
        if subject == ">":
            if not no_ack:
                problems.append("config.subjects captures every subject ('>'), which the server allows only with "
                                "no_ack true")
            if replicas not in (None, 0, 1):
                problems.append("config.subjects captures every subject ('>'), which the server allows only with "
                                "one replica")
        elif not no_ack and _in_api_space(tokens):
            problems.append(f"config.subjects[{i}] {subject!r} overlaps the JetStream or system API, which the "
                            "server allows only with no_ack true")
        if subject in valid:
            problems.append(f"config.subjects[{i}] {subject!r} appears twice")
        else:
            clash = next((earlier for earlier in valid if _collide(earlier, subject)), None)
            if clash is not None:
                problems.append(f"config.subjects[{i}] {subject!r} overlaps {clash!r}; a stream's subjects must not "
                                "overlap")
        valid.append(subject)
    return subjects


def _check_enum(problems: list[str], config: dict[str, Any], key: str) -> str | None:
    if key not in config:
        return None
    value = config[key]
    allowed = _ENUMS[key]
    shown = ", ".join(repr(a) for a in allowed if a)
    if not isinstance(value, str):
        problems.append(f"config.{key} is {_kind(value)} ({_shown(value)}); it must be one of {shown}")
        return None
    if (value.lower() if key == "discard" else value) not in allowed:
        problems.append(f"config.{key} is {value!r}; the server accepts {shown}")
        return None
    return value.lower()


def _check_durations(problems: list[str], config: dict[str, Any]) -> None:
    got: dict[str, int] = {}
    for key in _DURATIONS:
        value = _integer(problems, f"config.{key}", config.get(key), _INT64, " of nanoseconds")
        if value is None:
            continue
        if value < 0:
            problems.append(f"config.{key} is {value}; a duration (nanoseconds) cannot be negative")
            continue
        got[key] = value
    max_age, window = got.get("max_age", 0), got.get("duplicate_window", 0)
    for key, value in (("max_age", max_age), ("duplicate_window", window)):
        if 0 < value < _MIN_WINDOW_NS:
            problems.append(f"config.{key} is {value} ns; the server needs 0 or at least 100 ms (100000000)")
    if max_age and window > max_age:
        problems.append(f"config.duplicate_window ({window} ns) is longer than config.max_age ({max_age} ns); the "
                        "server refuses that")
    marker = got.get("subject_delete_marker_ttl", 0)
    if 0 < marker < 1_000_000_000:
        problems.append(f"config.subject_delete_marker_ttl is {marker} ns; the server needs 0 or at least 1 s")


def _check_limits(problems: list[str], notes: list[str], config: dict[str, Any]) -> dict[str, int]:
    got: dict[str, int] = {}
    for key, bounds in _LIMITS.items():
        value = _integer(problems, f"config.{key}", config.get(key), bounds)
        if value is None:
            continue
        got[key] = value
        if value < -1:
            notes.append(f"config.{key} is {value}: servers write -1 for no limit, and treat any negative value "
                         "the same way")
    return got


def _check_objects(problems: list[str], config: dict[str, Any]) -> None:
    placement = _object(problems, "config.placement", config.get("placement"))
    if placement is not None:
        _string(problems, "config.placement.cluster", placement.get("cluster"))
        _string_list(problems, "config.placement.tags", placement.get("tags"))
    for key in ("subject_transform", "republish"):
        obj = _object(problems, f"config.{key}", config.get(key))
        if obj is not None:
            _string(problems, f"config.{key}.src", obj.get("src"))
            _string(problems, f"config.{key}.dest", obj.get("dest"))
    limits = _object(problems, "config.consumer_limits", config.get("consumer_limits"))
    if limits is not None:
        _integer(problems, "config.consumer_limits.inactive_threshold", limits.get("inactive_threshold"), _INT64)
        _integer(problems, "config.consumer_limits.max_ack_pending", limits.get("max_ack_pending"), _INT64)
    metadata = _object(problems, "config.metadata", config.get("metadata"))
    if metadata is not None:
        size = 0
        for k, v in metadata.items():
            if _string(problems, f"config.metadata[{k!r}]", v) is not None:
                size += len(k) + len(v)
        if size > _MAX_METADATA:
            problems.append(f"config.metadata holds {size} bytes; the server allows {_MAX_METADATA}")
    origins: list[tuple[str, dict[str, Any]]] = []
    mirror = _object(problems, "config.mirror", config.get("mirror"))
    if mirror is not None:
        origins.append(("config.mirror", mirror))
    sources = config.get("sources")
    if sources is not None and not isinstance(sources, list):
        problems.append(f"config.sources is {_kind(sources)} ({_shown(sources)}); it must be a list of objects")
    elif sources:
        for i, src in enumerate(sources):
            obj = _object(problems, f"config.sources[{i}]", src)
            if obj is not None:
                origins.append((f"config.sources[{i}]", obj))
    for where, origin in origins:
        name = _string(problems, f"{where}.name", origin.get("name"))
        if name is not None and origin.get("external") is None:
            bad = _user_error_text(check_stream_name, name)
            if bad is not None:
                problems.append(f"{where}.name: {bad}")


def config_problems(config: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(problems, notes) for a stream configuration taken from backup.json."""
    problems: list[str] = []
    notes: list[str] = []
    name = config.get("name")
    if not isinstance(name, str):
        problems.append(f"config.name is {_kind(name)}; it must be the stream's name")
    else:
        bad = _user_error_text(check_stream_name, name)
        if bad is not None:
            problems.append(f"config.name: {bad}")
    description = _string(problems, "config.description", config.get("description"))
    if description is not None and len(description) > _MAX_DESCRIPTION:
        problems.append(f"config.description is {len(description)} characters; the server allows {_MAX_DESCRIPTION}")
    enums = {key: _check_enum(problems, config, key) for key in _ENUMS}
    flags = {key: _bool(problems, f"config.{key}", config.get(key)) for key in _BOOLS}
    limits = _check_limits(problems, notes, config)
    _check_durations(problems, config)
    replicas = _integer(problems, "config.num_replicas", config.get("num_replicas"), _INT64)
    if replicas is not None and not 0 <= replicas <= _MAX_REPLICAS:
        problems.append(f"config.num_replicas is {replicas}; the server accepts 1 to {_MAX_REPLICAS}")
    _integer(problems, "config.first_seq", config.get("first_seq"), _UINT64)
    subjects = _check_subjects(problems, config, flags["no_ack"], replicas)
    _check_objects(problems, config)
    if config.get("mirror") is not None and subjects:
        problems.append("config has both a mirror and subjects; a mirror takes no subjects")
    if flags["deny_purge"] and flags["allow_rollup_hdrs"]:
        problems.append("config has deny_purge and allow_rollup_hdrs both true; roll-ups need the purge permission")
    if flags["discard_new_per_subject"]:
        if enums["discard"] != "new":
            problems.append("config.discard_new_per_subject is true but config.discard is not 'new'")
        if limits.get("max_msgs_per_subject", 0) <= 0:
            problems.append("config.discard_new_per_subject is true but config.max_msgs_per_subject is not set")
    for key in sorted(set(config) - _KNOWN_FIELDS):
        notes.append(f"config.{key} is a field natsop does not know; a server that does not know it refuses the "
                     "restore")
    return problems, notes


# Unsigned in the server's StreamState, so a negative value fails to decode; the others are signed.
_STATE_UNSIGNED = ("messages", "bytes", "first_seq", "last_seq")
_STATE_SIGNED = ("num_deleted", "num_subjects", "consumer_count")


def state_problems(state: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(problems, notes) for the stream state recorded in backup.json.

    The restore request carries it, so its types must decode; its values are not
    used by the server (the archive holds the real state), but natsop compares the
    restored stream with them, so values that cannot describe a stream are noted.
    """
    problems: list[str] = []
    got: dict[str, int] = {}
    for key in (*_STATE_UNSIGNED, *_STATE_SIGNED):
        value = _integer(problems, f"state.{key}", state.get(key), _UINT64 if key in _STATE_UNSIGNED else _INT64)
        if value is not None:
            got[key] = value
    for key in ("first_ts", "last_ts"):
        _string(problems, f"state.{key}", state.get(key))
    if problems or "first_seq" not in state or "last_seq" not in state:
        return problems, []
    first, last, messages = got.get("first_seq", 0), got.get("last_seq", 0), got.get("messages", 0)
    odd = None
    if messages and not 1 <= first <= last:
        odd = f"{messages} messages in sequences {first}..{last}"
    elif messages > last - first + 1:
        odd = f"{messages} messages, more than the sequences {first}..{last} hold"
    elif not messages and (first or last) and first != last + 1:
        odd = f"no messages but sequences {first}..{last} (an empty stream has first_seq = last_seq + 1)"
    notes = [f"state in backup.json records {odd}: it was not written by a server; the restore takes the state "
             "from the archive, and the comparison after it will report differences"] if odd else []
    return problems, notes
