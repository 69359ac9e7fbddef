"""T31: records of third-party child loggers are redacted too; other loggers are untouched."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

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


def _fresh_python(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def test_import_changes_no_global_logging_state() -> None:
    """A library must not reconfigure logging on import: the record factory stays the stdlib's."""
    out = _fresh_python(
        """
        import logging
        before = logging.getLogRecordFactory()
        import teams_ehr, teams_ehr.app, teams_ehr.smart.flows, teams_ehr.integrations.routes
        print(logging.getLogRecordFactory() is before is logging.LogRecord)
        """
    )
    assert out == "True"


def test_mounting_the_routes_installs_redaction() -> None:
    out = _fresh_python(
        """
        import base64, logging, os
        from teams_ehr import TeamsEhrSettings, TeamsEhr
        from teams_ehr.integrations.routes import mounted_routes
        key = base64.b64encode(os.urandom(32)).decode()
        settings = TeamsEhrSettings(
            app_base_url="https://visits.example.org", store_url="sqlite://:memory:",
            encryption_key=key, external_id_key=key,
            microsoft={"client_id": "00000000-0000-0000-0000-000000000000"},
        )
        print(getattr(logging.getLogRecordFactory(), "teams_ehr_redacting", False))
        mounted_routes(settings)
        print(getattr(logging.getLogRecordFactory(), "teams_ehr_redacting", False))
        """
    )
    assert out.split() == ["False", "True"]


def test_opening_the_runtime_installs_redaction() -> None:
    out = _fresh_python(
        """
        import anyio, logging
        from teams_ehr.testing.sandbox import Sandbox

        async def main() -> None:
            async with Sandbox().app():
                print(getattr(logging.getLogRecordFactory(), "teams_ehr_redacting", False))

        print(getattr(logging.getLogRecordFactory(), "teams_ehr_redacting", False))
        anyio.run(main)
        """
    )
    assert out.split() == ["False", "True"]
