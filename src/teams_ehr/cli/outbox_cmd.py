"""``teams-ehr outbox status|setups|dead|retry|purge`` (requirements C5, D1, D5, D7, E4, E6).

The attendance outbox holds the FHIR writes still owed to EHRs. ``status`` prints the count per
state (``pending``, ``leased``, ``delivered``, ``dead``) and, in its table, the dead letters per
reason code (``oauth_invalid_client``, ``fhir_bad_request``, ``expired`` …: docs/errors.md); ``dead`` lists the dead letters (id,
organization, kind, attempts, when, last reason code); ``retry`` puts dead letters back to
``pending``, due now, with a fresh retry budget
(:meth:`~teams_ehr.store.protocol.OutboxStore.requeue_dead`); ``purge`` runs the retention purge
the attendance maintenance loop runs hourly, with the windows of ``settings.attendance``
(:meth:`~teams_ehr.store.protocol.RetentionStore.purge_expired`; ``--dry-run`` only counts).
``setups`` counts the meetings' attendance subscription setups per state (``pending``,
``leased``, ``done``, ``abandoned``, and ``retrying``: pending or leased after a failure;
docs/guides/attendance.md#subscription-setup); ``status`` adds that table when any setup is
unfinished or abandoned.
Payloads and idempotency keys are never printed: they may carry visit and participant details.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import Any

import anyio

from teams_ehr._types import utc_now
from teams_ehr.cli.orgs_cmd import (
    add_settings_argument,
    configured_store,
    load_cli_settings,
    print_json,
    print_table,
)
from teams_ehr.store.protocol import OutboxItem

__all__ = ["register"]


def register(sub: Any) -> None:
    outbox = sub.add_parser(
        "outbox", help="the attendance outbox: depth, dead letters, retry, retention purge"
    )
    outbox_sub = outbox.add_subparsers(dest="outbox_command", required=True, metavar="ACTION")

    status = outbox_sub.add_parser("status", help="items per state")
    status.set_defaults(run=run_status)

    setups = outbox_sub.add_parser(
        "setups", help="attendance subscription setups per state (pending, retrying, abandoned)"
    )
    setups.set_defaults(run=run_setups)

    dead = outbox_sub.add_parser("dead", help="list dead letters")
    dead.add_argument("--org", help="only this organization")
    dead.set_defaults(run=run_dead)

    retry = outbox_sub.add_parser("retry", help="requeue dead letters, due now")
    retry.add_argument("item_ids", metavar="ITEM_ID", type=int, nargs="+")
    retry.set_defaults(run=run_retry)

    purge = outbox_sub.add_parser("purge", help="delete rows past their retention windows")
    purge.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    purge.set_defaults(run=run_purge)

    for parser in (status, setups, dead, retry, purge):
        add_settings_argument(parser)


def run_status(args: argparse.Namespace) -> int:
    settings = load_cli_settings(args)

    async def work() -> tuple[dict[str, int], Counter[str], dict[str, int]]:
        async with configured_store(settings) as store:
            counts = await store.outbox_counts()
            dead = await store.list_dead() if counts.get("dead") else []
            reasons = Counter(item.last_reason or "unknown" for item in dead)
            setups = await store.subscription_setup_counts()
            return {str(state): n for state, n in counts.items()}, reasons, setups

    counts, reasons, setups = anyio.run(work)
    if args.json:
        print_json(counts)
    else:
        print_table(["STATE", "ITEMS"], sorted(counts.items()))
        if reasons:
            print()
            print_table(["DEAD REASON", "ITEMS"], sorted(reasons.items()))
        if any(n for state, n in setups.items() if state != "done"):
            print()
            print_table(["SUBSCRIPTION SETUP", "MEETINGS"], sorted(setups.items()))
    return 0


def run_setups(args: argparse.Namespace) -> int:
    settings = load_cli_settings(args)

    async def work() -> dict[str, int]:
        async with configured_store(settings) as store:
            return await store.subscription_setup_counts()

    counts = anyio.run(work)
    if args.json:
        print_json(counts)
    else:
        print_table(["SUBSCRIPTION SETUP", "MEETINGS"], sorted(counts.items()))
    return 0


def _dead_row(item: OutboxItem) -> dict[str, Any]:
    return {
        "item_id": item.item_id,
        "org_id": item.org_id,
        "kind": item.kind,
        "attempts": item.attempts,
        "created_at": item.created_at.isoformat(),
        "last_reason": item.last_reason,
    }


def run_dead(args: argparse.Namespace) -> int:
    settings = load_cli_settings(args)

    async def work() -> list[dict[str, Any]]:
        async with configured_store(settings) as store:
            return [_dead_row(item) for item in await store.list_dead(args.org)]

    rows = anyio.run(work)
    if args.json:
        print_json(rows)
    else:
        print_table(
            ["ITEM", "ORG", "KIND", "ATTEMPTS", "CREATED", "LAST REASON"],
            [list(row.values()) for row in rows],
        )
    return 0


def run_retry(args: argparse.Namespace) -> int:
    settings = load_cli_settings(args)

    async def work() -> dict[int, bool]:
        async with configured_store(settings) as store:
            return {
                item_id: await store.requeue_dead(item_id, now=utc_now())
                for item_id in args.item_ids
            }

    results = anyio.run(work)
    requeued = [item_id for item_id, done in results.items() if done]
    refused = [item_id for item_id, done in results.items() if not done]
    if args.json:
        print_json({"requeued": requeued, "not_dead": refused})
    else:
        for item_id in requeued:
            print(f"requeued {item_id}")
    for item_id in refused:
        print(
            f"teams-ehr: item {item_id} is not a dead letter (unknown or not dead)", file=sys.stderr
        )
    return 1 if refused else 0


def run_purge(args: argparse.Namespace) -> int:
    settings = load_cli_settings(args)
    config = settings.attendance

    async def work() -> dict[str, int]:
        async with configured_store(settings) as store:
            return await store.purge_expired(
                now=utc_now(),
                inbox_keep=config.inbox_retention,
                outbox_keep=config.delivered_retention,
                dead_keep=config.dead_letter_retention,
                dry_run=args.dry_run,
            )

    counts = anyio.run(work)
    if args.json:
        print_json({"dry_run": args.dry_run, "rows": counts})
    else:
        header = "WOULD PURGE" if args.dry_run else "PURGED"
        print_table(["KIND", header], sorted(counts.items()))
    return 0
