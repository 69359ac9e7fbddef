"""The plugin's own tests run inner pytest sessions with ``pytester`` (respx, pytest_httpx).

``pytest_plugins`` is only allowed in the root conftest, so this conftest registers pytester
itself when it is loaded (``pytest_configure`` is a historic hook: late conftests get it too).

pytester's in-process runs restore ``sys.modules`` afterwards, dropping modules first imported
by an inner session; cryptography's Rust bindings do not survive such a re-import (isinstance
checks start failing), so everything the inner sessions use is imported once, here.
"""

from __future__ import annotations

import pytest

import teams_ehr.app
import teams_ehr.integrations.starlette
import teams_ehr.testing.harness
import teams_ehr.testing.sandbox

PRELOADED = (
    teams_ehr.app,
    teams_ehr.integrations.starlette,
    teams_ehr.testing.harness,
    teams_ehr.testing.sandbox,
)


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin("pytester"):
        config.pluginmanager.import_plugin("pytester")
