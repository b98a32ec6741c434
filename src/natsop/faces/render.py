"""Rendering result models for people: tables and key/value sections.

Operations return models; this layer alone formats numbers, sizes and times. The
same structure renders as rich output on a terminal (`renderable`) and as plain
text (`to_text`) for MCP results and pipes. Fields named `*bytes*` or `size` are
shown as sizes; durations in nanoseconds (`*_ns`, `active`) as durations. A record model
that names its columns (`table_columns`, e.g. audit findings) renders as one table whose
prose cells wrap instead of being cut.
"""

from __future__ import annotations

import re
import textwrap
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from natsop.errors import NatsopError

__all__ = ["error_text", "human_bytes", "human_duration", "renderable", "to_text"]

MAX_TEXT = 12_000
_SIZE_NAMES = ("bytes", "size", "max_bytes", "max_msg_size", "max_value_size", "memory", "storage_bytes",
               "max_payload")
_COUNT_WORDS = ("messages", "msgs", "count", "total", "pending", "subscriptions", "connections", "consumers",
                "keys", "entries", "values", "objects", "delivered", "scanned", "purged", "subjects", "deleted",
                "streams", "requests", "chunks")
# JetStream API durations are integer nanoseconds under these names.
_NS_NAMES = {"max_age", "duplicate_window", "ack_wait", "idle_heartbeat", "inactive_threshold", "active",
             "subject_delete_marker_ttl", "pause_remaining", "sync_interval", "rtt_ns", "uptime_ns", "priority_timeout"}
_TIME_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def human_bytes(n: float) -> str:
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    value = float(n)
    for unit in units:
        if abs(value) < 1024 or unit == units[-1]:
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def human_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.1f}ms"
    parts = []
    rem = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if rem >= size:
            parts.append(f"{rem // size}{unit}")
            rem %= size
    if rem or not parts:
        parts.append(f"{rem}s" if seconds == int(seconds) or parts else f"{seconds:.2f}s")
    return "".join(parts)


def _fmt(name: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        value = value.isoformat()
    if isinstance(value, str):
        m = _TIME_RE.match(value)
        if m:
            # The zero time means "never" in the server's JSON.
            utc = m.group(4) in ("Z", "+00:00")
            return "" if value.startswith("0001-01-01") else f"{m.group(1)} {m.group(2)}{'' if utc else m.group(4)}"
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float) and not isinstance(value, bool):
        lname = name.lower()
        if (value == -1 and lname.startswith("max_")) or (value == 0 and lname == "max_age"):
            return "unlimited"
        if any(lname == s or lname.endswith("_" + s) or lname.endswith(s) for s in _SIZE_NAMES) and value >= 0:
            return f"{human_bytes(value)}" if value >= 1024 else f"{value} B"
        if (lname.endswith("_ns") or lname in _NS_NAMES) and value > 0:
            return human_duration(value / 1e9)
        if lname.endswith("_s") and value >= 60:
            return human_duration(float(value))
        if lname.endswith("_s") or lname.endswith("_ms"):
            return f"{value:g}{'s' if lname.endswith('_s') else 'ms'}"
        if isinstance(value, int):
            # Counts read better grouped; ports, sequences and ids must stay as typed.
            return f"{value:,}" if any(w in lname for w in _COUNT_WORDS) and not lname.endswith("seq") else str(value)
        return f"{value:g}"
    if isinstance(value, list) and all(not isinstance(v, dict | list | BaseModel) for v in value):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict | list):
        import json

        return json.dumps(value, default=str, separators=(",", ":"))[:500]
    if isinstance(value, BaseModel):
        return _fmt(name, value.model_dump(mode="json"))
    return str(value)


def _label(name: str) -> str:
    return name.replace("_", " ")


def _is_table(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, BaseModel) for v in value)


def _is_payload(value: Any) -> bool:
    return isinstance(value, BaseModel) and {"encoding", "data", "size"} <= set(type(value).model_fields)


