"""``teams-ehr keys new`` and ``teams-ehr jwks`` (requirements A9, E4).

``keys new`` writes a PKCS#8 private key (mode 0600, never printed) and prints its ``kid`` (the
RFC 7638 thumbprint); ``jwks`` prints the public JWK Set of one or more keys, for the JWKS URL the
EHR analyst registers. Use separate keys for test and production (Epic requires it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from teams_ehr.errors import ConfigurationError
from teams_ehr.keys import PRIVATE_JWK_MEMBERS, SUPPORTED_SIGNING_ALGS, LocalSigner


def register(sub: Any) -> None:
    keys = sub.add_parser("keys", help="generate signing keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    new = keys_sub.add_parser("new", help="generate a private key for private_key_jwt")
    new.add_argument("--alg", choices=SUPPORTED_SIGNING_ALGS, default="RS384")
    new.add_argument("--out", type=Path, required=True, help="where to write the private PEM")
    new.add_argument("--force", action="store_true", help="overwrite an existing file")
    new.set_defaults(run=run_new)

    jwks = sub.add_parser("jwks", help="print the public JWK Set of private key files")
    jwks.add_argument("pem", type=Path, nargs="+", help="private key PEM files")
    jwks.add_argument("--alg", choices=SUPPORTED_SIGNING_ALGS, default="RS384")
    jwks.set_defaults(run=run_jwks)


def run_new(args: argparse.Namespace) -> int:
    out: Path = args.out
    if out.exists() and not args.force:
        raise ConfigurationError(f"{out} exists; pass --force to overwrite", reason="file_exists")
    signer = LocalSigner.generate(args.alg)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(signer.private_pem())
    print(f"wrote {args.alg} private key to {out} (mode 0600)")
    print(f"kid: {signer.kid}")
    return 0


def run_jwks(args: argparse.Namespace) -> int:
    keys = []
    for path in args.pem:
        try:
            pem = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigurationError(f"cannot read {path}: {exc.strerror}", reason="io") from None
        jwk = LocalSigner.from_pem(pem, args.alg).public_jwk()
        keys.append({k: v for k, v in jwk.items() if k not in PRIVATE_JWK_MEMBERS})
    json.dump({"keys": keys}, sys.stdout, indent=2)
    print()
    return 0
