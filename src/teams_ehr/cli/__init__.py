"""The ``teams-ehr`` command (requirement E4): init, keys, JWKS, EHR checks, organizations, outbox,
demo.

Each subcommand lives in its own module and registers itself with :func:`main`'s parser; the
commands are thin: they parse arguments, call the library, and print results or a clear error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from teams_ehr.cli import check_cmd, demo_cmd, init_cmd, keys_cmd, orgs_cmd, outbox_cmd
from teams_ehr.errors import TeamsEhrError

COMMANDS = (init_cmd, keys_cmd, check_cmd, orgs_cmd, outbox_cmd, demo_cmd)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="teams-ehr",
        description="Virtual visits in Microsoft Teams launched from SMART on FHIR EHRs.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``teams-ehr`` console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.run(args)
    except TeamsEhrError as exc:
        print(f"teams-ehr: error: {exc} ({exc.reason})", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code
