"""Command-line parameters from model fields: options, positional arguments, and JSON or KEY=VALUE input."""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Callable
from typing import Any, Literal

import click
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from natsop.errors import UserError

# Parameters every operation has that the CLI sets itself (from --account, and after asking).
HIDDEN_FIELDS = {"account_name", "confirm"}


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(inner type, optional?) for `X | None`."""
    if typing.get_origin(annotation) is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            inner, _ = _unwrap(args[0])
            return inner, True
    return annotation, False


def _is_model(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, BaseModel)


def _reads_text(model: type[BaseModel]) -> bool:
    """True when the model takes a text form of its own (a before-validator, as weighted destinations do)."""
    validators = model.__pydantic_decorators__.model_validators.values()
    return any(v.info.mode in ("before", "wrap") for v in validators)


def _example(t: Any) -> str:
    """A JSON example for the help and errors: a model's required fields."""
    if not _is_model(t):
        return '{"name": "value"}'
    fields = {n: f for n, f in t.model_fields.items() if f.is_required()} or dict(list(t.model_fields.items())[:1])
    sample = {n: 0 if _unwrap(f.annotation)[0] in (int, float) else "..." for n, f in fields.items()}
    return json.dumps(sample)


def _load_json(text: str, label: str, example: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        where = f" ({exc.msg} at column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise UserError(f"{label} is not valid JSON{where}: {shown!r}", code="invalid_json",
                        hint=f"Give JSON such as {label} '{example}', in single quotes for the shell.") from None


def _json_items(values: tuple[str, ...], label: str, item: Any) -> list[Any] | None:
    """Each value one JSON object, or a JSON array of them (or a model's own text form)."""
    if not values:
        return None
    text_ok = _is_model(item) and _reads_text(item)
    out: list[Any] = []
    for raw in values:
        if text_ok and not raw.lstrip().startswith(("{", "[")):
            out.append(raw)
            continue
        parsed = _load_json(raw, label, _example(item))
        out.extend(parsed) if isinstance(parsed, list) else out.append(parsed)
    return out


def _json_value(raw: str | None, label: str, model: Any) -> Any:
    if raw is None:
        return None
    if _is_model(model) and _reads_text(model) and not raw.lstrip().startswith("{"):
        return raw
    return _load_json(raw, label, _example(model))


def _json_or_text(raw: str | None) -> Any:
    """Any JSON value; text that is not JSON is a string (`--json-value shipped`)."""
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _dict_items(values: tuple[str, ...], label: str, sep: str | None, lists: bool) -> dict[str, Any] | None:
    """KEY=VALUE pairs (NAME:VALUE for header lists; none when `sep` is None), or JSON objects, merged in order."""
    if not values:
        return None
    out: dict[str, Any] = {}
    for item in values:
        if item.lstrip().startswith("{"):
            pairs = _load_json(item, label, '{"name": "value"}')
            if not isinstance(pairs, dict):
                raise UserError(f"{label} takes a JSON object, got {item!r}", code="invalid_argument")
            items = list(pairs.items())
        elif sep is not None and sep in item:
            k, v = item.split(sep, 1)
            items = [(k.strip(), v.strip())]
        else:
            form = f"KEY{sep}VALUE or a JSON object" if sep else "a JSON object"
            raise UserError(f"{label} takes {form}, got {item!r}", code="invalid_argument")
        for k, v in items:
            if lists:  # a repeated name keeps every value
                out.setdefault(k, []).extend(v if isinstance(v, list) else [v])
            else:
                out[k] = v
    return out


def param_for(name: str, field: FieldInfo, positional: bool) -> tuple[click.Parameter, Callable[[Any], Any]]:
    """A click parameter for a model field, and the function that turns its value into the field's."""
    inner, _optional = _unwrap(field.annotation)
    required = field.is_required()
    help_text = field.description or ""
    label = name.upper() if positional else "--" + name.replace("_", "-")
    convert: Callable[[Any], Any] = lambda v: v  # noqa: E731
    origin = typing.get_origin(inner)
    type_args = typing.get_args(inner)
    click_type: Any = str  # text that pydantic reads: names, subjects, datetimes, enums
    multiple = False
    is_flag = False
    if inner is bool:
        is_flag = True
    elif inner in (int, float):
        click_type = inner
    elif origin is Literal:
        click_type = click.Choice([str(a) for a in type_args])
    elif origin is list:
        item = _unwrap(type_args[0])[0] if type_args else str
        multiple = True
        if _is_model(item) or typing.get_origin(item) is dict or item is Any:
            help_text += " (JSON: an object such as " + _example(item) + ", or an array of them; repeatable)"
            convert = lambda v: _json_items(v, label, item)  # noqa: E731
        else:
            click_type = item if item in (int, float) else str
            convert = lambda v: list(v) if v else None  # noqa: E731
    elif origin is dict:
        multiple = True
        value_t = _unwrap(type_args[1])[0] if len(type_args) == 2 else Any
        if value_t in (str, int, float):
            help_text += " (KEY=VALUE or a JSON object, repeatable)"
            convert = lambda v: _dict_items(v, label, "=", lists=False)  # noqa: E731
        elif typing.get_origin(value_t) is list:
            help_text += " (NAME:VALUE or a JSON object, repeatable)"
            convert = lambda v: _dict_items(v, label, ":", lists=True)  # noqa: E731
        else:
            help_text += " (a JSON object, repeatable)"
            convert = lambda v: _dict_items(v, label, None, lists=False)  # noqa: E731
    elif _is_model(inner):
        help_text += f" (JSON object such as {_example(inner)})"
        convert = lambda v: _json_value(v, label, inner)  # noqa: E731
    elif inner is Any or inner is object:
        help_text += " (JSON; text that is not JSON is a string)"
        convert = _json_or_text

    if positional:
        return click.Argument([name], type=click_type, nargs=-1 if multiple else 1, required=required), convert
    if is_flag:
        return click.Option([f"{label}/--no-{name.replace('_', '-')}"], default=None, help=help_text), convert
    return click.Option([label], type=click_type, multiple=multiple, required=required,
                        default=() if multiple else None, help=help_text, show_default=False), convert
