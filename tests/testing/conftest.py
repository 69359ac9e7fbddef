"""The docs and harness tests run inner pytest sessions with ``pytester``.

``pytest_plugins`` is only allowed in the root conftest, so this conftest registers pytester
itself (``pytest_configure`` is a historic hook: late conftests get it too), and imports once,
here, what the inner sessions use: pytester's in-process runs drop modules an inner session
imported first, and cryptography's Rust bindings do not survive such a re-import.
"""

from __future__ import annotations

import fastapi
import flask
import pytest

import teams_ehr.app
import teams_ehr.integrations.flask
import teams_ehr.integrations.starlette
import teams_ehr.testing.harness
import teams_ehr.testing.sandbox

PRELOADED = (
    fastapi,
    flask,
    teams_ehr.app,
    teams_ehr.integrations.flask,
    teams_ehr.integrations.starlette,
    teams_ehr.testing.harness,
    teams_ehr.testing.sandbox,
)


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin("pytester"):
        config.pluginmanager.import_plugin("pytester")
