"""`teams-ehr outbox status|dead|retry` on a SQLite file store (SPEC D7, E4)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import anyio
import pytest

from leaks import assert_no_leak
from teams_ehr.cli import main
from teams_ehr.store.factory import open_store
from teams_ehr.store.protocol import InboxItem, OutboxItem

if TYPE_CHECKING:
    from cli_helpers import CliEnv

PAYLOAD_CANARY = "Patient/canary-4711"
KEY_CANARY = "fhir_encounter/canary-fact-key"
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def _seed(cli_env: CliEnv) -> list[int]:
    """Three items: one pending, two dead (reason codes as the outbox worker records them)."""
    settings = cli_env.settings

    async def work() -> list[int]:
        store = open_store(settings.store_url, encryption_key=settings.encryption_key_bytes())
        async with store:
            await store.migrate()
            items = [
                OutboxItem(
                    org_id=org,
                    idempotency_key=f"{KEY_CANARY}-{n}",
                    kind="fhir_encounter",
                    payload=PAYLOAD_CANARY.encode(),
                    not_before=T0,
                    created_at=T0,
                )
                for n, org in enumerate(["north", "north", "south"])
            ]
            await store.enqueue_outbox(items)
            leased = await store.lease_outbox(
                worker="w1", limit=2, now=T0, lease_until=T0 + timedelta(minutes=1)
            )
            for item in leased:
                assert item.item_id is not None
                await store.mark_dead(item.item_id, worker="w1", reason="fhir_rejected")
            return [item.item_id for item in leased if item.item_id is not None]

    return anyio.run(work)


def test_status_dead_retry(cli_env: CliEnv, capsys: pytest.CaptureFixture[str]) -> None:
    dead_ids = _seed(cli_env)

    assert main(cli_env.args("outbox", "status", "--json")) == 0
    assert json.loads(capsys.readouterr().out) == {
        "dead": 2,
        "delivered": 0,
        "leased": 0,
        "pending": 1,
    }
    assert main(cli_env.args("outbox", "status")) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["STATE", "ITEMS"]
    assert "dead       2" in out

    assert main(cli_env.args("outbox", "dead", "--json")) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted(row["item_id"] for row in rows) == sorted(dead_ids)
    assert {row["last_reason"] for row in rows} == {"fhir_rejected"}
    assert {row["attempts"] for row in rows} == {1}
    assert main(cli_env.args("outbox", "dead")) == 0
    table = capsys.readouterr().out
    assert "fhir_rejected" in table
    assert "2026-01-05T09:00:00+00:00" in table
    assert_no_leak([PAYLOAD_CANARY, KEY_CANARY], table, rows)

    assert main(cli_env.args("outbox", "dead", "--org", "south", "--json")) == 0
    assert json.loads(capsys.readouterr().out) == []

    assert main(cli_env.args("outbox", "retry", str(dead_ids[0]))) == 0
    assert capsys.readouterr().out == f"requeued {dead_ids[0]}\n"
    assert main(cli_env.args("outbox", "status", "--json")) == 0
    counts = json.loads(capsys.readouterr().out)
    assert (counts["pending"], counts["dead"]) == (2, 1)


def test_retry_of_an_item_that_is_not_dead(
    cli_env: CliEnv, capsys: pytest.CaptureFixture[str]
) -> None:
    dead_ids = _seed(cli_env)
    argv = cli_env.args("outbox", "retry", str(dead_ids[1]), "999", "--json")
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert json.loads(out) == {"requeued": [dead_ids[1]], "not_dead": [999]}
    assert "item 999 is not a dead letter" in err


def test_wrong_encryption_key_is_a_clear_error(
    cli_env: CliEnv, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TEAMS_EHR__ENCRYPTION_KEY", "dG9vLXNob3J0")
    assert main(cli_env.args("outbox", "status")) == 2
    err = capsys.readouterr().err
    assert "encryption_key: must decode to 32 bytes" in err
    assert "(invalid_settings)" in err
    assert "dG9vLXNob3J0" not in err


def _seed_finished(cli_env: CliEnv) -> None:
    """A month ago: one processed inbox row, one delivered and one dead outbox row; plus one
    outbox row still pending."""
    settings = cli_env.settings
    then = datetime.now(UTC) - timedelta(days=30)

    async def work() -> None:
        store = open_store(
            settings.store_url, encryption_key=settings.encryption_key_bytes(), clock=lambda: then
        )
        async with store:
            await store.migrate()
            await store.append_inbox([InboxItem("north", "graph-1", b"x", then)])
            lease = then + timedelta(minutes=1)
            [item] = await store.claim_inbox(worker="w1", limit=9, now=then, lease_until=lease)
            await store.complete_inbox([item.item_id or 0], worker="w1")
            keys = ["delivered", "dead", "pending"]
            await store.enqueue_outbox(
                [OutboxItem("north", k, "fhir_encounter", b"x", then, then) for k in keys]
            )
            leased = await store.lease_outbox(worker="w1", limit=2, now=then, lease_until=lease)
            by_key = {i.idempotency_key: i.item_id or 0 for i in leased}
            await store.mark_delivered(by_key["delivered"], worker="w1")
            await store.mark_dead(by_key["dead"], worker="w1", reason="fhir_rejected")

    anyio.run(work)


def test_purge_dry_run_then_purge(cli_env: CliEnv, capsys: pytest.CaptureFixture[str]) -> None:
    _seed_finished(cli_env)
    expected = {
        "inbox": 1,
        "outbox_delivered": 1,
        "outbox_dead": 1,
        "pending_authorizations": 0,
        "nonces": 0,
    }
    assert main(cli_env.args("outbox", "purge", "--dry-run", "--json")) == 0
    assert json.loads(capsys.readouterr().out) == {"dry_run": True, "rows": expected}
    assert main(cli_env.args("outbox", "status", "--json")) == 0
    counts = json.loads(capsys.readouterr().out)
    assert (counts["delivered"], counts["dead"], counts["pending"]) == (1, 1, 1)

    assert main(cli_env.args("outbox", "purge")) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split() == ["KIND", "PURGED"]
    assert "outbox_dead" in table
    assert main(cli_env.args("outbox", "status", "--json")) == 0
    counts = json.loads(capsys.readouterr().out)
    assert (counts["delivered"], counts["dead"], counts["pending"]) == (0, 0, 1)
    assert main(cli_env.args("outbox", "purge", "--json")) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == dict.fromkeys(expected, 0)
