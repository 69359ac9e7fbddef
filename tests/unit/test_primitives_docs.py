"""The primitive pages under docs/primitives/ run as written.

Every ```python block of a page runs, top to bottom, in one namespace per page, as a reader
pasting them in order would. A block followed directly by a ```text block must print exactly that
text. Each page stays within three ``teams_ehr`` imports, none of them private, and works offline
against the package's fakes.
"""

from __future__ import annotations

import ast
import contextlib
import io
import re
from pathlib import Path

import pytest

PAGES = Path(__file__).resolve().parents[2] / "docs" / "primitives"
_FENCE = re.compile(r"^```(?P<lang>\w*)\n(?P<body>.*?)^```$", re.MULTILINE | re.DOTALL)


def _pages() -> list[Path]:
    return sorted(PAGES.glob("*.md"))


def _blocks(page: Path) -> list[tuple[str, str]]:
    return [(m["lang"], m["body"]) for m in _FENCE.finditer(page.read_text(encoding="utf-8"))]


def _examples(page: Path) -> list[tuple[str, str | None]]:
    """Each python block with the text block printed right after it (or ``None``)."""
    blocks = _blocks(page)
    examples = []
    for index, (lang, body) in enumerate(blocks):
        if lang != "python":
            continue
        following = blocks[index + 1] if index + 1 < len(blocks) else None
        expected = following[1] if following is not None and following[0] == "text" else None
        examples.append((body, expected))
    return examples


def _teams_ehr_imports(source: str) -> list[str]:
    modules = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules.append(node.module)
        elif isinstance(node, ast.Import):
            modules.extend(alias.name for alias in node.names)
    return [m for m in modules if m == "teams_ehr" or m.startswith("teams_ehr.")]


def test_there_is_one_page_per_primitive() -> None:
    names = {page.stem for page in _pages()}
    assert {"launch-context", "oauth-client", "meetings", "sansio"} <= names


@pytest.mark.parametrize("page", _pages(), ids=lambda page: page.stem)
def test_the_page_imports_at_most_three_public_teams_ehr_modules(page: Path) -> None:
    source = "\n".join(body for body, _ in _examples(page))
    imports = _teams_ehr_imports(source)
    assert imports, "the page shows no teams_ehr import"
    assert len(imports) <= 3, imports
    assert not [m for m in imports if any(part.startswith("_") for part in m.split("."))]


@pytest.mark.parametrize("page", _pages(), ids=lambda page: page.stem)
def test_every_python_block_runs_and_prints_what_the_page_says(page: Path) -> None:
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem.replace('-', '_')}"}
    examples = _examples(page)
    assert examples
    for number, (body, expected) in enumerate(examples, start=1):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(body, f"{page.name} python block {number}", "exec"), namespace)
        if expected is not None:
            assert out.getvalue() == expected, f"{page.name} python block {number}"
