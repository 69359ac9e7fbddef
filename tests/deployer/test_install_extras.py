"""The extras the docs tell a deployer to install bring what the docs then run (issue 9)."""

from __future__ import annotations

from deployer_extras import packages_of


def test_demo_extra_serves_the_demo_and_the_docs() -> None:
    # README and docs/quickstart.md: `pip install -e ".[demo]"`, `teams-ehr demo`, `mkdocs serve`
    assert {"fastapi", "uvicorn", "mkdocs"} <= packages_of({"demo"})


def test_extras_resolve_through_self_references() -> None:
    assert packages_of({"flask"}) == {"flask"}
    assert "flask" not in packages_of({"demo"})