def _columns(rows: list[BaseModel]) -> list[str]:
    cols: list[str] = []
    for row in rows:
        for name, v in row:
            if name not in cols and (_is_payload(v) or (not isinstance(v, dict | BaseModel) and not _is_table(v))):
                cols.append(name)
    # Columns that are empty in every row say nothing.
    return [c for c in cols if any(getattr(r, c, None) not in (None, [], "") for r in rows)]


def _wordy(rows: list[BaseModel]) -> bool:
    return any(isinstance(v, str) and len(v) > 80 for r in rows for _, v in r)


def _payload_text(p: BaseModel) -> str:
    data = getattr(p, "data", "")
    size = getattr(p, "size", 0)
    if getattr(p, "encoding", "utf-8") == "base64":
        data = f"base64:{data}"
    cut = " …(truncated)" if getattr(p, "truncated", False) else ""
    return f"{data}{cut} [{size} B]"


def _facts(value: dict[str, Any]) -> str:
    """A dict of observations as 'name: value' lines, each value formatted by its name (sizes, durations)."""
    lines = []
    for key, v in value.items():
        if v in (None, "", [], {}):
            continue
        label = _label(re.sub(r"_(ns|s)$", "", key))
        text = (", ".join(f"{k}={_fmt(k, x)}" for k, x in v.items()) if isinstance(v, dict) else _fmt(key, v))
        lines.append(f"{label}: {text}")
    return "\n".join(lines)


def _wrapped_table(records: list[BaseModel], columns: dict[str, str]) -> Block:
    """Records whose model names its columns (`table_columns`): cells keep their words and wrap."""
    cells = [[_facts(v) if isinstance(v := getattr(r, name, None), dict) else _fmt(name, v) for name in columns]
             for r in records]
    return ("wrapped", (list(columns.values()), cells))


# ("kv", rows) | ("title", text) | ("table", (columns, rows)) | ("wrapped", (columns, rows)) | ("blank", None)
Block = tuple[str, Any]


def _layout(model: BaseModel) -> list[Block]:
    """The shape of the output, shared by the rich and the plain renderers."""
    blocks: list[Block] = []
    rows: list[tuple[str, str]] = []
    sections: list[tuple[str, Any]] = []
    for name, value in model:
        if isinstance(value, BaseModel) and _is_payload(value):
            rows.append((_label(name), _payload_text(value)))
        elif _is_table(value) or isinstance(value, BaseModel) or (isinstance(value, dict) and value):
            sections.append((name, value))
        elif value is None or value == [] or value == {}:
            continue
        else:
            rows.append((_label(name), _fmt(name, value)))
    if rows:
        blocks.append(("kv", rows))
    for name, value in sections:
        blocks.append(("blank", None))
        blocks.append(("title", _label(name).capitalize()))
        if isinstance(value, BaseModel):
            blocks.extend(_layout(value))
        elif isinstance(value, dict):
            blocks.append(("kv", [(str(k), _fmt(k, v)) for k, v in value.items() if v not in (None, "", [], {})]))
        elif isinstance(columns := getattr(type(value[0]), "table_columns", None), dict):
            blocks.append(_wrapped_table(list(value), columns))
        elif _wordy(list(value)):
            # Rows carrying sentences (findings, explanations) read better as blocks than as a squeezed table.
            for row in value:
                blocks.append(("blank", None))
                blocks.extend(_layout(row))
        else:
            records: list[BaseModel] = list(value)
            cols = _columns(records)
            cells = [[_payload_text(v) if isinstance(v := getattr(r, c, None), BaseModel) and _is_payload(v)
                      else _fmt(c, v) for c in cols] for r in records]
            blocks.append(("table", ([_label(c) for c in cols], cells)))
    return blocks


def renderable(model: BaseModel) -> RenderableType:
    """A rich renderable: key/value lines for scalars, a table per list of records, sections for nested models."""
    items: list[RenderableType] = []
    for kind, data in _layout(model):
        if kind == "blank":
            items.append(Text(""))
        elif kind == "title":
            items.append(Text(data, style="bold underline"))
        elif kind == "kv":
            grid = Table.grid(padding=(0, 2))
            grid.add_column(style="bold")
            grid.add_column()
            for key, value in data:
                grid.add_row(key, value)
            items.append(grid)
        elif kind == "wrapped":
            cols, cells = data
            # Short identifying columns stay on one line; the prose columns share the rest and wrap at words.
            table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, show_lines=True)
            for i, col in enumerate(cols):
                short = all(len(row[i]) <= 40 and "\n" not in row[i] for row in cells)
                table.add_column(col, no_wrap=short, overflow="fold")
            for row in cells:
                table.add_row(*row)
            items.append(table)
        else:
            cols, cells = data
            table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
            for col in cols:
                table.add_column(col)
            for row in cells:
                table.add_row(*row)
            items.append(table)
    return Group(*items)


