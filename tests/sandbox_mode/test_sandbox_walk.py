"""Microsoft sandbox mode through the unmodified example hosts, as real server processes.

The EHR is real to the host: FakeEhr (with its FHIR store) served on 127.0.0.1 over http, reached
through the network. Microsoft is the host's own: ``microsoft_sandbox = true`` in the settings
file, nothing else changed. An EHR analyst signs in to the admin console with the sandbox's
Microsoft account, creates the organization, signs in to the EHR and approves it; the clinician
launches from the EHR, signs in to (sandbox) Microsoft once and lands in the simulated Teams
meeting as its organizer; the patient launches from the portal, waits in the lobby and is
admitted; the clinician ends the meeting and the attendance is written back to the EHR's FHIR
server. Every page the host serves shows the "Microsoft sandbox" banner.
"""

from __future__ import annotations

import base64
import os
import re
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from demo.demo_clicks import Clicker
from hosts.processes import HostKind, free_port, run_host
from teams_ehr.keys import LocalSigner
from teams_ehr.microsoft_sandbox import SANDBOX_APPROVER_OID, SANDBOX_PATH, SANDBOX_TENANT_ID
from teams_ehr.testing.fake_ehr import FakeEhr
from teams_ehr.testing.fake_fhir import FakeFhirServer
from teams_ehr.testing.loopback import serve_on_loopback

pytestmark = pytest.mark.slow

BANNER = "data-testid='microsoft-sandbox-banner'"
CLIENT_ID = "teams-ehr-sandbox-walk"
ORG = "walk-clinic"
FHIR_PATH = "/interconnect/api/FHIR/R4"
_WRITE_BACK_DEADLINE_S = 60.0


def _settings(folder: Path, *, app_base_url: str, key: Path) -> Path:
    data = base64.b64encode(os.urandom(32)).decode("ascii")
    settings = folder / "settings.toml"
    settings.write_text(
        f'app_base_url = "{app_base_url}"\n'
        'store_url = "sqlite:///store.sqlite3"\n'
        f'encryption_key = "{data}"\n'
        f'external_id_key = "{data}"\n'
        "allow_http = true\n"
        "microsoft_sandbox = true\n"
        "[smart]\n"
        f'test_key_path = "{key.name}"\n'
        "[microsoft]\n"
        'client_id = "00000000-0000-0000-0000-000000000000"\n'
        'client_secret = "sandbox-only"\n'
        "[attendance]\n"
        'reconcile_delay = "PT0S"\n'
        'poll_interval = "PT0.2S"\n',
        encoding="utf-8",
    )
    return settings


@pytest.fixture
def ehr() -> Iterator[tuple[FakeEhr, FakeFhirServer]]:
    """FakeEhr and its FHIR store on 127.0.0.1 over http: the host's real EHR."""
    fhir = FakeFhirServer("http://127.0.0.1" + FHIR_PATH)
    fake = FakeEhr("http://127.0.0.1" + FHIR_PATH, fhir_handler=fhir.handler)
    fhir.token_check = lambda token: fake.token_info(token) is not None
    with serve_on_loopback(fake.asgi_app()) as url:
        fake.rebase(url + FHIR_PATH)
        yield fake, fhir


def _post(browser: Clicker, page: httpx.Response, suffix: str, **fields: str) -> httpx.Response:
    """Submit the form of ``page`` whose action ends with ``suffix`` (hidden fields kept)."""
    forms = re.findall(r"<form method='post' action='([^']*)'>(.*?)</form>", page.text, re.S)
    for action, inner in forms:
        if action.endswith(suffix):
            hidden = dict(re.findall(r"name='([^']*)' value='([^']*)'", inner))
            return browser._keep(browser.client.post(action, data={**hidden, **fields}))
    raise AssertionError(f"no form posting to …{suffix} on {page.url.path}")


