"""The example hosts as real server processes on 127.0.0.1, the way a deployer runs them.

``host_process("fastapi", settings)`` starts ``uvicorn --factory app:app_from_environment`` (access
log on, as uvicorn's command line defaults) and ``host_process("flask", settings)`` starts
``flask --app app:app_from_environment run`` (werkzeug's request log on), waits for ``/healthz``,
yields a :class:`HostProcess` and stops the process at exit. Its ``output()`` is what the server
printed, so a test can look for tracebacks and leaked secrets in the host's own logs.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anyio
import httpx

from teams_ehr.app import TeamsEhr
from teams_ehr.config import load_settings
from teams_ehr.keys import LocalSigner
from teams_ehr.orgs.approval import ApprovalProof
from teams_ehr.orgs.models import EnvironmentConfig, config_hash
from teams_ehr.sansio import run_async
from teams_ehr.smart.discovery import DiscoverySnapshot, discovery_flow
from teams_ehr.teams.identity import MicrosoftIdentity
from teams_ehr.testing.asgi import ASGIApp
from teams_ehr.testing.loopback import serve_on_loopback
from teams_ehr.testing.sandbox import APPROVER_OID, SMART_CLIENT_ID, TENANT_ID, Sandbox

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
_START_DEADLINE_S = 60.0  # a loaded 2-core CI machine imports the whole stack slowly

HostKind = Literal["fastapi", "flask"]
DEFAULT_FACTORY = "app:app_from_environment"


@dataclass
class HostProcess:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_settings(
    folder: Path, *, app_base_url: str, top_level: str = "", sections: str = ""
) -> Path:
    """A minimal settings file (SQLite store in ``folder``) and its keys inline; ``top_level``
    lines go before the first table, ``sections`` (whole TOML tables) after the last."""
    key = base64.b64encode(os.urandom(32)).decode()
    settings = folder / "settings.toml"
    settings.write_text(
        f'app_base_url = "{app_base_url}"\n'
        f'store_url = "sqlite:///{folder / "store.sqlite3"}"\n'
        f'external_id_key = "{key}"\n'
        f'encryption_key = "{key}"\n'
        f"{top_level}"
        "[microsoft]\n"
        'client_id = "00000000-0000-0000-0000-000000000000"\n'
        f"{sections}",
        encoding="utf-8",
    )
    return settings


def _command(
    kind: HostKind, port: int, server_args: Sequence[str], factory: str = DEFAULT_FACTORY
) -> list[str]:
    if kind == "fastapi":
        server = ["uvicorn", "--factory", factory, "--host", "127.0.0.1"]
    else:
        server = ["flask", "--app", factory, "run", "--host", "127.0.0.1"]
    return [sys.executable, "-m", *server, *server_args, "--port", str(port)]


Prepare = Callable[[Path, str], None]
"""Called with the settings file and the host's URL after the settings are written and before
the host starts: e.g. to create and approve an organization in the host's store."""


@contextmanager
def host_process(
    kind: HostKind,
    folder: Path,
    *,
    top_level: str = "",
    sections: str = "",
    prepare: Prepare | None = None,
    server_args: Sequence[str] = (),
) -> Iterator[HostProcess]:
    """Start the ``kind`` example on a free loopback port with settings written in ``folder``
    (plus ``top_level`` and ``sections``, see :func:`write_settings`); ``server_args`` go to
    uvicorn or ``flask run``."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = write_settings(folder, app_base_url=url, top_level=top_level, sections=sections)
    if prepare is not None:
        prepare(settings, url)
    with run_host(kind, settings, port, server_args=server_args) as host:
        yield host


@contextmanager
def run_host(
    kind: HostKind,
    settings: Path,
    port: int,
    *,
    server_args: Sequence[str] = (),
    factory: str = DEFAULT_FACTORY,
    env: Mapping[str, str] | None = None,
    log_name: str | None = None,
) -> Iterator[HostProcess]:
    """Run the ``kind`` example by its own command line on ``port`` with the ``settings`` file,
    logging beside it (``log_name``, default ``<kind>.log``); wait for ``/healthz``, stop the
    process at exit. ``factory`` replaces the example's ``app:app_from_environment`` (a module
    on ``PYTHONPATH`` that builds the example's app around another runtime); ``env`` is added
    to the process's environment."""
    environ = {**os.environ, "TEAMS_EHR_SETTINGS": str(settings), "PYTHONUNBUFFERED": "1"}
    environ.pop("TEAMS_EHR__ENCRYPTION_KEY", None)
    environ.update(env or {})
    log_path = settings.parent / (log_name or f"{kind}.log")
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            _command(kind, port, server_args, factory),
            cwd=EXAMPLES / f"{kind}_app",
            env=environ,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    host = HostProcess(f"http://127.0.0.1:{port}", process, log_path)
    try:
        _wait_until_healthy(host)
        yield host
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:  # pragma: no cover - a hung shutdown
            process.kill()
            process.wait()