def _cut(text: str, width: int) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def _wrap_cell(text: str, width: int) -> list[str]:
    out: list[str] = []
    for line in text.split("\n"):
        out.extend(textwrap.wrap(line, width, break_on_hyphens=False) or [""])
    return out


def _wrapped_text(cols: list[str], cells: list[list[str]], width: int, budget: int) -> list[str]:
    """A table whose prose cells wrap inside their column; rows stop (and say so) once `budget` characters are used."""
    natural = [max([len(c)] + [len(x) for r in cells for x in r[i].split("\n")]) for i, c in enumerate(cols)]
    # Short columns keep their width; the prose columns share what is left, none wider than it needs.
    flex = [i for i in range(len(cols)) if natural[i] > 24 or any("\n" in r[i] for r in cells)]
    widths = [n if i not in flex else 0 for i, n in enumerate(natural)]
    room = max(12 * len(flex), width - 2 * (len(cols) - 1) - sum(widths))
    pending = sorted(flex, key=lambda i: natural[i])
    while pending:
        share = room // len(pending)
        i = pending.pop(0)
        widths[i] = max(12, min(natural[i], share))
        room -= widths[i]
    out = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip(),
           "  ".join("-" * w for w in widths)]
    used = sum(len(x) + 1 for x in out)
    for n, row in enumerate(cells):
        wrapped = [_wrap_cell(v, w) for v, w in zip(row, widths, strict=True)]
        lines = ["  ".join((col[i] if i < len(col) else "").ljust(w) for col, w in zip(wrapped, widths, strict=True))
                 .rstrip() for i in range(max(len(col) for col in wrapped))]
        size = sum(len(x) + 1 for x in lines)
        if n and used + size > budget:
            out.append(f"… {len(cells) - n} more rows (the structured result has them all)")
            break
        out.extend(lines)
        used += size
    return out


def to_text(model: BaseModel, *, width: int = 100, limit: int = MAX_TEXT) -> str:
    """Plain text, bounded: the short text an MCP result carries.

    Written without rich: it is on every tool call's path, and a terminal renderer costs
    milliseconds per result where this costs microseconds.
    """
    lines: list[str] = []
    size = 0
    for kind, data in _layout(model):
        if kind == "blank":
            out = [""]
        elif kind == "title":
            out = [data]
        elif kind == "kv":
            pad = max((len(k) for k, _ in data), default=0)
            out = [f"{k.ljust(pad)}  {_cut(v, max(20, width - pad - 2))}".rstrip() for k, v in data]
        elif kind == "wrapped":
            cols, cells = data
            out = _wrapped_text(cols, cells, width, max(0, limit - size - 200))
        else:
            cols, cells = data
            widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(cols)]
            room = width - 2 * max(0, len(cols) - 1)
            while sum(widths) > room and max(widths) > 8:  # narrow the widest column until the row fits
                widest = widths.index(max(widths))
                widths[widest] = max(8, widths[widest] - max(1, sum(widths) - room))
            out = ["  ".join(_cut(c, w).ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip(),
                   "  ".join("-" * w for w in widths)]
            out += ["  ".join(_cut(v, w).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
        lines.extend(out)
        size += sum(len(x) + 1 for x in out)
        if size > limit:
            break
    text = "\n".join(lines).strip()
    if len(text) > limit:
        text = text[:limit] + "\n… (text cut; the structured result has everything)"
    return text


def error_text(err: NatsopError) -> str:
    text = f"error [{err.code}]: {err.message}"
    if err.hint:
        text += f"\nhint: {err.hint}"
    return text