def _approve(analyst: Clicker, fhir_base: str) -> None:
    signin = analyst.get(f"/admin/signin?tenant={SANDBOX_TENANT_ID}")
    assert signin.url.path.startswith(SANDBOX_PATH + "/entra/"), signin.url
    assert BANNER in signin.text
    home = analyst.click(signin, "ms-signin-approver")
    assert home.url.path == "/admin", home.text
    assert BANNER in home.text
    created = _post(
        analyst,
        home,
        "/admin/orgs",
        org_id=ORG,
        display_name="Walk Clinic",
        approver_oid=SANDBOX_APPROVER_OID,
        environment="test",
        fhir_base=fhir_base,
        client_id=CLIENT_ID,
    )
    assert created.url.path == f"/admin/orgs/{ORG}", created.text
    submitted = _post(analyst, created, "/test/transition", action="submit")
    assert submitted.status_code == 200, submitted.text
    review = analyst.get(f"/admin/orgs/{ORG}/test/review")
    verified = _post(analyst, review, "/approval")  # the EHR's real authorize, then back
    assert "EHR sign-in verified" in verified.text, verified.text
    records = _post(analyst, verified, "/approve")
    assert records.url.path == f"/admin/orgs/{ORG}/test/records", records.text


def _launch_path(kind: str, ehr: FakeEhr, launch: str) -> str:
    return f"/{kind}/{ORG}/test?" + str(httpx.QueryParams({"iss": ehr.base_url, "launch": launch}))


@pytest.mark.parametrize("kind", ["fastapi", "flask"])
def test_the_whole_visit_with_microsoft_played_by_the_host(
    kind: HostKind, tmp_path: Path, ehr: tuple[FakeEhr, FakeFhirServer]
) -> None:
    fake, fhir = ehr
    port = free_port()
    app_base_url = f"http://127.0.0.1:{port}"
    signer = LocalSigner.generate("RS384")
    key = tmp_path / "test-key.pem"
    key.write_bytes(signer.private_pem())
    _settings(tmp_path, app_base_url=app_base_url, key=key)
    fake.register_client(
        CLIENT_ID,
        redirect_uris=[app_base_url + "/callback"],
        jwks={"keys": [signer.public_jwk()]},
    )
    start = fake.clock().replace(microsecond=0)
    fhir.seed(
        {
            "resourceType": "Appointment",
            "id": "appt-1",
            "status": "booked",
            "start": start.isoformat(),
            "end": (start + timedelta(hours=1)).isoformat(),
            "participant": [{"status": "accepted"}],
        }
    )

    with run_host(kind, tmp_path / "settings.toml", port) as host:
        analyst, clinician, patient = (Clicker(host.url) for _ in range(3))
        try:
            _approve(analyst, fake.base_url)

            # The clinician's "Begin virtual visit": the EHR's real launch, sandbox Microsoft.
            launch = fake.issue_launch(
                appointment="appt-1", encounter="encounter-1", user="practitioner-1"
            )
            signin = clinician.get(_launch_path("launch", fake, launch))
            assert signin.url.path.startswith(SANDBOX_PATH + "/entra/"), signin.text
            prejoin = clinician.click(signin, "ms-signin")
            assert prejoin.url.path.startswith(SANDBOX_PATH + "/teams/rooms/"), prejoin.text
            assert BANNER in prejoin.text
            organizer = clinician.click(prejoin, "join-organizer")
            assert "You are in the meeting." in organizer.text

            # The patient's portal launch: the same meeting, as a guest, into the lobby.
            portal = fake.issue_launch(
                patient="patient-1", appointment="appt-1", encounter="encounter-1", user="patient-1"
            )
            guest_prejoin = patient.get(_launch_path("patient", fake, portal))
            assert guest_prejoin.url.path == prejoin.url.path, guest_prejoin.text
            waiting = patient.click(guest_prejoin, "join-guest", name="Pat")
            assert "waiting in the lobby" in waiting.text

            room = clinician.get(str(organizer.url.path))
            admitted = clinician.click(room, "admit")
            assert "Pat" in admitted.text
            assert "You are in the meeting." in patient.get(str(waiting.url.path)).text
            patient.click(patient.get(str(waiting.url.path)), "leave")
            clinician.click(clinician.get(str(organizer.url.path)), "end-meeting")

            deadline = time.monotonic() + _WRITE_BACK_DEADLINE_S
            while not fhir.written() and time.monotonic() < deadline:
                time.sleep(0.5)
            assert fhir.written(), f"no write-back to the EHR:\n{host.output()[-4000:]}"
            (note,) = fhir.written("DocumentReference")
            text = base64.b64decode(note["content"][0]["attachment"]["data"]).decode("utf-8")
            assert "Provider connected" in text, text
            assert "Patient connected" in text, text
            assert "Patient waited in the lobby" in text, text
        finally:
            for browser in (analyst, clinician, patient):
                browser.close()
    output = host.output()
    assert "Traceback" not in output, output[-4000:]
    assert "Microsoft sandbox mode" in output
