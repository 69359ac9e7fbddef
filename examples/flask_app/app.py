"""A Flask host for teams-ehr (requirement E2): the library's routes on a sync host, nothing else.

The runtime is async; ``FlaskTeamsEhr`` reaches it through one long-lived anyio blocking portal.
Run it with your settings (a TOML file and/or ``TEAMS_EHR__SECTION__KEY`` variables, see
``settings.example.toml``, or run ``teams-ehr init`` here)::

    TEAMS_EHR_SETTINGS=settings.toml flask --app app:app_from_environment run
"""

from __future__ import annotations

import atexit
import os
from pathlib import Path

from flask import Flask

from teams_ehr.app import TeamsEhr
from teams_ehr.config import load_settings
from teams_ehr.integrations.flask import FlaskTeamsEhr


def create_app(runtime: TeamsEhr) -> Flask:
    """The host: the runtime opened at start-up, every teams-ehr route mounted at the root."""
    app = Flask("teams_ehr_flask_example")
    bridge = FlaskTeamsEhr(runtime)
    bridge.init_app(app)
    atexit.register(bridge.close)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def app_from_environment() -> Flask:
    """``flask --app app:app_from_environment``: settings from ``$TEAMS_EHR_SETTINGS`` and env."""
    path = os.environ.get("TEAMS_EHR_SETTINGS")
    return create_app(TeamsEhr(load_settings(Path(path) if path else None)))
