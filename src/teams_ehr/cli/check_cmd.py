"""``teams-ehr check <fhir-base>``: can this EHR launch teams-ehr? (requirements A2, E4).

Runs SMART discovery exactly as a launch does (:func:`~teams_ehr.smart.discovery.discovery_flow`:
``.well-known/smart-configuration``, then the CapabilityStatement ``oauth-uris`` fallback; no
redirects, size caps, ``Epic-Client-ID`` when given) with a real ``httpx.Client`` and prints a
capability report and a verdict. What the verdict requires, and why:

* an ``authorization_endpoint`` and a ``token_endpoint`` (SMART App Launch 2.x conformance.md);
* PKCE ``S256`` advertised in ``code_challenge_methods_supported`` (REQUIRED since SMART 2.0;
  threat T05: a server without it is refused at launch);
* ``private_key_jwt`` among the token endpoint auth methods and RS384 or ES384 among the signing
  algorithms when the server lists them (client-confidential-asymmetric.md; we never use secrets);
* ``launch-ehr`` (the clinician starts the visit from the EHR) and ``sso-openid-connect`` (the
  id_token identifies the clinician for the Microsoft identity binding) when the server lists
  capabilities at all; a CapabilityStatement-only server lists none, which is a warning.

Epic is detected from the URL layout (``…/interconnect…/api/FHIR/R4`` with the OAuth server at
``…/oauth2``, fhir.epic.com/Documentation?docId=oauth2) or from ``--epic-client-id``. Exit status: 0
usable, 1 not usable (the server answered, but cannot launch us), 2 error (bad URL, unreachable
server).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from teams_ehr.errors import DiscoveryError, TransportError
from teams_ehr.sansio import run_sync
from teams_ehr.smart.canonical import canonical_fhir_base
from teams_ehr.smart.discovery import SmartConfiguration, discovery_flow

__all__ = ["RELEVANT_CAPABILITIES", "CapabilityReport", "build_report", "register"]

RELEVANT_CAPABILITIES = (
    "launch-ehr",
    "launch-standalone",
    "client-confidential-asymmetric",
    "context-ehr-patient",
    "context-ehr-encounter",
    "permission-v2",
    "sso-openid-connect",
    "authorize-post",
)
OUR_SIGNING_ALGS = ("RS384", "ES384")
_EPIC_FHIR_PATH = re.compile(r"^(?P<prefix>.*)/api/FHIR/(?:R4|STU3|DSTU2)$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class CapabilityReport:
    """What ``check`` found; ``problems`` make the server unusable, ``warnings`` do not."""

    fhir_base: str
    source: str
    issuer: str | None
    authorization_endpoint: str | None
    token_endpoint: str | None
    jwks_uri: str | None
    pkce_s256: bool
    code_challenge_methods: list[str] | None
    auth_methods: list[str]
    signing_algs: list[str] | None
    iss_parameter: bool
    capabilities: dict[str, bool]
    epic: bool
    epic_signals: list[str]
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "usable": self.usable}


def _epic_signals(base: str, config: SmartConfiguration | None, client_id: str | None) -> list[str]:
    signals = []
    path = httpx.URL(base).path
    if "/interconnect" in path.lower():
        signals.append("Interconnect path")
    match = _EPIC_FHIR_PATH.match(base)
    if match:
        signals.append("/api/FHIR/<version> layout")
        oauth = match.group("prefix") + "/oauth2"
        if config is not None and config.token_endpoint == oauth + "/token":
            signals.append("OAuth 2.0 server at <interconnect>/oauth2")
    if client_id:
        signals.append("--epic-client-id given")
    return signals


def build_report(
    base: str,
    config: SmartConfiguration | None,
    *,
    source: str,
    epic_client_id: str | None = None,
    failure: DiscoveryError | None = None,
) -> CapabilityReport:
    """The report of a discovered configuration, or of a discovery the server failed."""
    listed = tuple(config.capabilities) if config else ()
    capabilities = {name: name in listed for name in RELEVANT_CAPABILITIES}
    capabilities |= {name: True for name in listed if name.startswith("context-ehr-")}
    methods = None if config is None else config.code_challenge_methods_supported
    algs = None if config is None else config.token_endpoint_auth_signing_alg_values_supported
    auth = list(config.token_endpoint_auth_methods_supported) if config else []
    signals = _epic_signals(base, config, epic_client_id)
    problems: list[str] = []
    warnings: list[str] = []
    if failure is not None:
        problems.append(f"discovery failed: {failure} ({failure.reason})")
    if config is not None:
        if config.authorization_endpoint is None:
            problems.append("no authorization_endpoint: the EHR cannot send users to sign in")
        if methods is None:
            problems.append(
                "code_challenge_methods_supported is not advertised (required since SMART 2.0); "
                "launches refuse such servers unless allow_missing_pkce_metadata is set"
            )
        elif "S256" not in methods:
            problems.append("PKCE S256 is not offered (only S256 is accepted)")
        if not auth:
            warnings.append("token_endpoint_auth_methods_supported is not advertised")
        elif "private_key_jwt" not in auth:
            problems.append("private_key_jwt is not an accepted token endpoint auth method")
        if algs is None:
            warnings.append("token_endpoint_auth_signing_alg_values_supported is not advertised")
        elif not set(algs) & set(OUR_SIGNING_ALGS):
            problems.append("neither RS384 nor ES384 is accepted for client assertions")
        if not listed:
            warnings.append("no SMART capabilities are listed (CapabilityStatement fallback?)")
        else:
            for name in ("launch-ehr", "sso-openid-connect"):
                if not capabilities[name]:
                    problems.append(f"capability {name} is not advertised")
            if not capabilities["client-confidential-asymmetric"]:
                warnings.append("capability client-confidential-asymmetric is not advertised")
        if config.jwks_uri is None:
            warnings.append("no jwks_uri: id_tokens are verified via openid-configuration")
    if signals and not epic_client_id:
        warnings.append(
            "looks like Epic: pass --epic-client-id (Epic may serve per-client endpoints)"
        )
    return CapabilityReport(
        fhir_base=base,
        source=source,
        issuer=config.issuer if config else None,
        authorization_endpoint=config.authorization_endpoint if config else None,
        token_endpoint=config.token_endpoint if config else None,
        jwks_uri=config.jwks_uri if config else None,
        pkce_s256=methods is not None and "S256" in methods,
        code_challenge_methods=None if methods is None else list(methods),
        auth_methods=auth,
        signing_algs=None if algs is None else list(algs),
        iss_parameter=bool(config and config.authorization_response_iss_parameter_supported),
        capabilities=capabilities,
        epic=bool(signals),
        epic_signals=signals,
        problems=problems,
        warnings=warnings,
    )


def register(sub: Any) -> None:
    check = sub.add_parser(
        "check", help="SMART discovery and a capability report for an EHR's FHIR base"
    )
    check.add_argument("fhir_base", help="the FHIR base URL (the launch's iss)")
    check.add_argument("--epic-client-id", help="send Epic-Client-ID on discovery")
    check.add_argument(
        "--allow-http", action="store_true", help="allow http:// loopback servers (tests only)"
    )
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    check.set_defaults(run=run_check)


def run_check(args: argparse.Namespace) -> int:
    base = canonical_fhir_base(args.fhir_base, allow_http=args.allow_http)
    paths: list[str] = []

    def record(request: httpx.Request) -> None:
        paths.append(request.url.path)
        print(f"GET {request.url.copy_with(query=None)}", file=sys.stderr)

    flow = discovery_flow(
        base, epic_client_id=args.epic_client_id, allow_http=args.allow_http, require_pkce=False
    )
    config: SmartConfiguration | None = None
    failure: DiscoveryError | None = None
    with httpx.Client(timeout=args.timeout, event_hooks={"request": [record]}) as client:
        try:
            config = run_sync(flow, client)
        except DiscoveryError as exc:
            failure = exc
        except TransportError as exc:
            raise TransportError(f"cannot reach {base}: {exc}", reason=exc.reason) from None
    source = (
        "CapabilityStatement"
        if any(p.endswith("/metadata") for p in paths)
        else ("smart-configuration")
    )
    report = build_report(
        base, config, source=source, epic_client_id=args.epic_client_id, failure=failure
    )
    if args.json:
        json.dump(report.as_json(), sys.stdout, indent=2)
        print()
    else:
        print(render(report))
    return 0 if report.usable else 1


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def render(report: CapabilityReport) -> str:
    """The human-readable report."""
    methods = report.code_challenge_methods
    rows = [
        ("discovered from", report.source),
        ("issuer", report.issuer or "-"),
        ("authorization", report.authorization_endpoint or "-"),
        ("token", report.token_endpoint or "-"),
        ("jwks_uri", report.jwks_uri or "-"),
        (
            "PKCE S256",
            f"{_yes(report.pkce_s256)} "
            f"({'not advertised' if methods is None else ', '.join(methods) or 'none'})",
        ),
        ("auth methods", ", ".join(report.auth_methods) or "not advertised"),
        (
            "signing algs",
            "not advertised" if report.signing_algs is None else ", ".join(report.signing_algs),
        ),
        ("iss parameter", _yes(report.iss_parameter) + " (RFC 9207 mix-up defense)"),
        (
            "Epic",
            f"{_yes(report.epic)}"
            + (f" ({'; '.join(report.epic_signals)})" if report.epic_signals else ""),
        ),
    ]
    lines = [f"SMART capability report for {report.fhir_base}"]
    lines += [f"  {name:<16}{value}" for name, value in rows]
    lines.append("  capabilities")
    lines += [f"    [{'x' if on else ' '}] {name}" for name, on in report.capabilities.items()]
    verdict = "usable" if report.usable else "NOT usable"
    lines.append(f"verdict: {verdict}")
    lines += [f"  - {problem}" for problem in report.problems]
    if report.warnings:
        lines.append("warnings:")
        lines += [f"  - {warning}" for warning in report.warnings]
    return "\n".join(lines)
