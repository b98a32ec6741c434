"""The command line: natscli's nouns and verbs, generated from the registry.

`natsop stream info ORDERS` runs the operation `stream_info` with `stream="ORDERS"`.
A parameter named in the operation's `args` is a positional argument; every other
parameter is an option with the same name (`max_age_s` is `--max-age-s`). Output is
a table or key/value section for people and exactly the result model with `--json`.
Destructive commands show what they would do and ask; without a terminal they
refuse unless `--force` is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import types
import typing
from collections.abc import Callable, Iterator
from typing import Any, Literal

import click
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from natsop import __version__
from natsop.bootstrap import ConnectOptions, open_context
from natsop.context import Context, ProgressFn
from natsop.errors import NatsopError, UserError
from natsop.models import Confirmable
from natsop.registry import Operation, Result, operations
from natsop.render import error_text, renderable
from natsop.runner import run_operation

__all__ = ["build_cli", "main"]

HIDDEN_FIELDS = {"account_name", "confirm"}
NOUN_HELP = {
    "account": "The account: JetStream usage, connections, statistics, TLS, backup and restore.",
    "backup": "Check backups written by stream/account backup (or by natscli).",
    "batch": "Atomic batch publishing (all messages stored, or none).",
    "consumer": "Consumers: list, inspect, create, pause, fetch, report lag.",
    "counter": "Distributed counters (2.12+).",
    "event": "Events in the standard envelope (UUIDv7 ids, correlation headers).",
    "kv": "Key-Value buckets and keys.",
    "object": "Object Store buckets and objects.",
    "report": "Reports across servers.",
    "schedule": "Messages the server publishes later (2.12+).",
    "server": "Servers: info, list, ping, and subject-mapping tests.",
    "stream": "Streams: list, inspect, read, search, create, change, purge, back up.",
}
# natscli's short nouns.
NOUN_ALIASES = {"str": "stream", "con": "consumer", "obs": "consumer", "obj": "object", "srv": "server",
                "acc": "account"}


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


def _parse_kv(values: tuple[str, ...], sep: str, name: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        if sep not in item:
            raise UserError(f"--{name} takes KEY{sep}VALUE, got {item!r}", code="invalid_argument")
        k, v = item.split(sep, 1)
        out[k.strip()] = v.strip()
    return out


def _param_for(name: str, field: FieldInfo, positional: bool) -> tuple[click.Parameter, Callable[[Any], Any]]:
    """A click parameter for a model field, and the function that turns its value into the field's."""
    inner, _optional = _unwrap(field.annotation)
    required = field.is_required()
    help_text = field.description or ""
    opt = "--" + name.replace("_", "-")
    convert: Callable[[Any], Any] = lambda v: v  # noqa: E731
    origin = typing.get_origin(inner)
    click_type: Any = None
    multiple = False
    is_flag = False
    if inner is bool:
        is_flag = True
    elif inner in (int, float, str):
        click_type = inner
    elif origin is Literal:
        click_type = click.Choice([str(a) for a in typing.get_args(inner)])
    elif origin is list and typing.get_args(inner) and _unwrap(typing.get_args(inner)[0])[0] in (str, int, float):
        click_type = _unwrap(typing.get_args(inner)[0])[0]
        multiple = True
        convert = lambda v: list(v) if v else None  # noqa: E731
    elif origin is list:
        # A list whose inner type is Annotated[str, ...] (validated names) is still strings.
        click_type = str
        multiple = True
        convert = lambda v: list(v) if v else None  # noqa: E731
    elif origin is dict:
        value_t = typing.get_args(inner)[1] if typing.get_args(inner) else Any
        if value_t is str:
            multiple = True
            click_type = str
            help_text += " (KEY=VALUE, repeatable)"
            convert = lambda v: _parse_kv(v, "=", name) if v else None  # noqa: E731
        elif typing.get_origin(value_t) is list:
            multiple = True
            click_type = str
            help_text += " (NAME:VALUE, repeatable)"

            def convert(v: Any) -> Any:
                if not v:
                    return None
                out: dict[str, list[str]] = {}
                for item in v:  # one pair at a time, so a repeated name keeps every value
                    for k, val in _parse_kv((item,), ":", name).items():
                        out.setdefault(k, []).append(val)
                return out
        else:
            click_type = str
            help_text += " (JSON)"
            convert = lambda v: json.loads(v) if v else None  # noqa: E731
    else:
        click_type = str
        help_text += " (JSON)"
        convert = lambda v: json.loads(v) if v else None  # noqa: E731

    if positional and not multiple:
        return click.Argument([name], type=click_type, required=required), convert
    if positional and multiple:
        return click.Argument([name], type=click_type, nargs=-1, required=required), convert
    default = None if not required else ...
    if is_flag:
        return click.Option([f"{opt}/--no-{name.replace('_', '-')}"], default=None, help=help_text), convert
    return click.Option([opt], type=click_type, multiple=multiple, required=required and default is ...,
                        default=None if multiple is False else (), help=help_text,
                        show_default=False), convert


