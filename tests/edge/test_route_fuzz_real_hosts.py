"""Route fuzz: random requests against both example hosts running as real server processes.

Any method, path, query and header values (odd bytes included, never CR/LF, which would end the
header line) must get a complete HTTP response below 500 on its own connection, and the host's
output (access log on) must show no traceback. The requests are sent byte for byte over a socket,
so neither an HTTP client nor URL normalization stands between the fuzzer and the server.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hosts.processes import HostKind, HostProcess, host_process

ROUTES = [
    b"/",
    b"/healthz",
    b"/launch",
    b"/launch/org-a/test",
    b"/callback",
    b"/j/",
    b"/j/" + b"A" * 43,
    b"/.well-known/jwks.json",
    b"/graph/notifications",
    b"/graph/lifecycle",
    b"/admin",
    b"/admin/orgs",
    b"/admin/orgs/org-a/test/approve",
    b"/microsoft/callback",
    b"/epic/context",
]
# Visible ASCII and latin-1 bytes a client may put in a request target (no space, CR, LF, NUL).
TARGET_BYTES = st.binary(max_size=40).map(
    lambda raw: bytes(b for b in raw if b > 0x20 and b != 0x7F)
)
PATHS = st.one_of(
    st.sampled_from(ROUTES),
    st.builds(lambda route, tail: route + tail, st.sampled_from(ROUTES), TARGET_BYTES),
    st.builds(lambda tail: b"/" + tail, TARGET_BYTES),
)
QUERY_VALUES = st.one_of(
    TARGET_BYTES,
    st.sampled_from(
        [b"https://[", b"%ED%A0%80", b"%00", b"%ZZ", b"https://h:99999/", b"9" * 40, b"x" * 3000]
    ),
)
QUERIES = st.lists(
    st.tuples(
        st.sampled_from(
            [b"iss", b"launch", b"state", b"code", b"error", b"validationToken", b"tenant", b"x"]
        ),
        QUERY_VALUES,
    ),
    max_size=4,
).map(lambda pairs: b"&".join(k + b"=" + v for k, v in pairs))
# Header values: any byte but CR, LF and NUL (h11 and werkzeug refuse those before the app).
HEADER_VALUES = st.binary(max_size=40).map(
    lambda raw: bytes(b for b in raw if b not in b"\r\n\x00")
)
HEADERS = st.lists(
    st.tuples(
        st.sampled_from(
            [b"Cookie", b"Content-Type", b"Accept", b"X-Forwarded-For", b"Authorization", b"X-Odd"]
        ),
        HEADER_VALUES,
    ),
    max_size=3,
)
METHODS = st.sampled_from([b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"PATCH"])
BODIES = st.one_of(st.just(b""), st.binary(max_size=200), st.just(b'{"value": [' * 40))


def _request(
    method: bytes, path: bytes, query: bytes, headers: list[tuple[bytes, bytes]], body: bytes
) -> bytes:
    target = path + (b"?" + query if query else b"")
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    lines += [name + b": " + value for name, value in headers]
    if method != b"GET" or body:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _exchange(url: str, request: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as conn:
        conn.sendall(request)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _complete(answer: bytes, method: bytes) -> int:
    """The status of a complete HTTP/1.1 response (head ended; body as long as announced)."""
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    head, separator, body = answer.partition(b"\r\n\r\n")
    assert separator, answer[:300]
    status = int(head.split(b" ", 2)[1])
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and method != b"HEAD":
            assert len(body) == int(value.strip()), (len(body), head)
    return status


@pytest.fixture(scope="module", params=["fastapi", "flask"])
def host(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HostProcess]:
    kind: HostKind = request.param
    with host_process(kind, tmp_path_factory.mktemp(kind)) as process:
        yield process
        output = process.output()
        assert "Traceback" not in output
        assert "Exception in ASGI application" not in output


@pytest.mark.slow
@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(method=METHODS, path=PATHS, query=QUERIES, headers=HEADERS, body=BODIES)
def test_any_request_gets_a_complete_answer_below_500(
    host: HostProcess,
    method: bytes,
    path: bytes,
    query: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
) -> None:
    answer = _exchange(host.url, _request(method, path, query, headers, body))
    status = _complete(answer, method)
    assert status < 500, (method, path, query, answer[:300])
    assert host.process.poll() is None, "the host process died"


def test_request_builder_never_sends_line_breaks_in_a_header() -> None:
    request = _request(b"GET", b"/x", b"a=1", [(b"X-Odd", b"\xff\t")], b"")
    head = request.split(b"\r\n\r\n", 1)[0]
    assert all(b"\n" not in line and b"\r" not in line for line in head.split(b"\r\n"))


def test_completeness_check_refuses_a_truncated_body(tmp_path: Path) -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"
    with pytest.raises(AssertionError):
        _complete(answer, b"GET")
