"""T31: records of third-party child loggers are redacted too; other loggers are untouched."""

from __future__ import annotations

import logging

import pytest

from teams_ehr._redact import install_redaction

CANARY = "CANARY-9c1e"


@pytest.mark.parametrize(
    "name",
    [
        "azure.identity._internal.msal_client",
        "httpcore.connection",
        "msal.application",
    ],
)
def test_child_logger_records_are_redacted(name: str, caplog: pytest.LogCaptureFixture) -> None:
    install_redaction()
    caplog.set_level(logging.DEBUG, logger=name)
    logging.getLogger(name).debug("token=%s url=%s", CANARY, f"https://login.test/cb?code={CANARY}")
    assert caplog.records
    assert CANARY not in caplog.text


def test_other_loggers_and_the_factory_chain_are_kept(caplog: pytest.LogCaptureFixture) -> None:
    install_redaction()
    install_redaction()  # idempotent: one wrapper, not two
    previous = logging.getLogRecordFactory()
    seen: list[str] = []

    def outer(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)  # type: ignore[arg-type]
        seen.append(record.name)
        return record

    logging.setLogRecordFactory(outer)
    try:
        caplog.set_level(logging.INFO, logger="myapp")
        logging.getLogger("myapp").info("token=%s", CANARY)
    finally:
        logging.setLogRecordFactory(previous)
    assert CANARY in caplog.text
    assert seen == ["myapp"]
