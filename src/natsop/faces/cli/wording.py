"""Help and advice in the CLI's words: MCP tool names become commands, parameters become options."""

from __future__ import annotations

import functools
import re

from natsop.faces.cli.params import HIDDEN_FIELDS
from natsop.registry import Operation, operations

_VALUE = r"\[[^\]]*\]|'[^']*'|\"[^\"]*\"|[\w.*>-]*[\w*>]"
# The MCP forms in help text: `name` in backticks, an identifier with an underscore, name=value.
_MCP_WORDS = re.compile(r"`(?P<tick>[a-z][a-z0-9_]*)`"
                        r"|(?<![\w`-])(?P<key>[a-z][a-z0-9_]*)=(?P<value>" + _VALUE + ")"
                        r"|(?<![\w`-])(?P<word>[a-z][a-z0-9]*(?:_[a-z0-9]+)+)(?![\w-])")


class Words:
    """MCP wording said the CLI's way: `kv_purge` is `natsop kv purge`, `skip=[id]` is `--skip ID`,
    `ack=true` is `--ack`, and a parameter's name is its option (or its positional argument)."""

    def __init__(self, ops: list[Operation]) -> None:
        self.commands = {o.tool: "natsop " + " ".join(o.cli) for o in ops}
        self.ops = {o.tool: o for o in ops}

    def say(self, text: str, op: Operation | None = None) -> str:
        """`text` with tool names as commands and, for `op` (by default the first tool the text
        names), its parameters as options."""
        if "_" not in text and "`" not in text and "=" not in text:
            return text
        if op is None:
            op = next((self.ops[w] for w in re.findall(r"[a-z][a-z0-9_]*", text) if w in self.ops), None)
        params = {n for n in op.params.model_fields if n not in HIDDEN_FIELDS} if op else set()
        args = set(op.args) if op else set()

        def flag(name: str, value: str | None = None) -> str:
            if name in args:
                return name.upper() if value is None else value.strip("'\"[]")
            opt = "--" + name.replace("_", "-")
            if value is None or value == "true":
                return opt
            if value == "false":
                return "--no-" + name.replace("_", "-")
            if value.startswith("["):
                return f"{opt} {value.strip('[]').upper()}"
            return f"{opt} {value.strip(chr(39) + chr(34))}"

        def one(m: re.Match[str]) -> str:
            if m["tick"]:
                name = m["tick"]
                if name in self.commands:
                    return f"`{self.commands[name]}`"
                return f"`{flag(name)}`" if name in params else m[0]
            if m["key"]:
                return flag(m["key"], m["value"]) if m["key"] in params else m[0]
            name = m["word"]
            if name in self.commands:
                return self.commands[name]
            return flag(name) if name in params else m[0]

        return _MCP_WORDS.sub(one, text)


@functools.cache
def cli_words() -> Words:
    return Words(operations())
