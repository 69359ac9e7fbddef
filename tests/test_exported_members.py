"""Lock the public surface: ``__all__`` is sorted, complete and every name resolves (httpx)."""

from __future__ import annotations

import teams_ehr


def test_all_is_sorted_and_resolves() -> None:
    names = teams_ehr.__all__
    assert names == sorted(names, key=lambda n: (n.startswith("_"), n))
    for name in names:
        assert hasattr(teams_ehr, name), name


def test_public_names_match_all() -> None:
    public = {n for n in dir(teams_ehr) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(teams_ehr, n)).__name__ == "module"}
    helpers = {"install_redaction"}
    assert public - modules - helpers == set(teams_ehr.__all__) - {"__version__"}
