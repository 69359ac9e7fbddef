"""A prefix-mounted host as a real uvicorn process (issue 10, finding 5): the redirect URIs the
library generates carry the prefix, the excluded console is absent, and a prefix that
``app_base_url`` does not carry stops the server at start-up with the fix in its log."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from hosts.processes import HostProcess, _wait_until_healthy, free_port, write_settings
from teams_ehr.testing.sandbox import APPROVER_OID, TENANT_ID

HERE = Path(__file__).resolve().parent

pytestmark = pytest.mark.slow


@contextmanager
def mounted_host(
    folder: Path, *, base_path: str, prefix: str, exclude: str = ""
) -> Iterator[HostProcess]:
    """``tests/hosts/mounted_host.py`` under uvicorn on a free loopback port."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = write_settings(folder, app_base_url=url + base_path)
    with settings.open("a", encoding="utf-8") as extra:
        extra.write(f'[admin]\nadministrators = {{ "{TENANT_ID}" = ["{APPROVER_OID}"] }}\n')
    env = {
        **os.environ,
        "TEAMS_EHR_SETTINGS": str(settings),
        "MOUNT_PREFIX": prefix,
        "MOUNT_EXCLUDE": exclude,
        "TEAMS_EHR__MICROSOFT__CLIENT_SECRET": "loopback-test-secret",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("TEAMS_EHR__ENCRYPTION_KEY", None)
    command = [
        *(sys.executable, "-m", "uvicorn", "--factory", "mounted_host:app_from_environment"),
        *("--app-dir", str(HERE), "--host", "127.0.0.1", "--port", str(port)),
    ]
    log_path = folder / "uvicorn.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=log)
    host = HostProcess(url, process, log_path)
    try:
        yield host
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:  # pragma: no cover - a hung shutdown
            process.kill()
            process.wait()


def test_the_prefix_reaches_the_redirect_uris_of_a_real_server(tmp_path: Path) -> None:
    with mounted_host(tmp_path, base_path="/ehr", prefix="/ehr", exclude="roster") as host:
        _wait_until_healthy(host)
        with httpx.Client(base_url=host.url, timeout=10) as client:
            assert client.get("/healthz").json() == {"status": "ok", "organizations": 0}
            assert client.get("/ehr/.well-known/jwks.json").status_code == 200
            assert client.get("/.well-known/jwks.json").status_code == 404
            begun = client.get("/ehr/admin/signin", params={"tenant": TENANT_ID})
            assert begun.status_code == 302
            query = parse_qs(urlsplit(begun.headers["location"]).query)
            assert query["redirect_uri"] == [f"{host.url}/ehr/admin/microsoft/callback"]
            home = client.get("/ehr/admin")
            assert home.status_code == 200
            assert "action='/ehr/admin/signin'" in home.text
            roster = client.get("/ehr/visits/org/meeting/roster")
            assert roster.status_code == 404  # the excluded group is not mounted
    output = host.output()
    assert "Traceback" not in output
    assert '"GET /ehr/admin/signin' in output  # uvicorn's access log: served under the prefix


def test_a_prefix_app_base_url_lacks_stops_the_server_at_start_up(tmp_path: Path) -> None:
    with mounted_host(tmp_path, base_path="", prefix="/ehr") as host:
        assert host.process.wait(timeout=60) != 0
    output = host.output()
    assert "mount_prefix_mismatch" in output or "does not end with it" in output
    assert f"set app_base_url (TEAMS_EHR__APP_BASE_URL) to '{host.url}/ehr'" in output