class _State:
    def __init__(self, conn: ConnectOptions, as_json: bool, account: str | None, files_dir: str | None,
                 read_only: bool) -> None:
        self.conn = conn
        self.read_only = read_only
        self.as_json = as_json
        self.account = account
        self.files_dir = files_dir


def _emit(result: BaseModel, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result.model_dump(mode="json"), indent=2))
        return
    from rich.console import Console

    # Piped output is plain and wide enough that tables are not cut.
    width = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", "200"))
    # Data is shown as it is: "[/x]" in a value is no markup (it crashed) and ":AB:" no emoji.
    Console(soft_wrap=False, width=width, markup=False, emoji=False).print(renderable(result))


def _fail(err: NatsopError, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"error": err.to_dict()}, indent=2, default=str))
    else:
        click.echo(f"natsop: {error_text(err)}", err=True)
    sys.exit(1)


@contextlib.contextmanager
def _progress_bar(enabled: bool) -> Iterator[ProgressFn | None]:
    """A progress bar on stderr for long work (transfers, backups), only on a terminal."""
    if not enabled:
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn(), transient=True, console=_stderr_console()) as bar:
        task = bar.add_task("", total=None)

        async def report(done: float, total: float | None, message: str | None) -> None:
            bar.update(task, completed=done, total=total, description=message or "")

        yield report


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


async def _run(state: _State, op: Operation, arguments: dict[str, Any], force: bool) -> None:
    async with open_context(state.conn, files_dir=state.files_dir) as base:
        with _progress_bar(sys.stderr.isatty() and not state.as_json) as progress:
            ctx = base.with_progress(progress)
            result = await run_operation(ctx, op, arguments)
            await _confirm_and_emit(state, op, arguments, force, ctx, result)


async def _confirm_and_emit(state: _State, op: Operation, arguments: dict[str, Any], force: bool, ctx: Context,
                            result: BaseModel) -> None:
    """A dry run of a destructive command becomes the real thing only when confirmed or forced."""
    if isinstance(result, Confirmable) and result.confirmation_required:
        if not force:
            if not (sys.stdin.isatty() and sys.stdout.isatty()):
                _emit(result, state.as_json)
                raise UserError(f"not confirmed: {result.action}", code="confirmation_required",
                                hint="Run it again with --force (-f) to carry it out.")
            click.echo(f"About to {result.action}.")
            if not click.confirm("Really do this?", default=False):
                raise UserError("cancelled; nothing was changed", code="cancelled", hint="")
        result = await run_operation(ctx, op, {**arguments, "confirm": result.confirm_with})
    _emit(result, state.as_json)
    status = result.exit_status() if isinstance(result, Result) else 0
    if status:
        sys.exit(status)


def _command(op: Operation) -> click.Command:
    converters: dict[str, Callable[[Any], Any]] = {}
    params: list[click.Parameter] = []
    for name in op.args:
        p, conv = _param_for(name, op.params.model_fields[name], positional=True)
        params.append(p)
        converters[name] = conv
    for name, field in op.params.model_fields.items():
        if name in op.args or name in HIDDEN_FIELDS:
            continue
        p, conv = _param_for(name, field, positional=False)
        params.append(p)
        converters[name] = conv
    if op.destructive:
        params.append(click.Option(["--force", "-f"], is_flag=True, help="Do it without asking"))

    @click.pass_obj
    def callback(state: _State, /, **values: Any) -> None:
        if state.read_only and not op.read_only:  # also when the group was built before --read-only was seen
            _fail(UserError(f"`{' '.join(op.cli)}` changes the deployment and natsop is read-only",
                            code="read_only", hint="Run without --read-only / NATSOP_READ_ONLY to change it."),
                  state.as_json)
        force = bool(values.pop("force", False))
        arguments: dict[str, Any] = {}
        try:
            for name, value in values.items():
                if value is None or value == ():
                    continue
                arguments[name] = converters[name](value)
        except (ValueError, NatsopError) as exc:
            err = exc if isinstance(exc, NatsopError) else UserError(f"bad value: {exc}")
            _fail(err, state.as_json)
        if state.account:
            arguments["account_name"] = state.account
        try:
            asyncio.run(_run(state, op, arguments, force))
        except NatsopError as err:
            _fail(err, state.as_json)
        except KeyboardInterrupt:
            _fail(NatsopError("interrupted", code="interrupted"), state.as_json)

    tag = {"read": "", "write": " [writes]", "destructive": " [destructive]"}[op.impact.value]
    return click.Command(
        op.cli[-1], callback=callback, params=params, help=op.description + tag,
        short_help=op.summary + tag, no_args_is_help=bool(op.args) and any(
            op.params.model_fields[a].is_required() for a in op.args),
    )


