"""Store records never show secrets or PHI-bearing fields in their repr (DESIGN.md rule 5)."""

from __future__ import annotations

from datetime import UTC, datetime

from teams_ehr.store.protocol import InboxItem, MeetingRow, OutboxItem, SubscriptionRow

NOW = datetime(2026, 1, 1, tzinfo=UTC)
CANARY = "CANARY-7f3a"


def test_record_reprs_hide_secret_columns() -> None:
    records = [
        MeetingRow(
            "org", "ext", "oid", "mid", f"https://teams.microsoft.com/{CANARY}", NOW, NOW, "active"
        ),
        InboxItem("org", "dedupe", CANARY.encode(), NOW),
        OutboxItem("org", "key", "kind", CANARY.encode(), NOW, NOW),
        SubscriptionRow("sub", "org", "ext", CANARY, NOW, "active"),
    ]
    for record in records:
        assert CANARY not in repr(record)
        assert "org" in repr(record)