def _wait_until_healthy(host: HostProcess) -> None:
    deadline = time.monotonic() + _START_DEADLINE_S
    while time.monotonic() < deadline:
        if host.process.poll() is not None:
            raise RuntimeError(f"the host exited with {host.process.returncode}:\n{host.output()}")
        try:
            if httpx.get(f"{host.url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(
        f"the host did not answer /healthz in {_START_DEADLINE_S} s:\n{host.output()}"
    )


# -- an EHR over plain http on loopback, approved in the host's store before it starts ----------

LOOPBACK_ORG = "loopback-clinic"


class LoopbackSandbox(Sandbox):
    """The sandbox's FakeEhr (+ FHIR store) for a host process: approved with ``allow_http``."""

    def environment_config(self) -> EnvironmentConfig:
        return EnvironmentConfig(
            fhir_base=self.ehr.base_url,
            client_id=SMART_CLIENT_ID,
            epic_client_id=SMART_CLIENT_ID,
            redirect_uri=self.redirect_uri,
            jwks_url=self.app_base_url + "/.well-known/jwks.json",
            allow_http=True,  # a loopback EHR: part of the approved configuration
        )


@contextmanager
def loopback_ehr_port() -> Iterator[tuple[int, Callable[[ASGIApp], None]]]:
    """A loopback port whose server answers with the ASGI app given later (the fake's base URL
    names the port, so the fake is built after the port is known)."""
    served: list[ASGIApp] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await served[0](scope, receive, send)

    with serve_on_loopback(app) as url:
        port = httpx.URL(url).port
        assert port is not None
        yield port, served.append


def http_ehr_settings(folder: Path, signer: LocalSigner) -> tuple[str, str]:
    """``(top_level, sections)`` for :func:`host_process`: ``allow_http`` on (the runtime's
    client then reaches ``localhost``), a Microsoft client secret, the SMART key ``signer`` and
    no attendance."""
    key = folder / "smart-test-key.pem"
    key.write_bytes(signer.private_pem())
    sections = (
        'client_secret = "loopback-only-secret"\n'  # continues the [microsoft] table
        '[smart]\nsigning_alg = "ES384"\n'
        f'test_key_path = "{key}"\n'
        "[attendance]\nenabled = false\n"
    )
    return "allow_http = true\n", sections


def approve_http_organization(settings_path: Path, sandbox: LoopbackSandbox) -> None:
    """Create and approve :data:`LOOPBACK_ORG` on ``sandbox``'s http EHR in the host's store,
    as the console's approval would (discovery snapshot over http, allowed for this base)."""

    async def work() -> None:
        settings = load_settings(settings_path)
        async with (
            httpx.AsyncClient(timeout=10) as http,
            TeamsEhr(settings, http=http, signers={"test": sandbox.signer}) as runtime,
        ):
            await sandbox.seed_organization(runtime, org_id=LOOPBACK_ORG, approve=False)
            org = await runtime.registry.submit_for_approval(
                LOOPBACK_ORG, "test", actor=APPROVER_OID
            )
            smart = await run_async(discovery_flow(sandbox.ehr.base_url, allow_http=True), http)
            proof = ApprovalProof(
                canonical_base=sandbox.ehr.base_url,
                snapshot=DiscoverySnapshot.of(smart),
                id_token_issuer=sandbox.ehr.oidc_issuer,
                signed_in_at=sandbox.clock(),
            )
            await runtime.registry.approve(
                LOOPBACK_ORG,
                "test",
                MicrosoftIdentity(tenant_id=TENANT_ID, object_id=APPROVER_OID),
                proof,
                config_hash=config_hash(org, "test"),
            )

    anyio.run(work)
