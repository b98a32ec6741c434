"""The command line: natscli's nouns and verbs, generated from the registry.

`natsop stream info ORDERS` runs the operation `stream_info` with `stream="ORDERS"`.
A parameter named in the operation's `args` is a positional argument; every other
parameter is an option with the same name (`max_age_s` is `--max-age-s`); models,
lists of models and dicts take JSON. Output is a table or key/value section for
people and exactly the result model with `--json` (one JSON document, errors too).
Destructive commands show what they would do and ask; without a terminal they
refuse unless `--force` is given. The global options (`--json`, `-s`, `--context`,
...) go before the noun or after the verb, as in natscli.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
import typing
from collections.abc import Callable
from typing import Any

import click
from pydantic import BaseModel

from natsop import __version__
from natsop.embedded.bootstrap import ConnectOptions, Terminated, Termination, open_context, termination
from natsop.errors import NatsopError, UserError
from natsop.faces.cli.params import HIDDEN_FIELDS, param_for
from natsop.faces.cli.progress import Activity, shows_activity
from natsop.faces.cli.wording import Words, cli_words
from natsop.faces.render import error_text, renderable
from natsop.models import Confirmable
from natsop.registry import Operation, Result, operations
from natsop.runner import run_operation
from natsop.wire.context import Context

__all__ = ["build_cli", "main"]

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
NOUN_ALIASES = {"str": "stream", "st": "stream", "ms": "stream", "s": "stream", "con": "consumer",
                "obs": "consumer", "c": "consumer", "obj": "object", "srv": "server", "acc": "account",
                "a": "account", "rep": "report"}
# natscli's verb aliases that hold in every group having the verb (`stream nfo`, `consumer l`).
VERB_ALIASES = {"info": ("nfo", "i"), "ls": ("list", "l"), "report": ("rep",)}
# natscli verbs that do two things: with one more positional argument the command runs another
# operation. `kv rm BUCKET` deletes the bucket; `kv rm BUCKET KEY` deletes the key, as `kv del` does.
EXTRA_ARG_ROUTES: dict[str, tuple[str, str]] = {"kv_delete_bucket": ("key", "kv_del")}

# The global options: on `natsop` itself and, hidden, after every command's name (`natsop stream ls
# --json`, `natsop serve --read-only`). Each is (declarations, settings).
GLOBAL_OPTIONS: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (("--context",), {"help": "natscli context to use"}),
    (("--server", "-s"), {"help": "NATS server URL(s), comma-separated (default NATS_URL)"}),
    (("--creds",), {"help": "Credentials file (default NATS_CREDS)"}),
    (("--nkey",), {"help": "NKey seed file (default NATS_NKEY)"}),
    (("--user",), {"help": "User name (default NATS_USER; password from NATS_PASSWORD)"}),
    (("--tlscert",), {"help": "Client certificate for TLS"}),
    (("--tlskey",), {"help": "Client key for TLS"}),
    (("--tlsca",), {"help": "CA to verify the server's certificate"}),
    (("--embedded",), {"is_flag": True, "help": "Use natsop's embedded server even if NATS is configured"}),
    (("--account", "account"), {"help": "Configured account (context name) to act as"}),
    (("--json", "as_json"), {"is_flag": True, "help": "Print the result as JSON"}),
    (("--read-only",), {"is_flag": True, "help": "Offer only read-only commands (also NATSOP_READ_ONLY=1)"}),
    (("--files-dir",), {"type": click.Path(file_okay=False),
                        "help": "Read and write files only under this directory (MCP tools always stay in one: "
                                "this, or the current directory; commands take any path without it)"}),
)
ROOT_ONLY: dict[str, dict[str, Any]] = {"context": {"envvar": "NATS_CONTEXT"}, "read_only": {"envvar": "NATSOP_READ_ONLY"}}
GLOBAL_EPILOG = ("Global options (see natsop --help: --json, -s URL, --context, --creds, --read-only, ...) "
                 "may also follow the command; there they win over the same option given before it.")


# ----------------------------------------------------------------------------- state and output


class _State:
    """The global options: as given before the noun, then overridden by those after the verb."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values
        self.conn = ConnectOptions(
            context=values.get("context"), server=values.get("server"), creds=values.get("creds"),
            nkey=values.get("nkey"), user=values.get("user"),
            tls_cert=values.get("tlscert"), tls_key=values.get("tlskey"), tls_ca=values.get("tlsca"),
            embedded=bool(values.get("embedded")),
        )
        self.as_json = bool(values.get("as_json"))
        self.account: str | None = values.get("account")
        self.files_dir: str | None = values.get("files_dir")
        self.read_only = bool(values.get("read_only")) or _env_flag("NATSOP_READ_ONLY")

    def overridden(self, given: dict[str, Any]) -> _State:
        """This state with the options given after the command (a flag can only be turned on)."""
        changed = {k: v for k, v in given.items() if v is not None and v is not False}
        return _State({**self.values, **changed}) if changed else self


