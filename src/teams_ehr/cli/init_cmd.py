"""``teams-ehr init [DIR]``: a new deployment folder, ready for the quickstart (docs/quickstart.md).

Writes ``settings.toml`` (every setting, commented: :mod:`teams_ehr.cli.settings_template`)
with a fresh ``encryption_key`` and ``external_id_key``, our SMART signing key for the EHR's
test environment (``keys/test.pem``, as ``teams-ehr keys new`` does), and ``org.json`` (the
organization ``teams-ehr orgs create`` reads: :mod:`teams_ehr.cli.org_template`), then checks
both the way the app and the CLI will read them and prints the next three commands. Files that
hold secrets are written with mode 0600; nothing secret is printed. ``http://`` is accepted only
for a loopback ``app_base_url`` or FHIR base, and then ``allow_http`` is set.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from teams_ehr.cli.org_template import EXAMPLE_FHIR_BASE, organization_template
from teams_ehr.cli.org_template import validate_organization as check_organization
from teams_ehr.cli.settings_template import SettingsValues, is_loopback_url, render
from teams_ehr.config import load_settings
from teams_ehr.errors import ConfigurationError
from teams_ehr.keys import LocalSigner

__all__ = ["register"]

DEFAULT_APP_BASE_URL = "http://127.0.0.1:8000"
_FILES = ("settings.toml", "keys/test.pem", "org.json")


def register(sub: Any) -> None:
    init = sub.add_parser(
        "init", help="write settings.toml, keys and org.json for a new deployment"
    )
    init.add_argument("dir", nargs="?", default=".", type=Path, metavar="DIR")
    init.add_argument(
        "--app-base-url",
        default=DEFAULT_APP_BASE_URL,
        metavar="URL",
        help=f"where browsers and EHRs reach the app (default {DEFAULT_APP_BASE_URL})",
    )
    init.add_argument(
        "--fhir-base",
        default=EXAMPLE_FHIR_BASE,
        metavar="URL",
        help="the EHR test environment's FHIR base URL, for org.json",
    )
    init.add_argument("--client-id", metavar="ID", help="the SMART client id the EHR assigned")
    init.add_argument("--microsoft-client-id", metavar="ID", help="the Entra app's client id")
    init.add_argument("--tenant-id", metavar="GUID", help="the organization's Entra tenant id")
    init.add_argument(
        "--admin-oid", metavar="GUID", help="your Entra object id: admin console and approver"
    )
    init.add_argument("--force", action="store_true", help="overwrite existing files")
    init.set_defaults(run=run_init)


def _check_http(url: str, name: str) -> None:
    scheme = urlsplit(url).scheme
    if scheme == "http" and not is_loopback_url(url):
        raise ConfigurationError(
            f"{name} {url!r}: http:// only for loopback (127.0.0.1, localhost); use https",
            reason="invalid_settings",
        )


def _new_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _next_commands(folder: Path, app_base_url: str) -> list[str]:
    port = urlsplit(app_base_url).port or 8000
    return [
        *([] if folder.resolve() == Path.cwd() else [f"cd {folder}"]),
        "teams-ehr orgs create --config settings.toml --file org.json",
        f"uvicorn app:app --host 127.0.0.1 --port {port}",
    ]


def run_init(args: argparse.Namespace) -> int:
    folder: Path = args.dir
    base = args.app_base_url.rstrip("/")
    _check_http(base, "--app-base-url")
    _check_http(args.fhir_base, "--fhir-base")
    existing = [name for name in _FILES if (folder / name).exists()]
    if existing and not args.force:
        raise ConfigurationError(
            f"{folder} already has {', '.join(existing)}; pass --force to overwrite",
            reason="file_exists",
        )
    values = SettingsValues(
        app_base_url=base,
        encryption_key=_new_key(),
        external_id_key=_new_key(),
        **{
            name: value
            for name, value in (
                ("microsoft_client_id", args.microsoft_client_id),
                ("tenant_id", args.tenant_id),
                ("admin_oid", args.admin_oid),
            )
            if value is not None
        },
    )
    org_options = {
        "client_id": args.client_id,
        "tenant_id": args.tenant_id,
        "approver_oid": args.admin_oid,
    }
    document = organization_template(
        app_base_url=base,
        fhir_base=args.fhir_base,
        **{name: value for name, value in org_options.items() if value is not None},
    )
    check_organization(document, "org.json")  # before writing anything

    folder.mkdir(parents=True, exist_ok=True)
    signer = LocalSigner.generate("RS384")
    _write_private(folder / "keys" / "test.pem", signer.private_pem())
    _write_private(folder / "settings.toml", render(values).encode("utf-8"))
    (folder / "org.json").write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    load_settings(folder / "settings.toml", environ={})  # exactly as the app will read it

    print(f"wrote {folder / 'settings.toml'} (mode 0600: it holds the keys)")
    print(f"wrote {folder / 'keys' / 'test.pem'} (SMART signing key, kid {signer.kid})")
    print(f"wrote {folder / 'org.json'} (edit: your EHR's FHIR base, client id, tenant)")
    print("next:")
    for command in _next_commands(folder, base):
        print(f"  {command}")
    return 0
