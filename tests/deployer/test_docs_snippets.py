"""Every fenced snippet of the quickstart and the guides is run by the deployer test or marked
illustrative (issue 9: "Docs executed as a deployer runs them")."""

from __future__ import annotations

from pathlib import Path

import pytest
from docs_blocks import blocks

DOCS = Path(__file__).resolve().parents[2] / "docs"
QUICKSTART = DOCS / "quickstart.md"
GUIDES = sorted((DOCS / "guides").glob("*.md"))


@pytest.mark.parametrize("page", GUIDES, ids=lambda page: page.name)
def test_guide_snippets_are_marked_illustrative(page: Path) -> None:
    # The guides show fragments of a bigger host; the quickstart is the page that runs.
    unmarked = [f"{page.name}:{b.line}" for b in blocks(page) if not b.illustrative]
    assert not unmarked, f"add <!-- illustrative: why --> before the fence at {unmarked}"


def test_quickstart_snippets_are_run_or_marked() -> None:
    for block in blocks(QUICKSTART):
        if block.illustrative:
            continue
        if block.file_name is not None:
            assert block.language == "python", block
            compile(block.text, block.file_name, "exec")
            continue
        assert block.language == "sh", f"quickstart.md:{block.line}: runs only sh blocks"
        assert block.commands(), f"quickstart.md:{block.line}: an empty command block"


def test_markers_are_read_from_the_line_before_the_fence(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- illustrative: no -->\n```sh\nrm -rf /\n```\n\n"
        "text\n<!-- file: a.py -->\n\n```python\nx = 1\n```\n"
        "```sh\n# a comment\nteams-ehr init \\\n  here\ncd here\n```\n",
        encoding="utf-8",
    )
    first, second, third = blocks(page)
    assert first.illustrative
    assert second.file_name == "a.py"
    assert second.text == "x = 1\n"
    assert third.marker is None
    assert third.commands() == ["teams-ehr init here", "cd here"]
