"""docs/quickstart.md run as a deployer runs it (issue 9, "Docs executed as a deployer runs them").

In a fresh temporary folder, outside the checkout: the page's commands in order, its
``<!-- file: NAME -->`` blocks saved where the deployer stands when the server starts, then each
server command (the FastAPI app under uvicorn, the Flask app under ``flask run``) as a real process
on loopback. Against each, a clinician's EHR launch and a patient portal launch from
:class:`~teams_ehr.testing.FakeEhr` served on loopback over **http** (the organization has
``allow_http``, as ``teams-ehr init`` writes it for a loopback EHR), then Ctrl-C (SIGINT) and a
clean exit. The page reaches a running app in at most five commands, counted here.

What the test changes, and why:

- The EHR's FHIR base in the commands becomes FakeEhr's loopback URL, and ``--port 8000`` a free
  port (parallel runs); the deployer types their own values there.
- ``python -m pip install …`` is not run: the suite already runs in an environment where the
  package and its extras are installed (editable in a checkout, or from the built wheel in
  ``nox -s wheel-tests``, which runs this test too), and a fresh virtual environment would need
  the network for FastAPI, uvicorn and Flask. Instead the test checks that the extras the
  command names do bring FastAPI, uvicorn and Flask (pyproject.toml, what the wheel declares).
  The commands run from a folder outside the checkout, so nothing is imported from the
  working directory that a deployer would not have.
- Approval needs the approver's Microsoft and EHR sign-ins in the admin console (or the
  Microsoft sandbox, docs/guides/ehr-analyst.md); the test records the same approval through
  the registry, with a real discovery snapshot of FakeEhr, between ``orgs create`` and the start.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import httpx
import pytest
from deployer_extras import install_extras, packages_of
from docs_blocks import Block, blocks

from hosts.processes import free_port
from teams_ehr._types import utc_now
from teams_ehr.config import load_settings
from teams_ehr.keys import PRIVATE_JWK_MEMBERS, LocalSigner
from teams_ehr.orgs.approval import ApprovalProof
from teams_ehr.orgs.models import config_hash
from teams_ehr.orgs.registry import OrganizationRegistry
from teams_ehr.sansio import run_async
from teams_ehr.smart.discovery import DiscoverySnapshot, discovery_flow
from teams_ehr.store.factory import open_store
from teams_ehr.teams.identity import MicrosoftIdentity
from teams_ehr.testing import FakeEhr
from teams_ehr.testing.fake_fhir import FakeFhirServer
from teams_ehr.testing.loopback import serve_on_loopback

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "docs" / "quickstart.md"
DOC_FHIR_BASE = "https://ehr.example.org/api/FHIR/R4"
DOC_PORT = "8000"
MAX_COMMANDS = 5
SERVERS = ("uvicorn", "flask")
_START_DEADLINE_S = 60.0
_STOP_DEADLINE_S = 20.0


def _page() -> tuple[list[str], dict[str, str]]:
    """The page's commands in order and its files, illustrative blocks left out."""
    commands: list[str] = []
    files: dict[str, str] = {}
    for block in blocks(QUICKSTART):
        if block.illustrative:
            continue
        if block.file_name is not None:
            files[block.file_name] = block.text
        else:
            commands.extend(_checked(block).commands())
    return commands, files


def _checked(block: Block) -> Block:
    assert block.language == "sh", f"quickstart.md:{block.line}: not a shell block"
    return block


def _is_server(argv: list[str]) -> bool:
    return argv[0] in SERVERS


def _check_install(argv: list[str]) -> None:
    """``python -m pip install "teams-ehr[extras]"``: the extras bring both hosts' stacks."""
    (spec,) = [arg for arg in argv[4:] if not arg.startswith("-")]
    wanted = packages_of(install_extras(spec))
    assert {"fastapi", "uvicorn", "flask"} <= wanted, wanted


def _environment(*, secret: bool = False) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEAMS_EHR")}
    if secret:  # the Entra app's secret, from the environment as the quickstart says
        env["TEAMS_EHR__MICROSOFT__CLIENT_SECRET"] = "entra-app-secret-for-the-deployer-test"
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


@contextmanager
def _fake_ehr() -> Iterator[tuple[FakeEhr, FakeFhirServer]]:
    ehr = FakeEhr()
    with serve_on_loopback(ehr.asgi_app()) as origin:
        ehr.rebase(f"{origin}/api/FHIR/R4")
        fhir = FakeFhirServer(
            ehr.base_url, token_check=lambda token: ehr.token_info(token) is not None
        )
        ehr.fhir_handler = fhir.handler
        yield ehr, fhir


def _approve(folder: Path, ehr: FakeEhr) -> str:
    """What the approver's two sign-ins in the admin console record; returns the org id."""
    document = json.loads((folder / "org.json").read_text(encoding="utf-8"))
    org_id: str = document["org_id"]
    settings = load_settings(folder / "settings.toml", environ={})
    approver = MicrosoftIdentity(
        tenant_id=document["tenant_id"], object_id=document["approver_oid"]
    )

    async def approve() -> None:
        store = open_store(settings.store_url, encryption_key=settings.encryption_key_bytes())
        async with store, httpx.AsyncClient() as client:
            registry = OrganizationRegistry(store, utc_now)
            org = await registry.submit_for_approval(org_id, "test", actor=approver.object_id)
            smart = await run_async(discovery_flow(ehr.base_url, allow_http=True), client)
            proof = ApprovalProof(
                canonical_base=ehr.base_url,
                snapshot=DiscoverySnapshot.of(smart),
                id_token_issuer=ehr.oidc_issuer,
                signed_in_at=utc_now(),
            )
            await registry.approve(
                org_id, "test", approver, proof, config_hash=config_hash(org, "test")
            )

    anyio.run(approve)
    return org_id


