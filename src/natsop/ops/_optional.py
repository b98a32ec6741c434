"""Optional forms of the validated names and subjects, written so that the CLI sees a plain `str | None`.

`SubjectFilter | None` nests the validator inside the union, and the CLI generator then
takes the option for JSON; `Annotated[str | None, ...]` keeps the annotation a plain
optional string and validates the same way.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from natsop.validate import check_stream_name, check_subject

__all__ = ["OptionalPublishSubject", "OptionalStreamName", "OptionalSubjectFilter"]


def _subject(value: str | None) -> str | None:
    return None if value is None else check_subject(value)


def _concrete_subject(value: str | None) -> str | None:
    return None if value is None else check_subject(value, wildcards=False)


def _stream_name(value: str | None) -> str | None:
    return None if value is None else check_stream_name(value)


OptionalSubjectFilter = Annotated[str | None, AfterValidator(_subject), Field(max_length=4096)]
OptionalPublishSubject = Annotated[str | None, AfterValidator(_concrete_subject), Field(max_length=4096)]
OptionalStreamName = Annotated[str | None, AfterValidator(_stream_name), Field(max_length=255)]
