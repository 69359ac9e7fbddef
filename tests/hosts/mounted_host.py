"""A FastAPI host that mounts teams-ehr under a prefix, for tests/hosts/test_mounted_process.py.

``uvicorn --factory mounted_host:app_from_environment`` reads the settings file named by
``$TEAMS_EHR_SETTINGS`` and the mount prefix from ``$MOUNT_PREFIX``, composes the runtime's
lifespan with its own, and mounts every route group but the ones listed in ``$MOUNT_EXCLUDE``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request

from teams_ehr.app import TeamsEhr
from teams_ehr.config import load_settings
from teams_ehr.integrations.routes import ROUTE_GROUPS
from teams_ehr.integrations.starlette import (
    compose_lifespans,
    teams_ehr_lifespan,
    teams_ehr_routes,
)


def app_from_environment() -> FastAPI:
    runtime = TeamsEhr(load_settings(Path(os.environ["TEAMS_EHR_SETTINGS"])))
    excluded = set(os.environ.get("MOUNT_EXCLUDE", "").split())

    @asynccontextmanager
    async def host_lifespan(_app: FastAPI) -> AsyncIterator[dict[str, int]]:
        yield {"organizations": len(await runtime.registry.list())}

    app = FastAPI(
        lifespan=compose_lifespans(teams_ehr_lifespan(runtime), host_lifespan),
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    include = set(ROUTE_GROUPS) - excluded
    prefix = os.environ["MOUNT_PREFIX"]
    app.router.routes.extend(teams_ehr_routes(runtime, prefix=prefix, include=include))

    @app.get("/healthz")
    async def healthz(request: Request) -> dict[str, object]:
        return {"status": "ok", "organizations": request.state.organizations}

    return app
