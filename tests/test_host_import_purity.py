"""The host surface defers what it needs only on first use (benchmarks/bench_import.py, P1)."""

from __future__ import annotations

import json
import subprocess
import sys

HOST = (
    "import sys, json, teams_ehr.app\n"
    "from teams_ehr.integrations.starlette import teams_ehr_routes\n"
    "print(json.dumps(sorted(sys.modules)))"
)
# loaded when the host builds its settings, constructs or opens the runtime, or mounts the routes
DEFERRED = {
    "pydantic.main",
    "cryptography.hazmat.primitives.asymmetric.rsa",
    "sqlite3",
    "tomllib",
    "teams_ehr.config",
    "teams_ehr.keys",
    "teams_ehr.store.factory",
    "teams_ehr.attendance.runtime",
    "teams_ehr.attendance.webhook",
    "teams_ehr.integrations.admin_routes",
    "teams_ehr.orgs.console",
    "teams_ehr.visits.provider",
    "teams_ehr.smart.flows",
}


def test_host_import_loads_no_model_store_pipeline_or_console() -> None:
    out = subprocess.run(
        [sys.executable, "-c", HOST], capture_output=True, text=True, check=True
    ).stdout
    assert not set(json.loads(out)) & DEFERRED, sorted(set(json.loads(out)) & DEFERRED)


def test_mounting_the_routes_still_loads_the_route_table() -> None:
    """The lazy route table resolves: every group and the attendance paths are there."""
    from teams_ehr.integrations import routes

    assert set(routes.ROUTE_GROUPS) == {"visits", "jwks", "webhooks", "roster", "admin"}
    assert {spec.name for spec in routes.ROUTES} >= {"graph_notifications", "admin_home", "join"}
    assert routes.WEBHOOK_ROUTES[0].path == "/graph/notifications"
