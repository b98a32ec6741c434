"""Subject mapping, evaluated locally with nats-server's rules (no NATS connection).

A mapping takes a published subject that matches `source` and rewrites it to
`destination`, whose tokens are literals, `>` (the rest of the subject), the legacy
`$n`, or mapping functions written `{{name(args)}}`::

    >>> SubjectTransform.parse("orders.*.*", "shard.{{partition(4,1)}}.{{wildcard(2)}}").match("orders.eu.new")
    'shard.3.new'

The rules follow nats-server 2.12+ (`server/subject_transform.go`, `ValidateMapping`
in `server/sublist.go` and `AddWeightedMappings` in `server/accounts.go`), including
their corners, because an operator asks "what will the server do", not "what should
it do":

- Function names take either case for their first letter and for the first letter of
  each later word (`splitfromleft`, `SplitFromLeft`, `splitFromLeft`), nothing else.
- Wildcard indexes are 1-based positions of `*` in the source; an index of 0 or below
  is not an error and selects the subject's first token.
- Functions other than `partition` and `random` need wildcards in the source; with no
  wildcard in the source, `partition` ignores any token indexes and hashes the subject.
- `partition(n, i...)` is FNV-1a 32-bit of the selected tokens concatenated with no
  separator; `partition(n)` hashes the whole subject (tokens joined with '.'); the
  bucket is `hash % n` in decimal and `n == 0` gives "0".
- Lengths and positions count bytes (UTF-8), as Go does.
- A literal source with a partition may meet a server quirk: see `empty_key_result`.
- Errors carry the server's text, such as
  `invalid mapping destination: wildcard index out of range in {{wildcard(3)}}: [3]`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from natsop.errors import UserError

__all__ = [
    "Destination",
    "MappingError",
    "SubjectTransform",
    "WeightedMapping",
    "fnv1a_32",
    "partition_of",
]

# The server's error texts (server/errors.go).
_BAD_SUBJECT = "invalid subject"
_BAD_DEST = "invalid mapping destination"
_INVALID_TRANSFORM = f"{_BAD_DEST}: invalid transform"
_UNKNOWN_FUNCTION = f"{_BAD_DEST}: unknown function"
_INDEX_OUT_OF_RANGE = f"{_BAD_DEST}: wildcard index out of range"
_NOT_ENOUGH_ARGS = f"{_BAD_DEST}: not enough arguments passed to the function"
_INVALID_ARG = f"{_BAD_DEST}: function argument is invalid or in the wrong format"
_TOO_MANY_ARGS = f"{_BAD_DEST}: too many arguments passed to the function"

_INT32_MAX = 2**31 - 1
_RNG = random.Random()

_HINT = ("Destination functions are {{wildcard(i)}} (or $i), {{partition(n,i...)}}, {{split(i,sep)}}, "
         "{{splitfromleft(i,pos)}}, {{splitfromright(i,pos)}}, {{slicefromleft(i,n)}}, {{slicefromright(i,n)}}, "
         "{{left(i,n)}}, {{right(i,n)}} and {{random(n)}}; i is the position of a '*' in the source, from 1.")


class MappingError(UserError):
    """The mapping is one nats-server would refuse to load."""

    code = "invalid_mapping"
    default_hint = _HINT


def _dest_error(reason: str, token: str) -> MappingError:
    return MappingError(f"{reason} in {token}" if token else reason)


# Go's regexp `\s` is exactly these five characters; Python's is wider.
_WS = r"[\t\n\f\r ]"


def _fn_pattern(name: str) -> re.Pattern[str]:
    # "splitFromLeft" -> "[sS]plit[fF]rom[lL]eft": only word initials may change case.
    words = re.findall(r"[A-Z]?[a-z]+", name)
    body = "".join(f"[{w[0].lower()}{w[0].upper()}]{w[1:]}" for w in words)
    return re.compile(r"\{\{" + _WS + r"*" + body + _WS + r"*\((.*)\)" + _WS + r"*\}\}")


_WILDCARD = _fn_pattern("wildcard")
_PARTITION = _fn_pattern("partition")
_SPLIT_FROM_LEFT = _fn_pattern("splitFromLeft")
_SPLIT_FROM_RIGHT = _fn_pattern("splitFromRight")
_SLICE_FROM_LEFT = _fn_pattern("sliceFromLeft")
_SLICE_FROM_RIGHT = _fn_pattern("sliceFromRight")
_SPLIT = _fn_pattern("split")
_LEFT = _fn_pattern("left")
_RIGHT = _fn_pattern("right")
_RANDOM = _fn_pattern("random")
_KNOWN = (_PARTITION, _WILDCARD, _SPLIT_FROM_LEFT, _SPLIT_FROM_RIGHT, _SLICE_FROM_LEFT, _SLICE_FROM_RIGHT,
          _SPLIT, _LEFT, _RIGHT, _RANDOM)
_ARG_SEPARATOR = re.compile(r"," + _WS + r"*")
_GO_INT = re.compile(r"[+-]?[0-9]+")

Kind = Literal["literal", "wildcard", "partition", "split", "splitfromleft", "splitfromright",
               "slicefromleft", "slicefromright", "left", "right", "random"]


def _go_atoi(text: str, *, bits: int = 64) -> int | None:
    """strconv.Atoi / ParseInt(text, 10, bits): None where Go returns an error."""
    if not _GO_INT.fullmatch(text):
        return None
    value = int(text)
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return value if low <= value <= high else None


def _int32(value: int) -> int:
    """Go's int32(value): wrap around like two's complement."""
    value &= 0xFFFFFFFF
    return value - 2**32 if value > _INT32_MAX else value


def _fn_args(pattern: re.Pattern[str], token: str) -> list[str] | None:
    found = pattern.search(token)
    return None if found is None else _ARG_SEPARATOR.split(found.group(1))


def _is_function_token(token: str) -> bool:
    return len(token) > 4 and token.startswith("{{") and token.endswith("}}")


@dataclass(frozen=True)
class _Placeholder:
    """One destination token, understood."""

    kind: Kind
    indexes: tuple[int, ...] = ()  # wildcard positions (1-based) the function reads
    number: int = -1  # partitions, position, size or random ceiling
    text: str = ""  # split separator


def _index_and_number(token: str, args: list[str], kind: Kind) -> _Placeholder:
    if len(args) < 2:
        raise _dest_error(_NOT_ENOUGH_ARGS, token)
    if len(args) > 2:
        raise _dest_error(_TOO_MANY_ARGS, token)
    index = _go_atoi(args[0].strip(" "))
    number = _go_atoi(args[1].strip(" "), bits=32)
    if index is None or number is None:
        raise _dest_error(_INVALID_ARG, token)
    return _Placeholder(kind, (index,), number)


def _ceiling(token: str, text: str) -> int:
    # Atoi, then only an upper bound: a very negative n wraps like Go's int32(n).
    n = _go_atoi(text.strip(" "))
    if n is None or n > _INT32_MAX:
        raise _dest_error(_INVALID_ARG, token)
    return _int32(n)


def _placeholder(token: str) -> _Placeholder:
    """Classify a destination token, as the server's indexPlaceHolders does."""
    if len(token) <= 1:
        return _Placeholder("literal")
    if token[0] == "$":
        # `$1` is the legacy wildcard; any other `$word` is a literal token.
        index = _go_atoi(token[1:])
        return _Placeholder("literal") if index is None else _Placeholder("wildcard", (index,))
    if not _is_function_token(token):
        return _Placeholder("literal")

    if (args := _fn_args(_WILDCARD, token)) is not None:
        if args == [""]:
            raise _dest_error(_NOT_ENOUGH_ARGS, token)
        if len(args) > 1:
            raise _dest_error(_TOO_MANY_ARGS, token)
        index = _go_atoi(args[0].strip(" "))
        if index is None:
            raise _dest_error(_INVALID_ARG, token)
        return _Placeholder("wildcard", (index,))

    if (args := _fn_args(_PARTITION, token)) is not None:
        buckets = _ceiling(token, args[0])
        indexes: list[int] = []
        for arg in args[1:]:
            index = _go_atoi(arg.strip(" "))
            if index is None:
                raise _dest_error(_INVALID_ARG, token)
            indexes.append(index)
        return _Placeholder("partition", tuple(indexes), buckets)

    two_number_functions: tuple[tuple[re.Pattern[str], Kind], ...] = (
        (_SPLIT_FROM_LEFT, "splitfromleft"), (_SPLIT_FROM_RIGHT, "splitfromright"),
        (_SLICE_FROM_LEFT, "slicefromleft"), (_SLICE_FROM_RIGHT, "slicefromright"),
        (_RIGHT, "right"), (_LEFT, "left"),
    )
    for pattern, kind in two_number_functions:
        if (args := _fn_args(pattern, token)) is not None:
            return _index_and_number(token, args, kind)

    if (args := _fn_args(_SPLIT, token)) is not None:
        if len(args) < 2:
            raise _dest_error(_NOT_ENOUGH_ARGS, token)
        if len(args) > 2:
            raise _dest_error(_TOO_MANY_ARGS, token)
        index = _go_atoi(args[0].strip(" "))
        if index is None or " " in args[1] or "." in args[1]:
            raise _dest_error(_INVALID_ARG, token)
        return _Placeholder("split", (index,), text=args[1])

    if (args := _fn_args(_RANDOM, token)) is not None:
        if len(args) != 1:
            raise _dest_error(_NOT_ENOUGH_ARGS, token)  # the server says so for too many, too
        return _Placeholder("random", number=_ceiling(token, args[0]))

    raise _dest_error(_UNKNOWN_FUNCTION, token)


