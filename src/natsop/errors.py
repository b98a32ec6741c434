"""natsop's one error hierarchy.

Every failure that reaches a user is a `NatsopError` with a stable `code` (for
scripts and tests), a `message` (what is wrong) and a `hint` (what to do next).
Errors from nats-py and from the JetStream API are mapped into this tree by
`from_nats()` and `from_api_error()`; nothing else escapes an operation.

The classes are grouped by who has to act: the caller (`UserError`), the
deployment's state (`NotFound`, `Conflict`), its configuration or permissions
(`ConfigError`, `PermissionDenied`), or the network and server (`Unavailable`,
`ServerError`).

Messages must never carry credentials: nothing here formats settings objects,
and `scrub()` removes anything that looks like a secret from text that came
from elsewhere.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

__all__ = [
    "ConfigError",
    "Conflict",
    "NatsopError",
    "NotFound",
    "PermissionDenied",
    "ServerError",
    "Unavailable",
    "Unsupported",
    "UserError",
    "from_api_error",
    "from_nats",
    "scrub",
]


class NatsopError(Exception):
    """Base of every error natsop reports."""

    code: str = "error"
    default_hint: str = ""

    def __init__(self, message: str, *, hint: str | None = None, code: str | None = None,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint
        if code is not None:
            self.code = code
        self.details: dict[str, Any] = details or {}

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message, "hint": self.hint}
        if self.details:
            out["details"] = self.details
        return out


class UserError(NatsopError):
    """The request itself is wrong: a bad name, a bound exceeded, a missing argument."""

    code = "invalid_argument"
    default_hint = "Correct the argument and call again."


class NotFound(NatsopError):
    """The stream, consumer, bucket, key, object or message does not exist."""

    code = "not_found"
    default_hint = "List what exists (for example stream_list or kv_ls) and use one of those names."


class Conflict(NatsopError):
    """The deployment's state does not allow it: a name in use, a stale revision, a sealed bucket."""

    code = "conflict"
    default_hint = "Read the current state and decide again."


class PermissionDenied(NatsopError):
    """The server refused the credentials or the permission for this subject."""

    code = "permission_denied"
    default_hint = "Use an account whose permissions allow this (account_name), or ask the operator to grant it."


class ConfigError(NatsopError):
    """natsop's own configuration is missing or wrong (settings, contexts, the embedded server)."""

    code = "configuration"
    default_hint = "Check NATS_URL / NATS_CONTEXT and the credentials files they name."


class Unsupported(NatsopError):
    """The server is too old for this feature, or the feature is switched off."""

    code = "unsupported"
    default_hint = "Upgrade the server, or enable the setting this feature needs."


class Unavailable(NatsopError):
    """The server did not answer in time, or cannot be reached."""

    code = "unavailable"
    default_hint = "Check that the NATS server is running and reachable, then retry."


class ServerError(NatsopError):
    """The server answered with an error natsop has no more specific meaning for."""

    code = "server_error"
    default_hint = "Read the server's description above; the server log may say more."


# JetStream API err_codes (nats-server server/errors.json) with the meaning natsop gives them.
_API_ERRORS: dict[int, tuple[type[NatsopError], str, str | None]] = {
    10059: (NotFound, "stream_not_found", "List streams with stream_list."),
    10014: (NotFound, "consumer_not_found", "List consumers with consumer_list."),
    10037: (NotFound, "message_not_found", "Check the sequence against stream_state (first_seq..last_seq)."),
    10058: (Conflict, "stream_name_in_use", "Choose another name, or update the existing stream with stream_update."),
    10065: (Conflict, "stream_subjects_overlap", "Each subject can belong to one stream only; narrow the subjects."),
    10052: (UserError, "stream_config_invalid", None),
    10071: (Conflict, "wrong_last_sequence", "Read the current last sequence and publish again with it."),
    10070: (Conflict, "wrong_last_msg_id", "Read the current last message id and publish again."),
    10060: (Conflict, "wrong_expected_stream", "The subject is captured by a different stream."),
    10039: (Unsupported, "jetstream_not_enabled_for_account", "Enable JetStream for this account in the server configuration."),
    10076: (Unsupported, "jetstream_not_enabled", "Start the server with JetStream enabled."),
    10109: (Conflict, "stream_sealed", "A sealed stream accepts no changes; create a new one."),
    10002: (Conflict, "account_resources_exceeded", "The account's JetStream limits are reached: free space or raise them."),
    10023: (Conflict, "insufficient_resources", "The server has no room for this: free space or lower limits."),
    10026: (Conflict, "max_consumers_reached", "The stream or account allows no more consumers; remove unused ones."),
    10027: (Conflict, "max_streams_reached", "The account allows no more streams; remove unused ones or raise the limit."),
    10028: (Conflict, "memory_resources_exceeded", "Not enough memory storage: use file storage or raise the limit."),
    10047: (Conflict, "storage_resources_exceeded", "Not enough file storage: free space, lower limits or raise them."),
    10148: (Conflict, "consumer_already_exists", "Use consumer_edit to change an existing consumer."),
    10165: (UserError, "invalid_message_ttl", "Nats-TTL must be at least 1s, or 'never'."),
    10166: (Unsupported, "message_ttl_disabled", "Enable allow_msg_ttl on the stream."),
    10174: (Unsupported, "atomic_publish_disabled", "Enable allow_atomic on the stream (stream_update allow_atomic=true)."),
    10175: (UserError, "batch_sequence_missing", "Every message of a batch needs Nats-Batch-Sequence."),
    10176: (Conflict, "batch_incomplete", "The batch had a gap or was abandoned; nothing of it was stored. Send it again."),
    10177: (UserError, "batch_expected_msg_id", "Nats-Expected-Last-Msg-Id is not allowed in a batch."),
    10179: (UserError, "batch_id_invalid", "A batch id has at most 64 characters."),
    10199: (UserError, "batch_too_large", "A batch holds at most the server's limit (1000 messages by default)."),
    10168: (Unsupported, "message_counter_disabled", "Create the stream with allow_msg_counter."),
    10188: (Unsupported, "message_schedules_disabled", "Enable allow_msg_schedules on the stream."),
}

