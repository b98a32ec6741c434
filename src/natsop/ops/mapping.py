"""Subject mappings, tested locally: what subject does the server deliver for this one?"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from natsop.errors import UserError
from natsop.logic.transforms import Destination, WeightedMapping
from natsop.registry import Params, Result, operation
from natsop.wire.context import Context

__all__ = ["MappingDestination", "ServerMappingParams", "ServerMappingResult"]

MAX_SUBJECTS = 100
MAX_DESTINATIONS = 100
NOTE = "This only tests the mapping, it does not add it to the server."
# SUBJECT=WEIGHT[%][@CLUSTER]: how the CLI writes one weighted destination.
_DEST_TEXT = re.compile(r"^(?P<weight>\d{1,3})%?(?:@(?P<cluster>\S+))?$")


class MappingDestination(BaseModel):
    """One weighted destination, as in the server's `mappings { src: [{destination, weight}] }`."""

    model_config = ConfigDict(extra="forbid")

    destination: str = Field(min_length=1, max_length=4096, description="Destination subject, with mapping functions")
    weight: int = Field(default=100, ge=0, le=100, description="Share of the messages, in percent")
    cluster: str | None = Field(default=None, min_length=1, max_length=255,
                                description="Only on servers of this cluster (a cluster-scoped destination)")

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        # The CLI passes "orders.v2.>=20%" or "orders.east.>=100%@east".
        if not isinstance(value, str):
            return value
        subject, sep, rest = value.rpartition("=")
        found = _DEST_TEXT.match(rest)
        if not sep or not subject or found is None:
            raise ValueError(f"write a weighted destination as SUBJECT=WEIGHT% or SUBJECT=WEIGHT%@CLUSTER, "
                             f"got {value!r}")
        out: dict[str, Any] = {"destination": subject, "weight": int(found["weight"])}
        if found["cluster"]:
            out["cluster"] = found["cluster"]
        return out


class ServerMappingParams(Params):
    source: str = Field(min_length=1, max_length=4096,
                        description="The subjects the mapping applies to; '*' and a final '>' allowed")
    destination: str | None = Field(
        default=None, min_length=1, max_length=4096,
        description="Where they go: literal tokens, '>', $1 or {{wildcard(1)}}, {{partition(n,i...)}}, "
                    "{{split(i,sep)}}, {{splitfromleft(i,pos)}}, {{splitfromright(i,pos)}}, {{slicefromleft(i,n)}}, "
                    "{{slicefromright(i,n)}}, {{left(i,n)}}, {{right(i,n)}}, {{random(n)}}; i counts the source's "
                    "'*' from 1. With weights, the first destination (its share is `weight`)")
    weight: int = Field(default=100, ge=0, le=100,
                        description="Share of `destination` in percent; below 100 the rest keeps the original subject")
    destinations: list[MappingDestination] | None = Field(
        default=None, max_length=MAX_DESTINATIONS,
        description="Weighted destinations (in addition to `destination`); on the command line SUBJECT=WEIGHT% "
                    "or SUBJECT=WEIGHT%@CLUSTER")
    subjects: list[Annotated[str, Field(min_length=1, max_length=4096)]] = Field(default_factory=list, max_length=MAX_SUBJECTS,
                                description=f"Published subjects to map (up to {MAX_SUBJECTS}); none only checks "
                                            "the mapping")


class DestinationInfo(BaseModel):
    """A destination of the mapping as the server holds it."""

    model_config = ConfigDict(extra="forbid")

    destination: str
    weight: int = Field(description="Share of the messages, in percent")
    cluster: str | None = Field(default=None, description="Cluster the destination is scoped to")
    implicit: bool = Field(default=False,
                           description="Added by the server: the rest of the weight keeps the unmapped subject")


