"""pytest plugin used by ``nox -s mutants``: empty the library's memo caches at session start.

mutmut 3 forks each mutant's test run from a process that has already run the tests once (to
learn which tests cover which function). A ``functools.lru_cache`` filled in that first run
would answer with the unmutated result and hide the mutant (``smart.canonical._canonical``
memoizes every FHIR base it has seen). Clearing a memo never changes what the code computes.
"""

from __future__ import annotations

import sys

import pytest


def pytest_sessionstart(session: pytest.Session) -> None:
    for name, module in list(sys.modules.items()):
        if name != "teams_ehr" and not name.startswith("teams_ehr."):
            continue
        for value in list(vars(module).values()):
            # looked up on the type: a module-level proxy (Flask's ``request``) raises on any
            # attribute access outside a request
            if callable(getattr(type(value), "cache_clear", None)):
                value.cache_clear()
