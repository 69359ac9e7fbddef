"""The fenced code blocks of a Markdown page and the marker comment written just before each.

A marker is an HTML comment on the line before the fence (MkDocs renders nothing for it):
``<!-- illustrative… -->`` (shown, never run: the rest of the comment says why), ``<!-- file: NAME
-->`` (the deployer saves the block as ``NAME``). A block without a marker is run as written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_FENCE = re.compile(r"^(```+|~~~+)\s*([\w+-]*)")
_MARKER = re.compile(r"^<!--\s*(.*?)\s*-->$")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    language: str
    marker: str | None
    text: str

    @property
    def illustrative(self) -> bool:
        return self.marker is not None and self.marker.startswith("illustrative")

    @property
    def file_name(self) -> str | None:
        if self.marker is None or not self.marker.startswith("file:"):
            return None
        return self.marker.removeprefix("file:").strip()

    def commands(self) -> list[str]:
        """The shell commands of the block, ``\\`` continuations joined, comments dropped."""
        commands: list[str] = []
        pending = ""
        for raw in self.text.splitlines():
            line = raw.strip()
            if not pending and (not line or line.startswith("#")):
                continue
            if line.endswith("\\"):
                pending += line[:-1].rstrip() + " "
                continue
            commands.append(pending + line)
            pending = ""
        return commands


def blocks(page: Path) -> list[Block]:
    lines = page.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        fence, language = opening.groups()
        previous = next((lines[i] for i in range(index - 1, -1, -1) if lines[i].strip()), "")
        marker = _MARKER.match(previous.strip())
        end = index + 1
        while end < len(lines) and not lines[end].startswith(fence):
            end += 1
        body = "\n".join(lines[index + 1 : end]) + "\n"
        found.append(Block(page, index + 1, language, marker.group(1) if marker else None, body))
        index = end + 1
    return found