class AliasGroup(click.Group):
    """A group that also answers to natscli's aliases (`ls` and `list`, `rm` and `delete`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.aliases: dict[str, str] = {}

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, self.aliases.get(cmd_name, cmd_name))


def build_cli(*, read_only: bool | None = None) -> click.Group:
    """The `natsop` command with every registered operation (only read-only ones if asked)."""
    if read_only is None:
        read_only = _env_flag("NATSOP_READ_ONLY") or "--read-only" in sys.argv
    root = _root()
    groups: dict[tuple[str, ...], AliasGroup] = {(): root}
    for op in operations(read_only=read_only):
        parent: AliasGroup = root
        for depth in range(1, len(op.cli)):
            key = op.cli[:depth]
            if key not in groups:
                grp = AliasGroup(key[-1], help=NOUN_HELP.get(key[-1], f"{key[-1].capitalize()} commands"))
                parent.add_command(grp)
                groups[key] = grp
            parent = groups[key]
        cmd = _command(op)
        parent.add_command(cmd)
        for alias in op.aliases:
            parent.aliases[alias] = cmd.name or op.cli[-1]
    for alias, noun in NOUN_ALIASES.items():
        if (noun,) in groups:
            root.aliases[alias] = noun
    from natsop.serve import serve_command
    from natsop.skill_cli import skill_group

    root.add_command(serve_command)
    root.add_command(skill_group)
    return root


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _root() -> AliasGroup:
    @click.group(cls=AliasGroup, context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(__version__, prog_name="natsop")
    @click.option("--context", envvar="NATS_CONTEXT", help="natscli context to use")
    @click.option("--server", "-s", help="NATS server URL(s), comma-separated (default NATS_URL)")
    @click.option("--creds", help="Credentials file (default NATS_CREDS)")
    @click.option("--nkey", help="NKey seed file (default NATS_NKEY)")
    @click.option("--user", help="User name (default NATS_USER; password from NATS_PASSWORD)")
    @click.option("--tlscert", help="Client certificate for TLS")
    @click.option("--tlskey", help="Client key for TLS")
    @click.option("--tlsca", help="CA to verify the server's certificate")
    @click.option("--embedded", is_flag=True, help="Use natsop's embedded server even if NATS is configured")
    @click.option("--account", "account", help="Configured account (context name) to act as")
    @click.option("--json", "as_json", is_flag=True, help="Print the result as JSON")
    @click.option("--read-only", is_flag=True, envvar="NATSOP_READ_ONLY",
                  help="Offer only read-only commands (also NATSOP_READ_ONLY=1)")
    @click.option("--files-dir", type=click.Path(file_okay=False), help="Directory for files read or written")
    @click.pass_context
    def root(ctx: click.Context, context: str | None, server: str | None, creds: str | None, nkey: str | None,
             user: str | None, tlscert: str | None, tlskey: str | None, tlsca: str | None, embedded: bool,
             account: str | None, as_json: bool, read_only: bool, files_dir: str | None) -> None:
        """natsop: operate NATS — streams, consumers, Key-Value, Object Store — safely.

        With no NATS configured (NATS_URL, NATS_CONTEXT, a selected natscli context),
        natsop starts its embedded nats-server and works there.
        """
        conn = ConnectOptions(context=context, server=server, creds=creds, nkey=nkey, user=user,
                              password=os.environ.get("NATS_PASSWORD"), tls_cert=tlscert, tls_key=tlskey,
                              tls_ca=tlsca, embedded=embedded)
        ctx.obj = _State(conn, as_json, account, files_dir, read_only or _env_flag("NATSOP_READ_ONLY"))

    assert isinstance(root, AliasGroup)
    return root


def main() -> None:
    build_cli()(prog_name="natsop")
