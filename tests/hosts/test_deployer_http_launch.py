"""An approved ``http://`` loopback EHR launches through the unmodified examples, as real processes.

Issue 9, finding 1: the launch parsed ``iss`` without the organization's ``allow_http``, so every
http FHIR base (the normal development and sandbox setup) answered 400 ``bad_fhir_base`` even
though the organization was approved with ``allow_http``. Here the package's FakeEhr is served
over http on loopback, the organization is approved in the host's store before it starts, and a
clinician's launch walks EHR authorize → ``/callback`` (code redeemed, ``id_token`` verified and
the appointment read, all over http) → the Microsoft sign-in redirect; a patient's launch reaches
the EHR's authorize endpoint. An https-only organization still refuses an http ``iss``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from hosts.processes import (
    LOOPBACK_ORG,
    HostKind,
    HostProcess,
    LoopbackSandbox,
    approve_http_organization,
    host_process,
    http_ehr_settings,
    loopback_ehr_port,
)
from teams_ehr.keys import LocalSigner

pytestmark = pytest.mark.slow


@dataclass
class World:
    host: HostProcess
    sandbox: LoopbackSandbox


@pytest.fixture(params=["fastapi", "flask"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    kind: HostKind = request.param
    signer = LocalSigner.generate("ES384")
    top_level, sections = http_ehr_settings(tmp_path, signer)
    with loopback_ehr_port() as (port, serve):
        box: list[LoopbackSandbox] = []

        def prepare(settings: Path, url: str) -> None:
            sandbox = LoopbackSandbox(
                app_base_url=url, ehr_base=f"http://localhost:{port}/fhir/r4", signer=signer
            )
            serve(sandbox.ehr.asgi_app())
            approve_http_organization(settings, sandbox)
            box.append(sandbox)

        with host_process(
            kind, tmp_path, top_level=top_level, sections=sections, prepare=prepare
        ) as host:
            yield World(host, box[0])


def test_a_clinician_launch_against_an_http_ehr_reaches_microsoft_sign_in(world: World) -> None:
    sandbox = world.sandbox
    sandbox.seed_appointment("appt-http")
    launch = sandbox.provider_launch("appt-http")
    with httpx.Client(base_url=world.host.url, timeout=20) as browser:
        started = browser.get(
            f"/launch/{LOOPBACK_ORG}/test", params={"iss": sandbox.ehr.base_url, "launch": launch}
        )
        # Before the fix: 400, reason bad_fhir_base, whatever the organization allowed.
        assert started.status_code == 302, world.host.output()
        location = started.headers["location"]
        assert location.startswith(sandbox.ehr.authorize_url)
        at_ehr = httpx.get(location, timeout=20)  # the EHR over http on loopback
        assert at_ehr.status_code in (302, 303)
        back = at_ehr.headers["location"]
        assert back.startswith(world.host.url + "/callback?")
        signed = browser.get(back.removeprefix(world.host.url))
        assert signed.status_code == 302, world.host.output()
        assert signed.headers["location"].startswith("https://login.microsoftonline.com/")
    assert "Traceback" not in world.host.output()


def test_a_patient_launch_against_an_http_ehr_reaches_its_authorize_endpoint(
    world: World,
) -> None:
    sandbox = world.sandbox
    sandbox.seed_appointment("appt-http-p")
    launch = sandbox.ehr.issue_launch(appointment="appt-http-p", patient="patient-1")
    reply = httpx.get(
        f"{world.host.url}/patient/{LOOPBACK_ORG}/test",
        params={"iss": sandbox.ehr.base_url, "launch": launch},
        timeout=20,
    )
    assert reply.status_code == 302, world.host.output()
    assert reply.headers["location"].startswith(sandbox.ehr.authorize_url)


def test_an_http_iss_for_an_https_only_organization_is_still_refused(world: World) -> None:
    # The launch URL names an organization that does not exist: no allow_http to borrow.
    reply = httpx.get(
        f"{world.host.url}/launch/other-clinic/test",
        params={"iss": world.sandbox.ehr.base_url, "launch": "x"},
        timeout=20,
    )
    assert reply.status_code == 400
    assert "bad_fhir_base" in world.host.output()