class MappedSubject(BaseModel):
    """The mapping applied to one published subject (one row per destination of a weighted mapping)."""

    model_config = ConfigDict(extra="forbid")

    subject: str = Field(description="The published subject")
    mapped: str | None = Field(default=None, description="The subject the server delivers")
    destination: str | None = Field(default=None, description="Weighted mapping: the destination this row is for")
    weight: int | None = Field(default=None, description="Weighted mapping: how often it is picked, in percent")
    cluster: str | None = Field(default=None, description="Cluster the destination is scoped to")
    random: bool | None = Field(default=None,
                                description="True when `mapped` holds a {{random(n)}} value, new for every message")
    server_may_deliver: str | None = Field(
        default=None, description="A literal source with a partition: the subject the server delivers instead when "
                                  "this is the first mapping it checks (see the note)")
    error: str | None = Field(default=None, description="Why the subject is not mapped")
    error_code: str | None = Field(default=None, description="no_match or invalid_subject")


class ServerMappingResult(Result):
    source: str
    destinations: list[DestinationInfo] = Field(description="The destinations as the server holds them")
    weighted: bool = Field(description="More than one possible destination: the server picks one per message")
    results: list[MappedSubject]
    note: str


def _destinations(params: ServerMappingParams) -> list[Destination]:
    out: list[Destination] = []
    if params.destination is not None:
        out.append(Destination(params.destination, params.weight))
    out.extend(Destination(d.destination, d.weight, d.cluster) for d in params.destinations or [])
    if not out:
        raise UserError("a mapping needs a destination", code="invalid_arguments",
                        hint="Give `destination`, or `destinations` with weights.")
    return out


@operation("server_mapping", cli="server mapping", aliases=("mappings", "map"),
           args=("source", "destination", "subjects"))
async def server_mapping(ctx: Context, params: ServerMappingParams) -> ServerMappingResult:
    """Test a subject mapping locally: the subject the server would deliver for each published subject.

    Evaluates the mapping exactly as nats-server does (every mapping function, the
    partition hash, weighted and cluster-scoped destinations) without a connection;
    an invalid mapping fails with the error the server gives when loading it. Nothing
    is added to the server.
    """
    del ctx  # a local computation: no connection needed
    mapping = WeightedMapping.parse(params.source, _destinations(params))
    entries = [(d, tr, implicit) for group in mapping.groups.values() for d, tr, implicit in group]
    weighted = len(entries) > 1
    infos = [DestinationInfo(destination=d.destination, weight=d.weight, cluster=d.cluster, implicit=implicit)
             for d, _, implicit in entries]
    results: list[MappedSubject] = []
    uses_random = quirk = False
    for subject in params.subjects:
        try:
            mapped = [tr.match(subject) for _, tr, _ in entries]
        except UserError as exc:
            results.append(MappedSubject(subject=subject, error=exc.message, error_code=exc.code))
            continue
        for (d, tr, _), out in zip(entries, mapped, strict=True):
            uses_random = uses_random or tr.uses_random
            row = MappedSubject(subject=subject, mapped=out, random=True if tr.uses_random else None,
                                server_may_deliver=tr.empty_key_result(subject))
            quirk = quirk or row.server_may_deliver is not None
            if weighted:
                row.destination, row.weight, row.cluster = d.destination, d.weight, d.cluster
            results.append(row)
    notes = [NOTE]
    if weighted:
        notes.append("The server picks one destination per message at random, in proportion to the weights; "
                     "each row shows the subject a message gets when that destination is picked.")
    for cluster, group in mapping.groups.items():
        total = sum(d.weight for d, _, _ in group)
        if group and total < 100:
            scope = f" in cluster {cluster}" if cluster else ""
            notes.append(f"The weights{scope} total {total}% and the source is itself a destination: the other "
                         f"{100 - total}% of the messages are dropped.")
    if any(d.cluster for d, _, _ in entries):
        notes.append("Cluster-scoped destinations apply on servers of that cluster; other servers use the "
                     "destinations without a cluster.")
    if quirk:
        notes.append("A partition with a literal source: nats-server hashes the subject only when it has first "
                     "compared it with another of the account's mappings; when this mapping is the first it checks "
                     "(or the only one) it hashes an empty key and delivers `server_may_deliver`. Either way every "
                     "message gets the same partition; give the source a wildcard for a stable answer.")
    if uses_random:
        notes.append("{{random(n)}} takes a new value for every message: the value shown is one example.")
    return ServerMappingResult(source=mapping.source, destinations=infos, weighted=weighted, results=results,
                               note=" ".join(notes))
