"""Every statement on an organization's rows filters by ``org_id`` unless it is listed here with
the reason it may not (security.md T27: "no unscoped queries")."""

from __future__ import annotations

import re

from teams_ehr.store import _sql

ORG_SCOPED_TABLES = {
    *("organizations", "issuer_bindings", "audit_log", "pending_authorizations"),
    *("identity_links", "meetings", "join_links", "subscriptions", "inbox", "outbox"),
    *("attendance_facts", "subscription_setups"),
}

UNSCOPED_BY_DESIGN = {
    "ORG_LIST": "the operator's organization list (admin pages, CLI)",
    "ISSUER_GET": "the issuer registry is keyed by canonical base URL (A1)",
    "PENDING_TAKE": "keyed by the hash of a 256-bit state; returns the org to check",
    "PENDING_SWEEP": "background removal of expired rows",
    "MEETING_BY_ID": "webhooks look up by Graph meeting id; the caller checks the org",
    "JOIN_GET": "keyed by the hash of a 256-bit join token; the row carries its org",
    "SUBSCRIPTION_GET": "webhooks look up by subscription id; the row carries its org",
    "SUBSCRIPTION_EXPIRING": "the renewal job serves every organization",
    "INBOX_CLAIM": "workers serve every organization; each item carries its org",
    "INBOX_COMPLETE": "by item id handed out by the lease, and only for its worker",
    "OUTBOX_LEASE": "workers serve every organization; each item carries its org",
    "OUTBOX_DELIVERED": "by item id handed out by the lease, and only for its worker",
    "OUTBOX_RETRY": "by item id handed out by the lease, and only for its worker",
    "OUTBOX_DEAD": "by item id handed out by the lease, and only for its worker",
    "OUTBOX_COUNTS": "operator metrics (depth per state), no row content",
    "OUTBOX_DEAD_ALL": "the operator's dead-letter view across organizations",
    "OUTBOX_REQUEUE": "operator action by dead item id",
    "SETUP_LEASE": "workers serve every organization; each setup carries its org",
    "SETUP_SWEEP_MISSING": "the maintenance sweep serves every organization; rows keep their org",
    "SETUP_COUNTS": "operator metrics (setups per state), no row content",
    "SETUP_PURGE": "background removal of finished rows",
}

TABLE = re.compile(r"\b(?:FROM|UPDATE|INTO)\s+(\w+)")


def statements() -> dict[str, str]:
    return {
        name: value
        for name, value in vars(_sql).items()
        if name.isupper() and isinstance(value, str) and value.split(" ", 1)[0] in {
            "SELECT", "UPDATE", "DELETE", "INSERT",
        }
    }  # fmt: skip


def test_org_rows_are_read_and_changed_by_org() -> None:
    unscoped = set()
    for name, sql in statements().items():
        tables = set(TABLE.findall(sql)) & ORG_SCOPED_TABLES
        if not tables or (sql.startswith("INSERT") and "SELECT" not in sql):
            continue  # inserts write the row's own org_id
        if "org_id = ?" not in sql:
            unscoped.add(name)
    assert unscoped == set(UNSCOPED_BY_DESIGN)


def test_statements_found() -> None:
    found = statements()
    assert len(found) > 40
    assert set(UNSCOPED_BY_DESIGN) <= set(found)