@functools.cache
def _hidden_global_options() -> tuple[click.Option, ...]:
    # Built once and shared by every command: click only reads them while parsing.
    return tuple(click.Option(list(decls), hidden=True, default=None, **settings) for decls, settings in GLOBAL_OPTIONS)


def _global_params(taken: set[str]) -> tuple[list[click.Parameter], list[str]]:
    """The global options for use after a command's name, except those the command has itself."""
    params: list[click.Parameter] = []
    names: list[str] = []
    for opt in _hidden_global_options():
        if opt.name is None or opt.name in taken:
            continue
        params.append(opt)
        names.append(opt.name)
    return params, names


def _emit(result: BaseModel, as_json: bool) -> None:
    if isinstance(result, Result):
        result = result.reworded(cli_words().say)  # advice in commands, not tool calls
    if as_json:
        click.echo(json.dumps(result.model_dump(mode="json"), indent=2))
        return
    from rich.console import Console

    # Piped output is plain and wide enough that tables are not cut.
    width = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", "200"))
    # Data is shown as it is: "[/x]" in a value is no markup (it crashed) and ":AB:" no emoji.
    Console(soft_wrap=False, width=width, markup=False, emoji=False).print(renderable(result))


def _fail(err: NatsopError, as_json: bool) -> typing.NoReturn:
    """The one way a command fails: the error document on stdout with --json, else text on stderr."""
    # Hints name MCP tools: say the command instead (not in the message, which may quote the user's names).
    err.hint = cli_words().say(err.hint)
    if as_json:
        click.echo(json.dumps({"error": err.to_dict()}, indent=2, default=str))
    else:
        click.echo(f"natsop: {error_text(err)}", err=True)
    sys.exit(1)


async def _run_shown(state: _State, base: Context, op: Operation, arguments: dict[str, Any]) -> BaseModel:
    if not shows_activity(sys.stderr.isatty(), state.as_json):
        return await run_operation(base, op, arguments)
    with Activity(op, arguments) as activity:
        return await run_operation(base.with_progress(activity.report), op, arguments)


async def _run(state: _State, op: Operation, arguments: dict[str, Any], force: bool) -> None:
    with termination() as term:  # SIGTERM/SIGHUP still close everything and stop a started server
        task = asyncio.current_task()
        assert task is not None
        term.when_asked(task.cancel)
        await _run_in_context(state, op, arguments, force, term)


async def _run_in_context(state: _State, op: Operation, arguments: dict[str, Any], force: bool,
                          term: Termination) -> None:
    async with open_context(state.conn, files_dir=state.files_dir,
                            confine_files=state.files_dir is not None) as base:
        base.read_only = state.read_only  # a read-only tool refuses the arguments that would make it act
        result = await _run_shown(state, base, op, arguments)
        if isinstance(result, Confirmable) and result.confirmation_required:
            if not force:
                with term.blocking():  # the prompt holds the event loop: a signal must interrupt it
                    _confirm(state, result)
            result = await _run_shown(state, base, op, {**arguments, "confirm": result.confirm_with})
        _emit(result, state.as_json)
    status = result.exit_status() if isinstance(result, Result) else 0
    if status:
        sys.exit(status)


