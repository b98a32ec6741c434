"""Models shared by many operations: payloads, messages, pages and confirmations.

Output is bounded everywhere: payloads carry their full size and say when they
were cut; lists carry a `truncated` flag and the cursor for the next page.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from natsop.errors import UserError
from natsop.registry import Params, Result

__all__ = [
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "MAX_PAYLOAD_BYTES",
    "ConfirmParams",
    "Confirmable",
    "Message",
    "MultiValueHeaders",
    "Payload",
    "check_confirmation",
    "decode_input",
    "headers_of",
    "parse_header_block",
    "payload_of",
]

DEFAULT_MAX_PAYLOAD_BYTES = 4096
MAX_PAYLOAD_BYTES = 1024 * 1024


class Payload(BaseModel):
    """A message body as text (UTF-8) or base64, with its full size."""

    model_config = ConfigDict(extra="forbid")

    encoding: Literal["utf-8", "base64"] = Field(description="How `data` is written")
    data: str = Field(description="The body, or its first bytes when truncated")
    size: int = Field(description="Full size of the body in bytes")
    truncated: bool = Field(default=False, description="True when `data` holds only the first bytes")


def payload_of(data: bytes | None, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> Payload:
    """Present a body within `max_bytes`: text when the whole body is UTF-8, base64 otherwise.

    The choice is made on the whole body, so a message reads the same way however much of
    it is shown; a cut text never splits a character.
    """
    data = data or b""
    cut = data[:max_bytes]
    truncated = len(cut) < len(data)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return Payload(encoding="base64", data=base64.b64encode(cut).decode("ascii"), size=len(data),
                       truncated=truncated)
    # Cut at a character boundary: drop a partial character at the end (continuation bytes are 10xxxxxx).
    end = len(cut)
    if truncated:
        while end > 0 and (data[end] & 0xC0) == 0x80:
            end -= 1
    return Payload(encoding="utf-8", data=cut[:end].decode("utf-8"), size=len(data), truncated=truncated)


def decode_input(data: str, encoding: Literal["utf-8", "base64"]) -> bytes:
    """Turn a caller's payload (text or base64) into bytes, with a clear error for bad base64."""
    if encoding == "base64":
        try:
            return base64.b64decode(data, validate=True)
        except ValueError:
            raise UserError("payload is not valid base64", code="invalid_base64",
                            hint="Send standard base64, or use payload_encoding='utf-8' for text.") from None
    return data.encode("utf-8")


def parse_header_block(raw: bytes | None) -> dict[str, list[str]] | None:
    """Parse a raw NATS header block (`NATS/1.0\\r\\nName: value\\r\\n...`), keeping repeated names."""
    if not raw:
        return None
    out: dict[str, list[str]] = {}
    for line in raw.decode("utf-8", "replace").split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep and name.strip():
            out.setdefault(name.strip(), []).append(value.strip())
    return out or None


class MultiValueHeaders(dict[str, str]):
    """nats-py's headers (one value per name: the last) that also keep every value of each name in `every`.

    nats-py parses a message's headers into a plain dict, so a header sent twice loses
    its first value. natsop's client hands such headers over as this dict instead
    (connection._Client), and `headers_of` reads `every`.
    """

    def __init__(self, last: dict[str, str], every: dict[str, list[str]]) -> None:
        super().__init__(last)
        self.every = every


def headers_of(raw: Any) -> dict[str, list[str]] | None:
    """Normalise nats-py / decoded headers into `{name: [values]}`, repeated values included where known."""
    if not raw:
        return None
    if isinstance(raw, MultiValueHeaders):
        return {name: list(values) for name, values in raw.every.items()}
    out: dict[str, list[str]] = {}
    for k, v in dict(raw).items():
        out[str(k)] = [str(x) for x in v] if isinstance(v, list) else [str(v)]
    return out


class Message(BaseModel):
    """A stored stream message."""

    model_config = ConfigDict(extra="forbid")

    seq: int
    subject: str
    time: str | None = Field(default=None, description="When the server stored it (RFC 3339)")
    headers: dict[str, list[str]] | None = None
    payload: Payload


class ConfirmParams(Params):
    """Parameters of a destructive operation: nothing happens without `confirm`."""

    confirm: str | None = Field(
        default=None,
        description=(
            "Leave empty first: the call then only reports what it would do and the exact value to pass "
            "here (`confirm_with`) to carry it out."
        ),
        max_length=1024,
    )


class Confirmable(Result):
    """What a destructive operation did, or would do without confirmation."""

    done: bool = Field(description="True when the action was carried out")
    confirmation_required: bool = Field(default=False, description="True when nothing was done yet")
    confirm_with: str | None = Field(default=None, description="Pass this as `confirm` to carry it out")
    action: str = Field(description="What was, or would be, done")


def check_confirmation(confirm: str | None, expected: str) -> bool:
    """True to proceed; False for a dry run; a wrong value is refused loudly."""
    if confirm is None or confirm == "":
        return False
    if confirm != expected:
        raise UserError(
            f"confirmation {confirm!r} does not match; nothing was changed",
            code="confirmation_mismatch",
            hint=f"To proceed pass confirm={expected!r}; call without confirm to see what would happen.",
        )
    return True
