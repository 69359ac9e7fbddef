"""T08 / T31 redaction edges that ``nox -s mutants -- _redact.py`` left open.

Exact outputs (a check with ``in`` let a URL vanish, or a ``:None`` port appear, unnoticed);
access-log records keep their argument tuple with each argument redacted (their formatters
unpack it); only ``httpx.URL`` objects are treated as URLs; ``get_logger`` and
``install_redaction`` are tested on fresh loggers and a plain record factory, because a process
that already ran them (mutmut forks one) would skip their bodies.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import httpx
import pytest

from teams_ehr._redact import (
    REDACTED,
    RedactingFilter,
    get_logger,
    install_redaction,
    redact_text,
    redact_url,
)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://h.example/p?x=1", "https://h.example/p"),
        ("https://u:pw@h.example:8443/p?x#f", "https://h.example:8443/p"),
        ("file:///etc/passwd?x=1", "file:///etc/passwd"),
        ("//[secret-token/x", REDACTED),
        ("https://[secret-token/x?y", f"https://{REDACTED}"),
    ],
)
def test_redact_url_exact(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_text_exact() -> None:
    text = "GET /j/abcdefghijkl code=xyz https://u:p@h.example:8443/a?b#c Bearer abc.def"
    assert redact_text(text) == (
        "GET /j/[redacted] code=[redacted] https://h.example:8443/a Bearer [redacted]"
    )


def _record(name: str, msg: str, args: object) -> logging.LogRecord:
    return logging.LogRecord(name, logging.INFO, __file__, 1, msg, args, None)  # type: ignore[arg-type]


ACCESS_ARGS = ("203.0.113.9:5000", "GET", "/j/abcdefghijklmnop?x=1", "1.1", 200)


def test_access_log_records_keep_their_tuple_with_each_argument_redacted() -> None:
    record = _record("uvicorn.access", '%s - "%s %s HTTP/%s" %d', ACCESS_ARGS)
    assert RedactingFilter().filter(record) is True
    assert record.msg == '%s - "%s %s HTTP/%s" %d'
    assert record.args == ("203.0.113.9:5000", "GET", "/j/[redacted]?x=1", "1.1", 200)


def test_mapping_arguments_are_redacted_by_key() -> None:
    record = _record("uvicorn.access", "%(path)s %(n)d", ({"path": "/j/abcdefghijkl", "n": 3},))
    assert RedactingFilter().filter(record) is True
    assert record.args == {"path": "/j/[redacted]", "n": 3}


def test_a_record_with_nothing_to_redact_is_left_as_it_is() -> None:
    record = _record("teams_ehr.x", "visit %s for %d", ("ok", 2))
    assert RedactingFilter().filter(record) is True
    assert (record.msg, record.args) == ("visit %s for %d", ("ok", 2))


def test_a_bare_secret_in_the_format_replaces_the_message() -> None:
    record = _record("teams_ehr.x", "token=%s", ("abc",))
    assert RedactingFilter().filter(record) is True
    assert (record.msg, record.args) == ("token=[redacted]", None)


def test_a_malformed_record_is_kept_for_logging_to_report() -> None:
    record = _record("teams_ehr.x", "%d", ("not a number",))
    assert RedactingFilter().filter(record) is True


class URL:
    """Not httpx's URL: only the name matches."""

    def __str__(self) -> str:
        return "not-a-url?keep=this"


def test_only_httpx_url_objects_are_redacted_as_urls() -> None:
    headers = httpx.Headers({"a": "b"})
    own_url = URL()
    record = _record(
        "uvicorn.access",
        "%s %s %s %s",
        (httpx.URL("https://h.example/p?token=abc"), headers, own_url, b"raw"),
    )
    RedactingFilter().filter(record)
    assert isinstance(record.args, tuple)
    assert record.args[0] == "https://h.example/p"
    assert record.args[1] is headers
    assert record.args[2] is own_url
    assert record.args[3] == REDACTED


def test_get_logger_attaches_the_filter_once() -> None:
    name = f"teams_ehr.test_{uuid.uuid4().hex}"
    logger = get_logger(name)
    assert logger is logging.getLogger(name)
    assert get_logger(name) is logger
    filters = [f for f in logger.filters if isinstance(f, RedactingFilter)]
    assert len(filters) == 1
    assert len(logger.filters) == 1


@pytest.fixture
def plain_factory() -> Iterator[None]:
    original = logging.getLogRecordFactory()
    logging.setLogRecordFactory(logging.LogRecord)
    try:
        yield
    finally:
        logging.setLogRecordFactory(original)


@pytest.mark.usefixtures("plain_factory")
def test_install_redaction_chains_once_and_redacts_covered_loggers_only() -> None:
    seen: list[str] = []

    def other_library(*args: object, **kwargs: object) -> logging.LogRecord:
        record = logging.LogRecord(*args, **kwargs)  # type: ignore[arg-type]
        seen.append(record.name)
        return record

    logging.setLogRecordFactory(other_library)
    install_redaction()
    installed = logging.getLogRecordFactory()
    assert installed is not other_library
    install_redaction()  # idempotent: not wrapped twice
    assert logging.getLogRecordFactory() is installed
    covered = installed(
        "httpcore.connection", logging.INFO, __file__, 1, "GET %s", ("/j/abcdefghijkl",), None
    )
    other = installed(
        "someone.else", logging.INFO, __file__, 1, "GET %s", ("/j/abcdefghijkl",), None
    )
    assert covered.getMessage() == "GET /j/[redacted]"
    assert other.getMessage() == "GET /j/abcdefghijkl"
    assert seen == ["httpcore.connection", "someone.else"]