def _confirm(state: _State, result: Confirmable) -> None:
    """Ask before a destructive action; without a terminal refuse (with --json, the dry run goes
    into the error document, so stdout stays one JSON document)."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        if not state.as_json:
            _emit(result, as_json=False)
        raise UserError(f"not confirmed: {result.action}", code="confirmation_required",
                        hint="Run it again with --force (-f) to carry it out.",
                        details={"dry_run": result.model_dump(mode="json")} if state.as_json else None)
    click.echo(f"About to {result.action}.", err=True)
    if not click.confirm("Really do this?", default=False, err=True):
        raise UserError("cancelled; nothing was changed", code="cancelled", hint="")


# ----------------------------------------------------------------------------- commands


def _operation_params(op: Operation, words: Words, skip: typing.AbstractSet[str] = frozenset(),
                      optional_args: bool = False) -> tuple[list[click.Parameter], dict[str, Callable[[Any], Any]]]:
    converters: dict[str, Callable[[Any], Any]] = {}
    params: list[click.Parameter] = []
    for name in op.args:
        if name in skip:
            continue
        field = op.params.model_fields[name]
        p, conv = param_for(name, field, positional=True)
        if optional_args:
            p.required = False
        params.append(p)
        converters[name] = conv
    for name, field in op.params.model_fields.items():
        if name in op.args or name in HIDDEN_FIELDS or name in skip:
            continue
        p, conv = param_for(name, field, positional=False)
        if isinstance(p, click.Option) and p.help:
            p.help = words.say(p.help, op)
        params.append(p)
        converters[name] = conv
    return params, converters


def _command(op: Operation, words: Words, route: tuple[str, Operation] | None = None) -> click.Command:
    """The command for `op`; with `route` (arg, other), giving that extra argument runs `other`."""
    params, converters = _operation_params(op, words)
    help_text = words.say(op.description, op)
    alt_arg, alt_op = route if route else ("", None)
    if alt_op is not None:
        own = set(converters)
        alt_params, alt_converters = _operation_params(alt_op, words, skip=own - {alt_arg}, optional_args=True)
        for p in alt_params:
            if isinstance(p, click.Option):
                p.help = f"(with {alt_arg.upper()}) {p.help}"
        params += [p for p in alt_params if p.name not in own]
        converters.update(alt_converters)
        help_text += (f"\n\nWith {alt_arg.upper()}: {words.say(alt_op.summary, alt_op)} "
                      f"(as `natsop {' '.join(alt_op.cli)}`).")
    if op.destructive:
        params.append(click.Option(["--force", "-f"], is_flag=True, help="Do it without asking"))
    globals_, global_names = _global_params({p.name for p in params if p.name} | {"force", "f"})
    params += globals_

    @click.pass_obj
    def callback(state: _State, /, **values: Any) -> None:
        state = state.overridden({n: values.pop(n) for n in global_names})
        use = alt_op if alt_op is not None and values.get(alt_arg) not in (None, ()) else op
        if state.read_only and not use.read_only:  # also when the group was built before --read-only was seen
            _fail(UserError(f"`{' '.join(op.cli)}` changes the deployment and natsop is read-only",
                            code="read_only", hint="Run without --read-only / NATSOP_READ_ONLY to change it."),
                  state.as_json)
        force = bool(values.pop("force", False))
        arguments: dict[str, Any] = {}
        try:
            for name, value in values.items():
                if value is None or value == ():
                    continue
                if name not in use.params.model_fields:
                    shown = name.upper() if name == alt_arg else "--" + name.replace("_", "-")
                    raise UserError(f"{shown} does not apply to `natsop {' '.join(op.cli)}` "
                                    f"{'with' if use is alt_op else 'without'} {alt_arg.upper()}",
                                    code="invalid_argument", hint=f"See `natsop {' '.join(op.cli)} --help`.")
                arguments[name] = converters[name](value)
        except (ValueError, NatsopError) as exc:
            err = exc if isinstance(exc, NatsopError) else UserError(f"bad value: {exc}")
            _fail(err, state.as_json)
        if state.account:
            arguments["account_name"] = state.account
        try:
            asyncio.run(_run(state, use, arguments, force))
        except NatsopError as err:
            _fail(err, state.as_json)
        except KeyboardInterrupt:
            _fail(NatsopError("interrupted", code="interrupted"), state.as_json)
        except (asyncio.CancelledError, Terminated):
            _fail(NatsopError("terminated by a signal (SIGTERM or SIGHUP)", code="terminated"), state.as_json)

    tag = {"read": "", "write": " [writes]", "destructive": " [destructive]"}[op.impact.value]
    return click.Command(
        op.cli[-1], callback=callback, params=params, help=help_text + tag, epilog=GLOBAL_EPILOG,
        short_help=words.say(op.summary, op) + tag, no_args_is_help=bool(op.args) and any(
            op.params.model_fields[a].is_required() for a in op.args),
    )


def _with_global_options(cmd: click.Command) -> click.Command:
    """`cmd` (which reads the state with pass_obj) also taking the global options after its name."""
    extra, names = _global_params({p.name for p in cmd.params if p.name})
    target = cmd.callback
    assert target is not None

    def callback(**values: Any) -> Any:
        ctx = click.get_current_context()
        ctx.obj = ctx.obj.overridden({n: values.pop(n) for n in names})
        return ctx.invoke(target, **values)

    return click.Command(cmd.name, callback=callback, params=[*cmd.params, *extra], help=cmd.help,
                         short_help=cmd.short_help, epilog=GLOBAL_EPILOG, context_settings=cmd.context_settings)


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
    words = cli_words()
    root = _root()
    groups: dict[tuple[str, ...], AliasGroup] = {(): root}
    offered = {op.tool: op for op in operations(read_only=read_only)}
    for op in offered.values():
        parent: AliasGroup = root
        for depth in range(1, len(op.cli)):
            key = op.cli[:depth]
            if key not in groups:
                grp = AliasGroup(key[-1], help=NOUN_HELP.get(key[-1], f"{key[-1].capitalize()} commands"))
                parent.add_command(grp)
                groups[key] = grp
            parent = groups[key]
        arg, other = EXTRA_ARG_ROUTES.get(op.tool, ("", ""))
        cmd = _command(op, words, (arg, offered[other]) if other in offered else None)
        parent.add_command(cmd)
        for alias in op.aliases:
            parent.aliases[alias] = cmd.name or op.cli[-1]
    for group in groups.values():
        for verb, aliases in VERB_ALIASES.items():
            if verb in group.commands:
                for alias in aliases:
                    group.aliases.setdefault(alias, verb)
    for alias, noun in NOUN_ALIASES.items():
        if (noun,) in groups:
            root.aliases[alias] = noun
    from natsop.faces.serve import serve_command
    from natsop.faces.skill_install import skill_group

    root.add_command(_with_global_options(serve_command))
    root.add_command(skill_group)
    return root


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _root() -> AliasGroup:
    params: list[click.Parameter] = []
    for decls, settings in GLOBAL_OPTIONS:
        opt = click.Option(list(decls), **settings)
        if opt.name in ROOT_ONLY:
            opt = click.Option(list(decls), **settings, **ROOT_ONLY[opt.name])
        params.append(opt)

    @click.group(cls=AliasGroup, params=params, context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(__version__, prog_name="natsop")
    @click.pass_context
    def root(ctx: click.Context, /, **values: Any) -> None:
        """natsop: operate NATS — streams, consumers, Key-Value, Object Store — safely.

        With no NATS configured (NATS_URL, NATS_CONTEXT, a selected natscli context),
        natsop starts its embedded nats-server and works there.

        The options below may also follow a command (`natsop stream ls --json`,
        `natsop serve --read-only`); given in both places, the one after the command wins.
        """
        ctx.obj = _State(values)

    assert isinstance(root, AliasGroup)
    return root


def main() -> None:
    build_cli()(prog_name="natsop")
