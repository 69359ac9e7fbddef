"""docs/reference/modules.md has one row for every module and package under src/teams_ehr."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PAGE = ROOT / "docs" / "reference" / "modules.md"

# A table row whose first cell names a module: | `teams_ehr.x.y` | responsibility |
_ROW = re.compile(r"^\|\s*`(?P<module>teams_ehr(?:\.\w+)*)`\s*\|(?P<responsibility>[^|]*)\|\s*$")


def modules_in_tree(src: Path) -> set[str]:
    """Dotted names of every module and package under ``src/teams_ehr`` (a package is its
    ``__init__.py``)."""
    names = set()
    for path in (src / "teams_ehr").rglob("*.py"):
        parts = path.relative_to(src).with_suffix("").parts
        names.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def rows_on_page(text: str) -> list[tuple[str, str]]:
    """(module, responsibility) of every row whose first cell names a module."""
    return [
        (match["module"], match["responsibility"].strip())
        for line in text.splitlines()
        if (match := _ROW.match(line))
    ]


def drift(tree: set[str], rows: Iterable[tuple[str, str]]) -> str:
    """What the page gets wrong, one line per row to add, remove, fill in or deduplicate."""
    rows = list(rows)
    counts = Counter(name for name, _ in rows)
    lines = [f"missing row: {name}" for name in sorted(tree - counts.keys())]
    lines += [f"row names no module: {name}" for name in sorted(counts.keys() - tree)]
    lines += [f"duplicate row: {name}" for name, count in sorted(counts.items()) if count > 1]
    lines += [f"row without a responsibility: {name}" for name, text in rows if not text]
    return "\n".join(lines)


def test_the_page_has_one_row_per_module() -> None:
    problems = drift(modules_in_tree(SRC), rows_on_page(PAGE.read_text(encoding="utf-8")))
    assert not problems, f"{PAGE.relative_to(ROOT)} is out of date with src/teams_ehr:\n{problems}"


def test_drift_lists_exactly_the_missing_extra_and_duplicate_rows(tmp_path: Path) -> None:
    package = tmp_path / "teams_ehr"
    (package / "smart").mkdir(parents=True)
    for relative in ("__init__.py", "errors.py", "smart/__init__.py", "smart/pkce.py"):
        (package / relative).write_text('"""x"""\n', encoding="utf-8")
    page = "\n".join(
        [
            "| Module | Responsibility |",
            "|---|---|",
            "| `teams_ehr` | The public names. |",
            "| `teams_ehr.errors` | Errors. |",
            "| `teams_ehr.errors` | Errors again. |",
            "| `teams_ehr.smart.gone` | A module that was removed. |",
            "| `teams_ehr.smart.pkce` | |",
        ]
    )
    assert drift(modules_in_tree(tmp_path), rows_on_page(page)) == (
        "missing row: teams_ehr.smart\n"
        "row names no module: teams_ehr.smart.gone\n"
        "duplicate row: teams_ehr.errors\n"
        "row without a responsibility: teams_ehr.smart.pkce"
    )
