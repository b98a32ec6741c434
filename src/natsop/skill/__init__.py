"""The skill documents that teach an assistant to use natsop, shipped with the package.

`SKILL.md` (with the front matter Claude Code reads), `reference.md` and `auth.md`. They
are served as MCP resources and installed into Claude Code's skills directory by
`natsop skill install`.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

from natsop.errors import Conflict, UserError

__all__ = ["DOCS", "default_skill_dir", "install", "read_doc"]

DOCS = ("SKILL.md", "reference.md", "auth.md")
_MANIFEST = ".natsop-skill.sha256"


def read_doc(name: str) -> str:
    if name not in DOCS:
        raise UserError(f"no skill document named {name!r}", code="unknown_document",
                        hint=f"The documents are {', '.join(DOCS)}.")
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def default_skill_dir() -> Path:
    return Path.home() / ".claude" / "skills" / "nats"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def install(target: Path, *, force: bool = False) -> list[Path]:
    """Write the documents into `target`. A copy changed since natsop wrote it is kept unless `force`."""
    target.mkdir(parents=True, exist_ok=True)
    manifest = target / _MANIFEST
    written_before: dict[str, str] = {}
    if manifest.is_file():
        for line in manifest.read_text().splitlines():
            digest, _, name = line.partition("  ")
            written_before[name] = digest
    changed = []
    for name in DOCS:
        path = target / name
        if path.exists() and not force:
            current = _digest(path.read_text(encoding="utf-8"))
            if current != written_before.get(name) and current != _digest(read_doc(name)):
                changed.append(name)
    if changed:
        raise Conflict(f"{', '.join(changed)} in {target} changed since natsop installed it",
                       code="skill_changed", hint="Keep your edits, or pass --force to overwrite them.")
    out = []
    lines = []
    for name in DOCS:
        text = read_doc(name)
        path = target / name
        path.write_text(text, encoding="utf-8")
        out.append(path)
        lines.append(f"{_digest(text)}  {name}")
    manifest.write_text("\n".join(lines) + "\n")
    return out
