"""A write-back the EHR refuses for good is dead-lettered, visibly; a transient refusal retries.

Issue 9, finding 8: when the EHR's token endpoint answered 400 ``invalid_client`` (our key no
longer registered there), the fact stayed ``pending`` and retried forever, ``outbox status``
said "pending 1", ``outbox dead`` was empty. RFC 6749 §5.2 4xx token errors now dead-letter
after ``attendance.permanent_failure_attempts`` attempts with the reason ``oauth_<error>``,
shown by ``teams-ehr outbox status`` / ``dead`` and counted in
``teams_ehr_dead_letter_reasons_total``; 5xx / ``temporarily_unavailable`` keep retrying.
"""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from pydantic import SecretStr
from runtime_support import Clock, attendance_settings, launch_visit, open_host, play_visit

from teams_ehr import metrics
from teams_ehr.cli import main
from teams_ehr.errors import OAuthError
from teams_ehr.keys import LocalSigner
from teams_ehr.testing.sandbox import SMART_CLIENT_ID, Sandbox

pytestmark = pytest.mark.anyio

REASON = "oauth_invalid_client"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _sandbox(tmp_path: Path, clock: Clock) -> Sandbox:
    return Sandbox(
        clock=clock,
        store_url=f"sqlite:///{tmp_path}/teams-ehr.sqlite3",
        attendance=attendance_settings(tmp_path, permanent_failure_attempts=3),
    )


def _forget_our_key(sandbox: Sandbox) -> None:
    """The EHR's registration now holds another key: every client assertion is refused."""
    other = LocalSigner.generate("ES384")
    sandbox.ehr.register_client(
        SMART_CLIENT_ID,
        redirect_uris=[sandbox.redirect_uri],
        jwks={"keys": [other.public_jwk()]},
    )


def _cli_settings(tmp_path: Path, sandbox: Sandbox) -> Path:
    settings = sandbox.settings
    path = tmp_path / "cli-settings.toml"
    path.write_text(
        f'app_base_url = "{settings.app_base_url}"\n'
        f'store_url = "{settings.store_url}"\n'
        f'encryption_key = "{settings.encryption_key.get_secret_value()}"\n'
        f'external_id_key = "{settings.external_id_key.get_secret_value()}"\n'
        "[microsoft]\n"
        f'client_id = "{settings.microsoft.client_id}"\n',
        encoding="utf-8",
    )
    return path


async def test_a_refused_client_dead_letters_after_bounded_attempts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = Clock()
    sandbox = _sandbox(tmp_path, clock)
    before = metrics.DEFAULT.dead_letter_reasons.value(reason=REASON)
    async with open_host(sandbox) as host:
        await sandbox.seed_organization(host.runtime, writer="audit_event")
        sandbox.seed_appointment("appt-rt-1", start=clock(), minutes=30)
        meeting = await launch_visit(host, sandbox)
        _forget_our_key(sandbox)
        play_visit(sandbox, clock, meeting.meeting_id)
        await sandbox.notifier.flush()
        await host.attendance.processor.run_once()
        store = host.runtime.store
        assert (await store.outbox_counts()).get("pending", 0) > 0
        rounds = 0
        while (await store.outbox_counts()).get("pending", 0) and rounds < 10:
            await host.attendance.outbox.run_once()
            clock.advance(minutes=11)  # past the longest backoff (10 min)
            rounds += 1
        counts = await store.outbox_counts()
        dead = await store.list_dead()
    # Before: every row stayed pending, retried until outbox_max_age (72 h).
    assert counts.get("pending", 0) == 0
    assert counts["dead"] == len(dead) > 0
    assert rounds == 3
    assert {item.last_reason for item in dead} == {REASON}
    assert {item.attempts for item in dead} == {3}
    assert metrics.DEFAULT.dead_letter_reasons.value(reason=REASON) - before == len(dead)
    assert f'teams_ehr_dead_letter_reasons_total{{reason="{REASON}"}}' in (
        metrics.render_prometheus()
    )

    config = str(_cli_settings(tmp_path, sandbox))
    capsys.readouterr()
    assert await anyio.to_thread.run_sync(main, ["outbox", "status", "--config", config]) == 0
    status = capsys.readouterr().out
    assert "DEAD REASON" in status
    assert REASON in status
    dead_argv = ["outbox", "dead", "--json", "--config", config]
    assert await anyio.to_thread.run_sync(main, dead_argv) == 0
    assert {row["last_reason"] for row in json.loads(capsys.readouterr().out)} == {REASON}


async def test_a_transient_token_error_keeps_retrying(tmp_path: Path) -> None:
    clock = Clock()
    sandbox = _sandbox(tmp_path, clock)
    async with open_host(sandbox) as host:
        await sandbox.seed_organization(host.runtime, writer="audit_event")
        sandbox.seed_appointment("appt-rt-1", start=clock(), minutes=30)
        meeting = await launch_visit(host, sandbox)
        play_visit(sandbox, clock, meeting.meeting_id)
        await sandbox.notifier.flush()
        await host.attendance.processor.run_once()

        async def unavailable(org_id: str, *, force_refresh: bool = False) -> SecretStr:
            raise OAuthError(error="temporarily_unavailable", status_code=503)

        worker = host.attendance.outbox
        worker.token_for_org = unavailable
        for _ in range(6):
            await worker.run_once()
            clock.advance(minutes=11)
        counts = await host.runtime.store.outbox_counts()
        assert counts.get("dead", 0) == 0
        assert counts["pending"] > 0


@pytest.mark.parametrize(
    ("error", "status", "permanent"),
    [
        ("invalid_request", 400, True),
        ("invalid_client", 401, True),
        ("invalid_grant", 400, True),
        ("unauthorized_client", 400, True),
        ("invalid_scope", 400, True),
        ("temporarily_unavailable", 400, False),
        ("server_error", 500, False),
        ("invalid_response", 502, False),
        ("slow_down", 429, False),
        ("invalid_request", 408, False),
        ("invalid_request", None, False),
    ],
)
def test_which_token_errors_are_permanent(error: str, status: int | None, permanent: bool) -> None:
    from teams_ehr.attendance.outbox import oauth_failure

    reason, is_permanent = oauth_failure(OAuthError(error=error, status_code=status))
    assert (reason, is_permanent) == (f"oauth_{error}", permanent)
