"""A pytest plugin that proves the suite tested the installed wheel, not the source tree.

``nox -s wheel-tests`` loads it (``-p installed_guard``) with ``TEAMS_EHR_EXPECT_INSTALLED`` set to
the virtual environment it installed the wheel into. The run fails at the start unless
``teams_ehr`` imports from there, and at the end if any ``teams_ehr`` module loaded during the
run came from anywhere else (an editable install, ``src/`` on ``sys.path``, the working folder).
Without the variable the plugin does nothing.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest

VARIABLE = "TEAMS_EHR_EXPECT_INSTALLED"


def expected_prefix() -> Path | None:
    value = os.environ.get(VARIABLE)
    return Path(value).resolve() if value else None


def foreign_modules(prefix: Path) -> list[str]:
    """``teams_ehr`` modules in ``sys.modules`` whose file is not under ``prefix``."""
    found = []
    for name, module in sorted(sys.modules.items()):
        if name != "teams_ehr" and not name.startswith("teams_ehr."):
            continue
        file = getattr(module, "__file__", None)
        if file is None or not Path(file).resolve().is_relative_to(prefix):
            found.append(f"{name} from {file}")
    return found


def pytest_report_header() -> str | None:
    prefix = expected_prefix()
    if prefix is None:
        return None
    import teams_ehr

    return f"teams_ehr {teams_ehr.__version__} imported from {Path(teams_ehr.__file__).parent}"


def pytest_sessionstart(session: pytest.Session) -> None:
    prefix = expected_prefix()
    if prefix is None:
        return
    importlib.import_module("teams_ehr")
    if leaked := foreign_modules(prefix):
        raise pytest.UsageError(
            f"{VARIABLE}={prefix}, but teams_ehr was imported from elsewhere: " + "; ".join(leaked)
        )


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    prefix = expected_prefix()
    if prefix is None:
        return
    if leaked := foreign_modules(prefix):
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                f"{VARIABLE}: {len(leaked)} teams_ehr modules did not come from {prefix}: "
                + "; ".join(leaked[:10]),
                red=True,
            )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
