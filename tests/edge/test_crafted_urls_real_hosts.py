"""Crafted URLs against the example hosts run as real server processes, access logs on.

security.md T08/T31: the request log is redacted as it is written; a URL that ``urllib`` cannot
parse (``?x=https://h&y=[z]``) once made redaction raise inside the access logger, and uvicorn
dropped the connection. Every request here must get an HTTP answer below 500, and the host's own
output must show neither a traceback nor the secret values sent.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from hosts.processes import HostKind, host_process

CANARY = "CANARYsecret0"
CRAFTED_TARGETS = [
    "/.well-known/jwks.json?x=https://h&y=[z]",
    f"/launch/nope/test?iss=https://x&launch={CANARY}",
    f"/launch/nope/test?iss=https://[::1&launch={CANARY}",
    f"/j/{CANARY}?next=http://u:p@[bad]:99999/x",
    "/.well-known/jwks.json?a=https://h:99999/",
    f"/callback?code={CANARY}&state=https://%5Bz%5D/",
    "/%2e%2e/%2e%2e/etc/passwd?u=https://[x",
    "/nope?" + "https://[" * 200,
]


def _raw_get(url: str, target: str) -> bytes:
    """One HTTP/1.1 request sent byte for byte (no client-side URL normalization)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["fastapi", "flask"])
def test_crafted_urls_answered_and_logged_redacted(kind: HostKind, tmp_path: Path) -> None:
    with host_process(kind, tmp_path) as host:
        for target in CRAFTED_TARGETS:
            answer = _raw_get(host.url, target)
            assert answer.startswith(b"HTTP/1.1 "), (target, answer[:200])
            status = int(answer.split(b" ", 2)[1])
            assert status < 500, (target, answer[:300])
        output = host.output()
    assert "Traceback" not in output
    assert "Exception in ASGI application" not in output
    assert CANARY not in output
    assert "GET /.well-known/jwks.json" in output  # the access log was on and written
