"""The registry: every operation defined once, with the metadata its faces need.

An operation is an async function `(ctx, params) -> result` in `natsop.ops.<noun>`,
decorated with `@operation(...)`. The decorator reads the parameter and result
models from the function's annotations and the help text from its docstring.
The MCP server (`natsop.faces.mcp_server`) and the CLI (`natsop.faces.cli`) are generated from
`operations()`; nothing else lists tools.

Naming: the MCP tool name is the spec's (`stream_info`, `kv_ls`); the CLI path is
natscli's noun and verb (`stream info`, `kv ls`), with natscli's aliases.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import pkgutil
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field

if typing.TYPE_CHECKING:
    from natsop.wire.context import Context

__all__ = [
    "Impact",
    "Operation",
    "Params",
    "Result",
    "Scope",
    "get",
    "operation",
    "operations",
]


class Impact(enum.StrEnum):
    """What an operation may do to the deployment."""

    READ = "read"
    WRITE = "write"
    DESTRUCTIVE = "destructive"


class Scope(enum.StrEnum):
    """Whose credentials an operation needs: the account's own, or the system account's."""

    USER = "user"
    SYSTEM = "system"


class Params(BaseModel):
    """Base of every operation's parameters: unknown fields are refused, not ignored."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    account_name: str | None = Field(
        default=None,
        description="Configured account (natscli context or credential set) to use; omit for the default.",
        max_length=255,
    )


class Result(BaseModel):
    """Base of every operation's result."""

    model_config = ConfigDict(extra="forbid")

    def exit_status(self) -> int:
        """The CLI's exit code for this result: 0 unless the result itself reports a failure."""
        return 0

    def reworded(self, say: Callable[[str], str]) -> Self:
        """This result with its advice (text naming tools and arguments) passed through `say`.

        The CLI uses it to turn `stream_update X replicas=3` into `natsop stream edit X --replicas 3`.
        """
        return self


P = TypeVar("P", bound=Params)
R = TypeVar("R", bound=BaseModel)
OpFunc = Callable[["Context", P], Awaitable[R]]


@dataclass(frozen=True)
class Operation:
    """One operation and everything the faces need to present it."""

    tool: str
    cli: tuple[str, ...]
    aliases: tuple[str, ...]
    func: Callable[[Any, Any], Awaitable[Any]]
    params: type[Params]
    result: type[BaseModel]
    impact: Impact
    scope: Scope
    idempotent: bool
    args: tuple[str, ...]
    summary: str
    description: str
    timeout_s: float

    @property
    def read_only(self) -> bool:
        return self.impact is Impact.READ

    @property
    def destructive(self) -> bool:
        return self.impact is Impact.DESTRUCTIVE


_REGISTRY: dict[str, Operation] = {}
_LOADED = False


def operation(
    tool: str,
    *,
    cli: str | None = None,
    aliases: tuple[str, ...] = (),
    impact: Impact = Impact.READ,
    scope: Scope = Scope.USER,
    idempotent: bool | None = None,
    args: tuple[str, ...] = (),
    timeout_s: float = 30.0,
) -> Callable[[OpFunc[P, R]], OpFunc[P, R]]:
    """Register an operation.

    `tool` is the MCP tool name; `cli` is the command path ("stream info"), by default
    the tool name split at its first underscore; `args` names the parameters the CLI
    takes as positional arguments, in order.
    """

    def register(func: OpFunc[P, R]) -> OpFunc[P, R]:
        hints = typing.get_type_hints(func)
        names = list(inspect.signature(func).parameters)
        if len(names) != 2:
            raise TypeError(f"{tool}: an operation takes (ctx, params)")
        params_t = hints[names[1]]
        result_t = hints["return"]
        if not (isinstance(params_t, type) and issubclass(params_t, Params)):
            raise TypeError(f"{tool}: params must be a Params model")
        if not (isinstance(result_t, type) and issubclass(result_t, BaseModel)):
            raise TypeError(f"{tool}: result must be a pydantic model")
        for a in args:
            if a not in params_t.model_fields:
                raise TypeError(f"{tool}: positional argument {a!r} is not a parameter")
        doc = inspect.cleandoc(func.__doc__ or "")
        if not doc:
            raise TypeError(f"{tool}: an operation needs a docstring (it is the help text)")
        path = tuple((cli or tool.replace("_", " ", 1)).split())
        if tool in _REGISTRY:
            raise TypeError(f"{tool}: registered twice")
        _REGISTRY[tool] = Operation(
            tool=tool,
            cli=path,
            aliases=aliases,
            func=func,
            params=params_t,
            result=result_t,
            impact=impact,
            scope=scope,
            idempotent=(impact is Impact.READ) if idempotent is None else idempotent,
            args=args,
            summary=doc.splitlines()[0],
            description=doc,
            timeout_s=timeout_s,
        )
        return func

    return register


def _load() -> None:
    global _LOADED
    if _LOADED:
        return
    import natsop.ops as ops_pkg

    for mod in pkgutil.iter_modules(ops_pkg.__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"natsop.ops.{mod.name}")
    _LOADED = True


def operations(*, read_only: bool = False) -> list[Operation]:
    """All registered operations in a stable order; with `read_only`, only the read-only ones."""
    _load()
    ops = sorted(_REGISTRY.values(), key=lambda o: o.tool)
    return [o for o in ops if o.read_only] if read_only else ops


def get(tool: str) -> Operation:
    """The operation registered under an MCP tool name."""
    _load()
    from natsop.errors import NotFound

    try:
        return _REGISTRY[tool]
    except KeyError:
        raise NotFound(f"no operation named {tool!r}", code="unknown_tool",
                       hint="List the tools (tools/list, or `natsop --help`).") from None