def _subject_info(subject: str) -> tuple[bool, list[str], int, bool]:
    """(valid, tokens, number of '*', ends with '>') with the server's loose checks."""
    if not subject:
        return False, [], 0, False
    tokens = subject.split(".")
    stars = 0
    full = False
    for tok in tokens:
        if not tok or full:
            return False, [], 0, False
        if tok == ">":
            full = True
        elif tok == "*":
            stars += 1
    return True, tokens, stars, full


def _valid_subject(subject: str) -> bool:
    # IsValidSubject: no empty token, no white space, '>' only last.
    ok, tokens, _, _ = _subject_info(subject)
    return ok and not any(re.search(_WS, tok) for tok in tokens)


def _validate_destination(destination: str) -> None:
    """The checks the server makes on a configured mapping before building it (ValidateMapping)."""
    after_full = False
    for tok in destination.split("."):
        if not tok or after_full:
            raise _dest_error(_INVALID_TRANSFORM, tok)
        if _is_function_token(tok):
            if not any(p.search(tok) for p in _KNOWN):
                raise _dest_error(_UNKNOWN_FUNCTION, tok)
            continue
        if tok == ">":
            after_full = True
        elif re.search(_WS, tok):
            raise MappingError(_INVALID_TRANSFORM)


def fnv1a_32(data: bytes) -> int:
    """FNV-1a, 32 bits (Go's hash/fnv New32a)."""
    h = 0x811C9DC5
    for byte in data:
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h


