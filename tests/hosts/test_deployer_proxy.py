"""Behind a reverse proxy: ``trusted_proxies`` decides whose forwarded headers are believed.

Issue 9, finding 10. The session cookie's ``Secure`` flag (and its ``__Host-`` name) follows the
browser's scheme and the join-link rate limit counts the client's address; behind a TLS
terminating proxy both come from ``X-Forwarded-Proto`` / ``X-Forwarded-For``, which are believed
only from a peer listed in ``trusted_proxies`` (docs/guides/integrator.md, "Behind a reverse
proxy"). Tested on the examples as real processes; uvicorn runs with ``--no-proxy-headers`` so
the library's setting, not uvicorn's own ``--forwarded-allow-ips``, is what decides.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hosts.processes import HostKind, HostProcess, host_process

pytestmark = pytest.mark.slow

RATE_LIMIT = 30  # join-link attempts per client per minute (JoinLinkService's default)
HTTPS = {"X-Forwarded-Proto": "https"}
UNKNOWN_LINK = "A" * 43  # well formed, never issued: refused 404 after the rate check


def _start(kind: HostKind, folder: Path, *, trusted: bool) -> Iterator[HostProcess]:
    top_level = 'trusted_proxies = ["127.0.0.1", "10.0.0.0/8"]\n' if trusted else ""
    args = ["--no-proxy-headers"] if kind == "fastapi" else []
    with host_process(kind, folder, top_level=top_level, server_args=args) as host:
        yield host


@pytest.fixture(params=["fastapi", "flask"])
def behind_proxy(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HostProcess]:
    yield from _start(request.param, tmp_path, trusted=True)


@pytest.fixture(params=["fastapi", "flask"])
def exposed(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HostProcess]:
    yield from _start(request.param, tmp_path, trusted=False)


def _cookie(host: HostProcess, headers: dict[str, str]) -> str:
    reply = httpx.get(f"{host.url}/.well-known/jwks.json", headers=headers, timeout=20)
    assert reply.status_code == 200
    return reply.headers["set-cookie"]


def _join(host: HostProcess, client: str) -> int:
    headers = {"X-Forwarded-For": f"{client}, 10.1.2.3"}  # the client, then an inner proxy
    return httpx.get(f"{host.url}/j/{UNKNOWN_LINK}", headers=headers, timeout=20).status_code


def _until_throttled(host: HostProcess, client: str) -> list[int]:
    """Join attempts from ``client`` until the first 429 (a minute boundary may reset the
    count once, so at most two windows' worth)."""
    statuses: list[int] = []
    while len(statuses) <= 2 * RATE_LIMIT + 1 and 429 not in statuses:
        statuses.append(_join(host, client))
    return statuses


def test_a_trusted_proxys_https_makes_the_session_cookie_secure(behind_proxy: HostProcess) -> None:
    cookie = _cookie(behind_proxy, HTTPS)
    assert cookie.startswith("__Host-teams-ehr-session=")
    assert "secure" in cookie.lower()
    plain = _cookie(behind_proxy, {})
    assert plain.startswith("teams-ehr-session=")
    assert "secure" not in plain.lower()


def test_an_untrusted_peer_cannot_claim_https(exposed: HostProcess) -> None:
    cookie = _cookie(exposed, HTTPS)
    assert cookie.startswith("teams-ehr-session=")
    assert "secure" not in cookie.lower()


def test_the_rate_limit_counts_the_forwarded_client(behind_proxy: HostProcess) -> None:
    statuses = _until_throttled(behind_proxy, "203.0.113.7")
    assert statuses[-1] == 429
    assert set(statuses[:-1]) == {404}
    assert len(statuses) > RATE_LIMIT
    # Another patient behind the same proxy is not throttled by the first one.
    assert _join(behind_proxy, "203.0.113.8") == 404


def test_a_forged_forwarded_for_does_not_escape_the_rate_limit(exposed: HostProcess) -> None:
    assert _until_throttled(exposed, "203.0.113.7")[-1] == 429
    assert _join(exposed, "203.0.113.8") == 429  # still the one peer, 127.0.0.1