def _register_client(folder: Path, ehr: FakeEhr) -> None:
    """What the EHR analyst registers: the client id, redirect URI and our public key."""
    config = json.loads((folder / "org.json").read_text(encoding="utf-8"))["test"]["config"]
    signer = LocalSigner.from_pem((folder / "keys" / "test.pem").read_bytes(), "RS384")
    public = {k: v for k, v in signer.public_jwk().items() if k not in PRIVATE_JWK_MEMBERS}
    ehr.register_client(
        config["client_id"], redirect_uris=[config["redirect_uri"]], jwks={"keys": [public]}
    )


@contextmanager
def _server(argv: list[str], cwd: Path, log: Path) -> Iterator[str]:
    port = argv[argv.index("--port") + 1]
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, cwd=cwd, env=_environment(secret=True), stdout=out, stderr=subprocess.STDOUT
        )
    try:
        _wait_until_up(process, url, log)
        yield url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # Ctrl-C, as the deployer stops it
        try:
            code = process.wait(timeout=_STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            pytest.fail(f"{argv[0]} did not exit on Ctrl-C:\n{log.read_text()[-3000:]}")
    output = log.read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in output, output[-3000:]
    assert code in (0, -signal.SIGINT, 130), f"{argv[0]} exited {code}:\n{output[-3000:]}"


def _wait_until_up(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + _START_DEADLINE_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}:\n{log.read_text()}")
        try:
            httpx.get(f"{url}/.well-known/jwks.json", timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    pytest.fail(f"the server did not answer in {_START_DEADLINE_S} s:\n{log.read_text()}")


def _launches(url: str, org_id: str, ehr: FakeEhr, fhir: FakeFhirServer) -> None:
    """A clinician's EHR launch up to the Microsoft sign-in, and a patient portal launch up to
    "the visit is not ready" (no Microsoft tenant here: the EHR side is what is proven)."""
    fhir.seed(
        {
            "resourceType": "Appointment",
            "id": "appt-1",
            "status": "booked",
            "start": "2030-01-01T10:00:00+00:00",
            "end": "2030-01-01T10:30:00+00:00",
            "participant": [{"status": "accepted"}],
        }
    )
    with httpx.Client(base_url=url, timeout=30) as browser:
        launch = ehr.issue_launch(
            appointment="appt-1", location="dept-1", login_department="dept-1"
        )
        reply = browser.get(
            f"/launch/{org_id}/test", params={"iss": ehr.base_url, "launch": launch}
        )
        assert reply.status_code == 302, reply.text[:500]
        assert reply.headers["location"].startswith(ehr.authorize_url)
        callback = ehr.authorize_in_browser(reply.headers["location"])
        tokens_before = len(ehr.calls("token"))
        reply = browser.get("/callback", params=callback)
        assert len(ehr.calls("token")) > tokens_before  # the code was redeemed, over http
        assert reply.status_code == 302, reply.text[:500]
        assert reply.headers["location"].startswith("https://login.microsoftonline.com/")

    with httpx.Client(base_url=url, timeout=30) as patient_browser:
        launch = ehr.issue_launch(patient="patient-1", appointment="appt-1", user="patient-1")
        reply = patient_browser.get(
            f"/patient/{org_id}/test", params={"iss": ehr.base_url, "launch": launch}
        )
        assert reply.status_code == 302, reply.text[:500]
        callback = ehr.authorize_in_browser(reply.headers["location"])
        reply = patient_browser.get("/callback", params=callback)
        assert reply.status_code == 409, reply.text[:500]  # VisitNotReadyError: no meeting yet


def test_quickstart_from_an_empty_folder(tmp_path: Path) -> None:
    commands, files = _page()
    first_server = next(i for i, c in enumerate(commands) if _is_server(shlex.split(c)))
    assert first_server + 1 <= MAX_COMMANDS, commands[: first_server + 1]
    assert {"app.py", "flask_app.py"} <= files.keys()

    empty = tmp_path / "deployer"
    empty.mkdir()
    cwd = empty
    with _fake_ehr() as (ehr, fhir):
        servers: list[list[str]] = []
        for command in commands:
            command = command.replace(DOC_FHIR_BASE, ehr.base_url)
            argv = shlex.split(command)
            if argv[:4] == ["python", "-m", "pip", "install"]:
                _check_install(argv)
            elif argv[0] == "cd":
                cwd = (cwd / argv[1]).resolve()
                assert cwd.is_dir(), command
            elif _is_server(argv):
                port = argv.index("--port") + 1
                assert argv[port] == DOC_PORT, command  # the app_base_url init writes
                argv[port] = str(free_port())
                servers.append(argv)
            else:
                result = subprocess.run(
                    argv, cwd=cwd, env=_environment(), capture_output=True, text=True, check=False
                )
                assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        assert [argv[0] for argv in servers] == ["uvicorn", "flask"]
        for name, text in files.items():
            (cwd / name).write_text(text, encoding="utf-8")
        org_id = _approve(cwd, ehr)
        _register_client(cwd, ehr)
        for argv in servers:
            log = tmp_path / f"{argv[0]}.log"
            with _server(argv, cwd, log) as url:
                try:
                    _launches(url, org_id, ehr, fhir)
                except AssertionError as exc:
                    output = log.read_text(encoding="utf-8", errors="replace")
                    raise AssertionError(f"{exc}\n{argv[0]} printed:\n{output[-4000:]}") from None