_SECRET_PATTERNS = [
    re.compile(r"(?i)(pass(word)?|token|secret|seed|jwt|auth_token)([\"'=: ]+)([^\s\"',}]+)"),
    re.compile(r"SU[A-Z2-7]{56}"),  # nkey user seed
    re.compile(r"S[AOUNC][A-Z2-7]{40,}"),  # other nkey seeds
    re.compile(r"eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]*"),  # JWTs
    re.compile(r"(nats|tls|wss?)://[^/@\s:]+:[^/@\s]+@"),  # URL user:password@
]


def scrub(text: str) -> str:
    """Remove anything that looks like a credential from text that came from outside natsop."""
    text = _SECRET_PATTERNS[0].sub(lambda m: f"{m.group(1)}{m.group(3)}[redacted]", text)
    text = _SECRET_PATTERNS[1].sub("[redacted-seed]", text)
    text = _SECRET_PATTERNS[2].sub("[redacted-seed]", text)
    text = _SECRET_PATTERNS[3].sub("[redacted-jwt]", text)
    return _SECRET_PATTERNS[4].sub(lambda m: f"{m.group(1)}://[redacted]@", text)


def from_api_error(error: dict[str, Any], *, context: str = "") -> NatsopError:
    """Map a JetStream API error object (`{"code","err_code","description"}`) into the tree."""
    err_code = int(error.get("err_code") or 0)
    status = int(error.get("code") or 0)
    description = scrub(str(error.get("description") or "JetStream API error"))
    prefix = f"{context}: " if context else ""
    details = {"err_code": err_code, "status": status}
    known = _API_ERRORS.get(err_code)
    if known is not None:
        cls, code, hint = known
        return cls(f"{prefix}{description}", code=code, hint=hint, details=details)
    if status == 404:
        return NotFound(f"{prefix}{description}", details=details)
    if status in (401, 403):
        return PermissionDenied(f"{prefix}{description}", details=details)
    if status == 400:
        return UserError(f"{prefix}{description}", hint="The server rejected the request; check the values.",
                         details=details)
    if status in (408, 503):
        return Unavailable(f"{prefix}{description}", details=details)
    return ServerError(f"{prefix}{description}", details=details)


def _safe_str(exc: BaseException) -> str:
    # Some library exceptions cannot format themselves when fields are missing.
    try:
        return str(exc)
    except Exception:
        return type(exc).__name__


def from_nats(exc: BaseException, *, context: str = "") -> NatsopError:
    """Map an exception raised by nats-py (or asyncio) into the tree."""
    # Imported here so that this module stays importable without nats-py's heavy import.
    import nats.errors as ne
    import nats.js.errors as jse

    if isinstance(exc, NatsopError):
        return exc
    prefix = f"{context}: " if context else ""
    if isinstance(exc, (jse.KeyNotFoundError, jse.KeyDeletedError, jse.NotFoundError, jse.BucketNotFoundError,
                        jse.ObjectNotFoundError, jse.ObjectDeletedError)):
        return NotFound(f"{prefix}{type(exc).__name__.removesuffix('Error')}: {scrub(_safe_str(exc))}")
    if isinstance(exc, jse.KeyWrongLastSequenceError):
        return Conflict(f"{prefix}the key changed since the revision given", code="wrong_last_sequence")
    if isinstance(exc, jse.APIError):
        return from_api_error(
            {"code": getattr(exc, "code", None), "err_code": getattr(exc, "err_code", None),
             "description": getattr(exc, "description", None)},
            context=context,
        )
    if isinstance(exc, ne.NoRespondersError):
        return Unavailable(
            f"{prefix}no responders: nothing is listening on that subject",
            code="no_responders",
            hint="For JetStream calls check that JetStream is enabled for this account; otherwise start a responder.",
        )
    if isinstance(exc, (ne.TimeoutError, asyncio.TimeoutError, TimeoutError)):
        return Unavailable(f"{prefix}the server did not answer in time", code="timeout")
    if isinstance(exc, (ne.AuthorizationError,)):
        return PermissionDenied(f"{prefix}authorization failed", code="authorization")
    if isinstance(exc, (ne.NoServersError, ne.ConnectionClosedError, ne.StaleConnectionError,
                        ne.ConnectionReconnectingError, ConnectionRefusedError, OSError)):
        return Unavailable(f"{prefix}cannot reach the NATS server", code="not_connected")
    if isinstance(exc, ne.MaxPayloadError):
        return UserError(f"{prefix}the payload is larger than the server's max_payload",
                         code="payload_too_large", hint="Send less, or use the Object Store for large data.")
    if isinstance(exc, (ne.BadSubjectError,)):
        return UserError(f"{prefix}invalid subject", code="invalid_subject")
    if isinstance(exc, ne.Error):
        text = scrub(_safe_str(exc)) or type(exc).__name__
        if "permissions violation" in text.lower():
            return PermissionDenied(f"{prefix}{text}")
        return ServerError(f"{prefix}{text}")
    return ServerError(f"{prefix}unexpected {type(exc).__name__}: {scrub(_safe_str(exc))}",
                       hint="This is a natsop bug if it repeats; please report it with the steps.")
