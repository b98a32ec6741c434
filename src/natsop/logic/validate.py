"""Names and subjects checked before anything is sent to the server.

Each checker raises `UserError` with a message that names the bad part and says
what is allowed. They are wrapped as pydantic `Annotated` types so that a params
model refuses bad input when it is built.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

from natsop.errors import UserError

__all__ = [
    "MAX_COUNT",
    "MAX_DURATION_S",
    "MAX_SEQ",
    "MAX_SIZE32",
    "BucketName",
    "ConsumerName",
    "KvKey",
    "KvKeyFilter",
    "PublishSubject",
    "StreamName",
    "SubjectFilter",
    "check_bucket",
    "check_consumer_name",
    "check_kv_key",
    "check_stream_name",
    "check_subject",
]

# The largest values the server's JSON fields hold, so that a larger number is refused here with
# its name and bound rather than by the server's JSON decoder: sequences are uint64, counts and
# sizes int64 (a message size and a KV value size int32), durations int64 nanoseconds.
MAX_SEQ = 2**64 - 1
MAX_COUNT = 2**63 - 1
MAX_SIZE32 = 2**31 - 1
MAX_DURATION_S = MAX_COUNT // 1_000_000_000

_NAME_FORBIDDEN = re.compile(r"[\s.*>/\\\x00-\x1f\x7f]")
_BUCKET = re.compile(r"^[a-zA-Z0-9_-]+$")
_KV_KEY = re.compile(r"^[-/_=.a-zA-Z0-9]+$")
_KV_FILTER = re.compile(r"^[-/_=.a-zA-Z0-9*>]+$")


def _check_name(kind: str, name: str) -> str:
    if not name:
        raise UserError(f"{kind} name is empty", code="invalid_name", hint=f"Give the {kind} a name.")
    if len(name) > 255:
        raise UserError(f"{kind} name is {len(name)} characters; the limit is 255", code="invalid_name")
    bad = _NAME_FORBIDDEN.search(name)
    if bad:
        shown = repr(bad.group())
        raise UserError(
            f"{kind} name {name!r} contains {shown}",
            code="invalid_name",
            hint=f"{kind.capitalize()} names may not contain spaces, '.', '*', '>', '/', '\\' or control characters.",
        )
    return name


def check_stream_name(name: str) -> str:
    return _check_name("stream", name)


def check_consumer_name(name: str) -> str:
    return _check_name("consumer", name)


def check_subject(subject: str, *, wildcards: bool = True) -> str:
    """A subject: dot-separated non-empty tokens without white space; wildcards only where allowed."""
    if not subject:
        raise UserError("subject is empty", code="invalid_subject", hint="Give a subject such as 'orders.created'.")
    if len(subject) > 4096:
        raise UserError("subject is longer than 4096 characters", code="invalid_subject")
    if re.search(r"[\s\x00-\x1f\x7f]", subject):
        raise UserError(f"subject {subject!r} contains white space or a control character", code="invalid_subject",
                        hint="Subjects are dot-separated tokens with no spaces.")
    tokens = subject.split(".")
    for i, tok in enumerate(tokens):
        if tok == "":
            raise UserError(f"subject {subject!r} has an empty token", code="invalid_subject",
                            hint="Remove the leading, trailing or doubled '.'.")
        if tok in ("*", ">"):
            if not wildcards:
                raise UserError(f"subject {subject!r} has the wildcard {tok!r} where a concrete subject is needed",
                                code="invalid_subject", hint="Publish to a concrete subject; wildcards are for filters.")
            if tok == ">" and i != len(tokens) - 1:
                raise UserError(f"subject {subject!r}: '>' must be the last token", code="invalid_subject")
        elif ("*" in tok or ">" in tok) and not wildcards:
            raise UserError(f"subject {subject!r} contains a wildcard character", code="invalid_subject")
    return subject


def check_bucket(name: str) -> str:
    if not name or not _BUCKET.match(name):
        raise UserError(f"bucket name {name!r} is not valid", code="invalid_bucket",
                        hint="Bucket names use only letters, digits, '_' and '-'.")
    if len(name) > 255:
        raise UserError("bucket name is longer than 255 characters", code="invalid_bucket")
    return name


def check_kv_key(key: str, *, wildcards: bool = False) -> str:
    pattern = _KV_FILTER if wildcards else _KV_KEY
    if not key or not pattern.match(key):
        allowed = "letters, digits and - / _ = ." + (" plus the wildcards * and >" if wildcards else "")
        raise UserError(f"key {key!r} is not valid", code="invalid_key", hint=f"Keys use {allowed}.")
    if key.startswith(".") or key.endswith(".") or ".." in key:
        raise UserError(f"key {key!r} has an empty token", code="invalid_key",
                        hint="Keys may not start or end with '.', nor contain '..'.")
    if wildcards:
        check_subject(key, wildcards=True)
        if any(("*" in tok or ">" in tok) and tok not in ("*", ">") for tok in key.split(".")):
            raise UserError(f"key filter {key!r} puts a wildcard inside a token", code="invalid_key",
                            hint="Wildcards are whole tokens: 'user.*' or 'user.>', not 'user*'.")
    elif key.startswith("_kv"):
        raise UserError(f"key {key!r} is reserved", code="invalid_key", hint="Keys starting with '_kv' are reserved.")
    return key


StreamName = Annotated[str, AfterValidator(check_stream_name), Field(description="Stream name", max_length=255)]
ConsumerName = Annotated[str, AfterValidator(check_consumer_name), Field(description="Consumer name", max_length=255)]
SubjectFilter = Annotated[str, AfterValidator(check_subject), Field(description="Subject; wildcards * and > allowed")]
PublishSubject = Annotated[
    str, AfterValidator(lambda s: check_subject(s, wildcards=False)), Field(description="Concrete subject (no wildcards)")
]
BucketName = Annotated[str, AfterValidator(check_bucket), Field(description="Bucket name", max_length=255)]
KvKey = Annotated[str, AfterValidator(check_kv_key), Field(description="Key")]
KvKeyFilter = Annotated[
    str, AfterValidator(lambda k: check_kv_key(k, wildcards=True)), Field(description="Key filter; * and > allowed")
]
