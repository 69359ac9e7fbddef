"""A FastAPI host for teams-ehr (requirement E2): the library's routes, nothing else of substance.

Run it with your settings (a TOML file and/or ``TEAMS_EHR__SECTION__KEY`` variables, see
``settings.example.toml``, or run ``teams-ehr init`` here)::

    TEAMS_EHR_SETTINGS=settings.toml uvicorn --factory app:app_from_environment

``teams-ehr demo`` serves this same ``create_app`` on the embedded sandbox.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI

from teams_ehr.app import TeamsEhr
from teams_ehr.config import load_settings
from teams_ehr.integrations.starlette import (
    teams_ehr_lifespan,
    teams_ehr_not_found,
    teams_ehr_routes,
)


def create_app(runtime: TeamsEhr) -> FastAPI:
    """The host: the runtime opened with the app, every teams-ehr route mounted at the root."""
    app = FastAPI(
        title="teams-ehr example",
        lifespan=teams_ehr_lifespan(runtime),
        docs_url=None,  # no public API docs: these routes are for EHRs and browsers
        redoc_url=None,
        openapi_url=None,
        # an unknown path: an HTML page for a browser, JSON for an API client
        exception_handlers={404: teams_ehr_not_found},
    )
    app.router.routes.extend(teams_ehr_routes(runtime))

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def app_from_environment() -> FastAPI:
    """``uvicorn --factory``: settings from ``$TEAMS_EHR_SETTINGS`` (TOML) and the environment."""
    path = os.environ.get("TEAMS_EHR_SETTINGS")
    settings = load_settings(Path(path) if path else None)
    return create_app(TeamsEhr(settings))
