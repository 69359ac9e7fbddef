"""``teams-ehr orgs list|show|create|template|records`` (requirements C1, C2, E4).

Every command reads the deployment's settings (``--config settings.toml`` and/or
``TEAMS_EHR__SECTION__KEY`` variables, :func:`~teams_ehr.config.load_settings`), opens the store
they name (migrations applied, as the app does) and calls the
:class:`~teams_ehr.orgs.registry.OrganizationRegistry`. Approval is not offered here: it needs
the approver's Microsoft sign-in and a live EHR sign-in (requirement C1), which only the admin pages
can do. ``records`` prints what the EHR analyst enters after approval (requirement C2).
``template`` prints the organization JSON ``create`` reads, its fields explained on stderr; a
document ``create`` refuses is answered with each bad field and its fix
(:mod:`teams_ehr.cli.org_template`).

The helpers :func:`add_settings_argument` and :func:`configured_store` are shared with
:mod:`teams_ehr.cli.outbox_cmd`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from teams_ehr._redact import redact_url
from teams_ehr._types import utc_now
from teams_ehr.cli.org_template import FIELDS, organization_template, validate_organization
from teams_ehr.config import TeamsEhrSettings, load_settings
from teams_ehr.errors import ConfigurationError
from teams_ehr.orgs.models import ENVIRONMENT_NAMES, Organization
from teams_ehr.orgs.records import integration_records
from teams_ehr.orgs.registry import SYSTEM_ACTOR, OrganizationRegistry
from teams_ehr.store.factory import open_store
from teams_ehr.store.protocol import Store

__all__ = ["add_settings_argument", "configured_store", "load_cli_settings", "register"]


# -- shared with outbox_cmd ------------------------------------------------------------------------


def add_settings_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        help="settings TOML file (TEAMS_EHR__SECTION__KEY variables override it)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def load_cli_settings(args: argparse.Namespace) -> TeamsEhrSettings:
    """The settings, or a :class:`ConfigurationError` naming the missing or invalid fields."""
    try:
        return load_settings(args.config)
    except ConfigurationError as exc:
        hint = "" if args.config else " (pass --config PATH or set TEAMS_EHR__* variables)"
        raise ConfigurationError(f"{exc}{hint}", reason=exc.reason) from None


@asynccontextmanager
async def configured_store(settings: TeamsEhrSettings) -> AsyncIterator[Store]:
    """The store of ``settings``, opened and migrated; progress goes to stderr."""
    url = settings.store_url
    shown = url if url.startswith("sqlite:") else redact_url(url)  # no credentials in SQLite URLs
    print(f"store: {shown}", file=sys.stderr)
    store = open_store(settings.store_url, encryption_key=settings.encryption_key_bytes())
    async with store:
        await store.migrate()
        yield store


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True, default=str)
    print()


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


# -- the commands ----------------------------------------------------------------------------------


def register(sub: Any) -> None:
    orgs = sub.add_parser("orgs", help="list, show and create organizations; integration records")
    orgs_sub = orgs.add_subparsers(dest="orgs_command", required=True, metavar="ACTION")

    listing = orgs_sub.add_parser("list", help="every organization and its environments' states")
    listing.add_argument("--tenant", help="only this Entra tenant id")
    listing.set_defaults(run=run_list)

    show = orgs_sub.add_parser("show", help="one organization, its environments and audit log")
    show.add_argument("org_id", metavar="ORG")
    show.set_defaults(run=run_show)

    create = orgs_sub.add_parser("create", help="store a new organization (as drafts)")
    create.add_argument("--file", type=Path, required=True, help="organization JSON document")
    create.add_argument(
        "--actor", default=SYSTEM_ACTOR, help="the Entra oid recorded in the audit log"
    )
    create.set_defaults(run=run_create)

    template = orgs_sub.add_parser(
        "template", help="print an organization JSON for create, its fields explained"
    )
    template.add_argument(
        "--app-base-url", metavar="URL", help="this app's URL (default: from --config)"
    )
    template.add_argument("--fhir-base", metavar="URL", help="the EHR's FHIR base URL")
    template.add_argument("--client-id", metavar="ID", help="the SMART client id of the EHR")
    template.add_argument("--config", type=Path, metavar="PATH", help="settings TOML file")
    template.set_defaults(run=run_template)

    records = orgs_sub.add_parser("records", help="the EHR integration records of an approval")
    records.add_argument("org_id", metavar="ORG")
    records.add_argument("environment", metavar="ENV", choices=ENVIRONMENT_NAMES)
    records.set_defaults(run=run_records)

    for parser in (listing, show, create, records):
        add_settings_argument(parser)


def _states(org: Organization) -> list[str]:
    return [
        "-" if (env := org.environment(name)) is None else env.state for name in ENVIRONMENT_NAMES
    ]


def run_list(args: argparse.Namespace) -> int:
    settings = load_cli_settings(args)

    async def work() -> list[Organization]:
        async with configured_store(settings) as store:
            return await OrganizationRegistry(store, utc_now).list(tenant_id=args.tenant)

    orgs = sorted(anyio.run(work), key=lambda org: org.org_id)
    if args.json:
        print_json([{**org.document(), "version": org.version} for org in orgs])
        return 0
    rows = [
        [org.org_id, org.display_name, org.tenant_id, *_states(org), org.version] for org in orgs
    ]
    print_table(["ORG", "NAME", "TENANT", "TEST", "PRODUCTION", "VERSION"], rows)
    return 0


def _require(org: Organization | None, org_id: str) -> Organization:
    if org is None:
        raise ConfigurationError(f"no organization {org_id!r}", reason="unknown_organization")
    return org


def run_show(args: argparse.Namespace) -> int:
    settings = load_cli_settings(args)

    async def work() -> tuple[Organization | None, list[dict[str, Any]]]:
        async with configured_store(settings) as store:
            registry = OrganizationRegistry(store, utc_now)
            org = await registry.get(args.org_id)
            entries = await registry.audit_log(args.org_id) if org is not None else []
            audit = [
                {"seq": e.seq, "at": e.at.isoformat(), "actor": e.actor, "action": e.action}
                for e in entries
            ]
            return org, audit

    found, audit = anyio.run(work)
    org = _require(found, args.org_id)
    if args.json:
        print_json({"organization": org.document(), "version": org.version, "audit": audit})
        return 0
    print(f"{org.org_id}  {org.display_name}  (version {org.version})")
    print(f"  tenant     {org.tenant_id}")
    print(f"  approver   {org.approver_oid} (self-approval {org.allow_self_approval})")
    for name in ENVIRONMENT_NAMES:
        env = org.environment(name)
        if env is None:
            print(f"  {name}: not configured")
            continue
        config = env.config
        print(f"  {name}: {env.state}")
        print(f"    fhir_base     {config.fhir_base}")
        print(f"    client_id     {config.client_id}")
        print(f"    redirect_uri  {config.redirect_uri}")
        print(f"    jwks_url      {config.jwks_url}")
        print(f"    writer        {config.writer}")
        if env.approved_at is not None:
            print(f"    approved      {env.approved_at.isoformat()} by {env.approved_by}")
    print("audit log:")
    print_table(["SEQ", "AT", "ACTOR", "ACTION"], [list(entry.values()) for entry in audit])
    return 0


def _read_organization(path: Path) -> Organization:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror}", reason="io") from None
    except UnicodeDecodeError as exc:
        raise ConfigurationError(
            f"{path}: not UTF-8 text (byte {exc.start})", reason="invalid_json"
        ) from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(
            f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}",
            reason="invalid_json",
        ) from None
    except RecursionError:
        raise ConfigurationError(f"{path}: JSON nested too deeply", reason="invalid_json") from None
    return validate_organization(document, str(path))


def run_template(args: argparse.Namespace) -> int:
    base = args.app_base_url
    if base is None:
        base = load_cli_settings(args).app_base_url if args.config else "https://visits.example.org"
    options = {"fhir_base": args.fhir_base, "client_id": args.client_id}
    document = organization_template(
        app_base_url=base, **{key: value for key, value in options.items() if value is not None}
    )
    validate_organization(document, "the template")  # e.g. a --fhir-base no launch would accept
    print_json(document)
    print(
        "fields (save the JSON, edit it, then: teams-ehr orgs create --file FILE):", file=sys.stderr
    )
    for name, help_text in FIELDS.items():
        print(f"  {name}: {help_text}", file=sys.stderr)
    return 0


def run_create(args: argparse.Namespace) -> int:
    settings = load_cli_settings(args)
    org = _read_organization(args.file)

    async def work() -> Organization:
        async with configured_store(settings) as store:
            return await OrganizationRegistry(store, utc_now).create(org, actor=args.actor)

    created = anyio.run(work)
    if args.json:
        print_json({**created.document(), "version": created.version})
    else:
        print(f"created {created.org_id} (version {created.version}); environments: ", end="")
        print(
            ", ".join(f"{n}={s}" for n, s in zip(ENVIRONMENT_NAMES, _states(created), strict=True))
        )
    return 0


def run_records(args: argparse.Namespace) -> int:
    settings = load_cli_settings(args)

    async def work() -> Organization | None:
        async with configured_store(settings) as store:
            return await OrganizationRegistry(store, utc_now).get(args.org_id)

    org = _require(anyio.run(work), args.org_id)
    records = integration_records(org, args.environment, app_base_url=settings.app_base_url)
    data = records.model_dump(mode="json")
    if args.json:
        print_json(data)
        return 0
    print(f"integration records for {org.org_id} ({args.environment})")
    for key, value in data.items():
        shown = ", ".join(value) if isinstance(value, list) else value
        print(f"  {key:<20}{'-' if shown is None else shown}")
    return 0