def partition_of(key: bytes, buckets: int) -> str:
    """The bucket the server assigns `key` to among `buckets` (an int32, as configured)."""
    if buckets == 0:
        return "0"
    return str(fnv1a_32(key) % (buckets & 0xFFFFFFFF))


def _chunks_from_left(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def _chunks_from_right(data: bytes, size: int) -> list[bytes]:
    head = len(data) % size
    return ([data[:head]] if head else []) + _chunks_from_left(data[head:], size)


def _split_pieces(token: str, sep: str) -> str:
    # Go's strings.Split; an empty separator splits between characters.
    pieces = token.split(sep) if sep else list(token)
    out: list[str] = []
    for k, piece in enumerate(pieces):
        if not piece:
            continue
        # A '.' precedes every non-empty piece but the first one, except that a single
        # empty first piece (a leading separator) adds no '.' before the second.
        if k > 0 and not (k == 1 and pieces[0] == ""):
            out.append(".")
        out.append(piece)
    return "".join(out)


def _apply(ph: _Placeholder, source: str) -> str:
    """A function that rewrites one source token (all but partition, wildcard and random)."""
    raw = source.encode("utf-8")
    size = len(raw)
    n = ph.number
    fits = 0 < n < size
    parts: list[bytes]
    if ph.kind == "split":
        return _split_pieces(source, ph.text)
    if not fits:
        return source
    if ph.kind == "splitfromleft":
        parts = [raw[:n], raw[n:]]
    elif ph.kind == "splitfromright":
        parts = [raw[:size - n], raw[size - n:]]
    elif ph.kind == "slicefromleft":
        parts = _chunks_from_left(raw, n)
    elif ph.kind == "slicefromright":
        parts = _chunks_from_right(raw, n)
    elif ph.kind == "left":
        parts = [raw[:n]]
    elif ph.kind == "right":
        parts = [raw[size - n:]]
    else:  # pragma: no cover - every kind is handled by the caller or above
        raise AssertionError(ph.kind)
    return b".".join(parts).decode("utf-8", "replace")


@dataclass(frozen=True)
class SubjectTransform:
    """A validated mapping from `source` to `destination`, ready to apply to subjects."""

    source: str
    destination: str
    _source_tokens: tuple[str, ...] = field(repr=False)
    _dest_tokens: tuple[str, ...] = field(repr=False)
    # Per destination token: the placeholder and the subject token positions it reads.
    _plan: tuple[tuple[_Placeholder, tuple[int, ...]], ...] = field(repr=False)

    @classmethod
    def parse(cls, source: str, destination: str, *, validate: bool = True) -> SubjectTransform:
        """Build the transform, raising `MappingError` with the server's message if it is invalid.

        `validate` adds the checks the server makes on configured (account) mappings
        before building them; natscli's `server mapping` skips them.
        """
        if not destination:
            raise MappingError(f"{_BAD_DEST}: the destination is empty",
                               hint="Give a destination subject such as 'orders.v2.>'.")
        source = source or ">"
        if validate:
            if not _valid_subject(source):
                raise MappingError(f"{_BAD_SUBJECT}: {source!r} is not a valid source subject",
                                   hint="The source is a subject, with '*' and a final '>' allowed.")
            _validate_destination(destination)
        src_ok, src_tokens, stars, src_full = _subject_info(source)
        dst_ok, dst_tokens, dst_stars, dst_full = _subject_info(destination)
        if not src_ok or not dst_ok or dst_stars or src_full != dst_full:
            raise MappingError(
                _BAD_SUBJECT,
                hint="Both sides must be valid subjects; the destination has no '*' (use {{wildcard(i)}}), "
                     "and ends with '>' exactly when the source does.",
            )
        # Position in the source of the i-th '*'; an index the map lacks reads position 0.
        star_at = {i + 1: pos for i, pos in enumerate(p for p, t in enumerate(src_tokens) if t == "*")}
        plan: list[tuple[_Placeholder, tuple[int, ...]]] = []
        for tok in dst_tokens:
            ph = _placeholder(tok)
            if ph.kind in ("literal", "random"):
                plan.append((ph, ()))
                continue
            if not stars and not src_full:
                if ph.kind != "partition":
                    raise _dest_error(_INDEX_OUT_OF_RANGE, tok)
                plan.append((_Placeholder("partition", (), ph.number), ()))
                continue
            for index in ph.indexes:
                if index > stars:
                    raise _dest_error(_INDEX_OUT_OF_RANGE, f"{tok}: [{index}]")
            plan.append((ph, tuple(star_at.get(i, 0) for i in ph.indexes)))
        return cls(source, destination, tuple(src_tokens), tuple(dst_tokens), tuple(plan))

    @property
    def uses_random(self) -> bool:
        """True when the result changes from message to message ({{random(n)}})."""
        return any(ph.kind == "random" for ph, _ in self._plan)

    def empty_key_result(self, subject: str) -> str | None:
        """What a server may deliver instead, for a literal source with a partition.

        nats-server (2.12 to at least 2.15) hands an account mapping the subject's tokens
        only once it has compared the subject with an earlier wildcard or non-matching
        mapping of the account. When a literal-source mapping is the first one it checks
        (for instance the only one), the tokens are missing and the partition hashes an
        empty key: the bucket is then 2166136261 % n for every message. Which one applies
        depends on the order the server holds the mappings in. None when this cannot happen.
        """
        literal_source = all(t not in ("*", ">") for t in self._source_tokens)
        if not literal_source or not any(ph.kind == "partition" for ph, _ in self._plan):
            return None
        if subject != self.source:
            return None
        return self.transform([])

    def matches(self, subject: str) -> bool:
        """Whether a literal subject falls under the source."""
        tokens = subject.split(".")
        pattern = self._source_tokens
        for i, want in enumerate(pattern):
            if want == ">":
                return len(tokens) > i
            if i >= len(tokens):
                return False
            if want != "*" and want != tokens[i]:
                return False
        return len(tokens) == len(pattern)

    def match(self, subject: str, *, rng: random.Random | None = None) -> str:
        """The subject the server delivers for a message published to `subject`.

        Raises `UserError` (code `invalid_subject`) for a subject that is not literal and
        (code `no_match`) for one the source does not match.
        """
        if self.source == ">" and self.destination == ">":
            return subject
        tokens = subject.split(".")
        if any(not t or t in ("*", ">") for t in tokens):
            raise UserError(f"{_BAD_SUBJECT}: {subject!r} is not a literal subject", code="invalid_subject",
                            hint="Give a subject as it is published: non-empty tokens, no wildcards.")
        if self.source != ">" and not self.matches(subject):
            raise UserError(f"subject {subject!r} does not match the source {self.source!r}", code="no_match",
                            hint="The mapping applies only to subjects its source matches.")
        return self.transform(tokens, rng=rng)

    def transform(self, tokens: Sequence[str], *, rng: random.Random | None = None) -> str:
        """Rewrite the tokens of a subject already known to match."""
        out: list[str] = []
        for dest_tok, (ph, positions) in zip(self._dest_tokens, self._plan, strict=True):
            if ph.kind == "literal":
                if dest_tok == ">":
                    # The rest of the subject, from where the source's '>' stands.
                    out.extend(tokens[len(self._source_tokens) - 1:])
                    break
                out.append(dest_tok)
            elif ph.kind == "wildcard":
                # A position past the subject's end writes nothing (and keeps the '.').
                out.append(tokens[positions[0]] if positions[0] < len(tokens) else "")
            elif ph.kind == "partition":
                # Selected tokens are concatenated with no separator; partition(n) hashes the subject.
                key = "".join(tokens[p] for p in positions) if positions else ".".join(tokens)
                out.append(partition_of(key.encode("utf-8"), ph.number))
            elif ph.kind == "random":
                ceiling = ph.number
                out.append("0" if ceiling == 0 else str((rng or _RNG).randrange(abs(ceiling))))
            else:
                out.append(_apply(ph, tokens[positions[0]]))
        return ".".join(out)


@dataclass(frozen=True)
class Destination:
    """One destination of a weighted mapping, as configured."""

    destination: str
    weight: int = 100
    cluster: str | None = None


@dataclass(frozen=True)
class WeightedMapping:
    """A mapping with weighted (and possibly cluster-scoped) destinations, as an account holds it.

    `groups` maps a cluster name (None for the default group) to its destinations with
    their weights; where the weights total under 100 and the source is not one of the
    destinations, the server adds the unmapped source for the remainder
    (`implicit=True`). Which destination a message takes is chosen at random per
    message, in proportion to the weights.
    """

    source: str
    groups: dict[str | None, list[tuple[Destination, SubjectTransform, bool]]]

    @classmethod
    def parse(cls, source: str, destinations: Sequence[Destination]) -> WeightedMapping:
        if not destinations:
            raise MappingError("a mapping needs at least one destination", hint="Give a destination.")
        if not _valid_subject(source):
            raise MappingError(f"{_BAD_SUBJECT}: {source!r} is not a valid source subject",
                               hint="The source is a subject, with '*' and a final '>' allowed.")
        seen: set[str] = set()
        totals: dict[str | None, int] = {}
        groups: dict[str | None, list[tuple[Destination, SubjectTransform, bool]]] = {None: []}
        for d in destinations:
            if d.destination in seen:
                raise MappingError(f'duplicate entry for "{d.destination}"', hint="List each destination once.")
            seen.add(d.destination)
            if not 0 <= d.weight <= 255:
                raise MappingError(f"invalid weight {d.weight}", hint="Weights are percentages from 0 to 100.")
            if d.weight > 100:
                raise MappingError("individual weights need to be <= 100",
                                   hint="Weights are percentages from 0 to 100.")
            totals[d.cluster] = totals.get(d.cluster, 0) + d.weight
            if totals[d.cluster] > 100:
                raise MappingError("total weight needs to be <= 100",
                                   hint="The weights of one cluster's destinations add up to at most 100.")
            transform = SubjectTransform.parse(source, d.destination)
            groups.setdefault(d.cluster, []).append((d, transform, False))
        for cluster, entries in groups.items():
            total = sum(d.weight for d, _, _ in entries)
            if total != 100 and source not in seen:
                # The remainder keeps the original subject: '*' become $1, $2, ...
                count = iter(range(1, 1 + source.count("*") + 1))
                dest = ".".join(f"${next(count)}" if t == "*" else t for t in source.split("."))
                weight = 100 - total if entries else 100
                entries.append((Destination(source, weight, cluster), SubjectTransform.parse(source, dest), True))
        return cls(source, groups)
