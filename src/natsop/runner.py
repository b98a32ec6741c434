"""Running an operation: validate the arguments, bound its time, map every failure.

Shared by all faces (MCP, CLI, Python) so that they behave the same.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pydantic import BaseModel, ValidationError

from natsop.errors import NatsopError, UserError, from_nats
from natsop.registry import Operation
from natsop.wire.context import Context

__all__ = ["parse_params", "run_operation", "validation_message"]

log = logging.getLogger("natsop.runner")


def validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(x) for x in err.get("loc", ())) or "arguments"
        msg = err.get("msg", "invalid")
        if err.get("type") == "extra_forbidden":
            msg = "is not a parameter of this tool"
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def parse_params(op: Operation, arguments: dict[str, Any] | None) -> BaseModel:
    fields = op.params.model_fields
    # An explicit null for an optional parameter whose default is null means "not given" (MCP clients
    # send it); validating it would apply the field's string constraints to None.
    given = {k: v for k, v in (arguments or {}).items()
             if not (v is None and k in fields and not fields[k].is_required() and fields[k].default is None)}
    try:
        return op.params.model_validate(given)
    except ValidationError as exc:
        raise UserError(f"invalid arguments for {op.tool}: {validation_message(exc)}",
                        code="invalid_arguments",
                        hint="See the tool's input schema for names, types and bounds.") from None
    except (TypeError, ValueError) as exc:  # a constraint that could not even be applied to the value
        raise UserError(f"invalid arguments for {op.tool}: {type(exc).__name__}", code="invalid_arguments",
                        hint="See the tool's input schema for names, types and bounds.") from None


async def run_operation(ctx: Context, op: Operation, arguments: dict[str, Any] | None) -> BaseModel:
    """Validate, run within the operation's time limit, and map every failure into NatsopError."""
    params = parse_params(op, arguments)
    try:
        return await asyncio.wait_for(op.func(ctx, params), timeout=op.timeout_s)
    except NatsopError:
        raise
    except TimeoutError:
        raise NatsopError(f"{op.tool} did not finish within {op.timeout_s:g}s", code="timeout",
                          hint="Narrow the request (smaller limit or time window) and retry.") from None
    except Exception as exc:
        log.debug("%s failed", op.tool, exc_info=True)
        raise from_nats(exc, context=op.tool) from None
