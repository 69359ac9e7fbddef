"""Requirement P2 (SMART part): one full EHR launch against FakeEhr on loopback, three implementations.

Each launch, over real sockets to a FakeEhr served by uvicorn on 127.0.0.1:

1. discovery (``.well-known/smart-configuration``),
2. the browser's authorization request (GET ``/oauth2/authorize``, 302 read, not followed),
3. the token request (authorization code + PKCE + client authentication),
4. the JWKS fetch and the ``id_token`` verification (RS256, iss, aud, nonce),
5. the launch context.

Implementations, measured in one run, interleaved launch by launch:

(a) **teams-ehr**: ``SmartLaunchClient`` (fresh discovery and JWKS caches per launch, so every
    launch makes the same four exchanges), ``private_key_jwt`` RS384.
(b) **hand-written httpx**: the same four exchanges written out with httpx + pyjwt, same key,
    same checks a careful reader would write (state, nonce, iss, aud), no models.
(c) **python fhirclient** (installed version): what it can do of the same steps. It has no
    ``private_key_jwt`` and ignores the ``id_token`` (it logs "Received an id_token, ignoring"),
    so it runs as a ``client_secret_basic`` client, discovers through ``/metadata`` (its only
    discovery path) and does not verify the id_token: it does *less* work than (a) and (b).

The browser step is the same code for all three. Prints a markdown table (median and p90 per
launch, ratios) and writes it to ``benchmarks/results/smart.md``.

    python benchmarks/bench_smart_launch.py [--launches 150] [--warmup 15]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import os
import platform
import secrets
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from fhirclient import client as fhirclient_client

from teams_ehr.keys import LocalSigner
from teams_ehr.smart.authorize import SmartClientConfig
from teams_ehr.smart.client_auth import PrivateKeyJwt
from teams_ehr.smart.flows import SmartLaunchClient
from teams_ehr.smart.launch import parse_launch_request
from teams_ehr.testing.asgi import asgi_app_from_handler
from teams_ehr.testing.fake_ehr import FakeEhr
from teams_ehr.testing.loopback import serve_on_loopback

REDIRECT = "https://app.test/callback"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def browser_authorize(browser: httpx.Client, url: str) -> dict[str, str]:
    """The user agent: GET the authorization URL and read the 302's query (not followed)."""
    response = browser.get(url)
    if response.status_code != 302:
        raise RuntimeError(f"authorize answered {response.status_code}")
    return dict(parse_qsl(urlsplit(response.headers["location"]).query))


class TeamsEhr:
    name = "(a) teams-ehr"

    def __init__(self, fake: FakeEhr, http: httpx.Client, signer: LocalSigner) -> None:
        self.fake, self.http, self.auth = fake, http, PrivateKeyJwt("app", signer)
        self.config = SmartClientConfig(client_id="app", redirect_uri=REDIRECT, allow_http=True)

    def launch(self, browser: httpx.Client) -> str | None:
        client = SmartLaunchClient(self.http, self.config, self.auth)  # cold caches
        params = {"iss": self.fake.base_url, "launch": self.fake.issue_launch()}
        request = parse_launch_request(params, allow_http=True)
        redirect, pending = client.start_launch(
            request.iss, "org", launch=request.launch, session_id="sess", approved=None
        )
        callback = browser_authorize(browser, redirect.url)
        return client.complete_launch(pending, callback, session_id="sess").context.patient


class HandWritten:
    name = "(b) hand-written httpx"

    def __init__(self, fake: FakeEhr, http: httpx.Client, signer: LocalSigner) -> None:
        self.fake, self.http, self.kid = fake, http, signer.kid
        self.key = serialization.load_pem_private_key(signer.private_pem(), None)

    def launch(self, browser: httpx.Client) -> str | None:
        iss, launch = self.fake.base_url, self.fake.issue_launch()
        conf = self.http.get(
            iss + "/.well-known/smart-configuration", headers={"Epic-Client-ID": "app"}
        ).json()
        if "S256" not in conf.get("code_challenge_methods_supported", []):
            raise RuntimeError("no PKCE")
        verifier, state, nonce = (secrets.token_urlsafe(32) for _ in range(3))
        digest = hashlib.sha256(verifier.encode()).digest()
        challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        query = urlencode(
            {
                "response_type": "code",
                "client_id": "app",
                "redirect_uri": REDIRECT,
                "scope": "launch openid fhirUser",
                "state": state,
                "aud": iss,
                "launch": launch,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
                "nonce": nonce,
            }
        )
        callback = browser_authorize(browser, conf["authorization_endpoint"] + "?" + query)
        if callback.get("state") != state or callback.get("iss") != conf["issuer"]:
            raise RuntimeError("state or iss mismatch")
        now = int(time.time())
        claims = {
            "iss": "app",
            "sub": "app",
            "aud": conf["token_endpoint"],
            "iat": now,
            "exp": now + 240,
            "jti": secrets.token_urlsafe(32),
        }
        assertion = jwt.encode(claims, self.key, algorithm="RS384", headers={"kid": self.kid})  # type: ignore[arg-type]
        token = self.http.post(
            conf["token_endpoint"],
            data={
                "grant_type": "authorization_code",
                "code": callback["code"],
                "redirect_uri": REDIRECT,
                "code_verifier": verifier,
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": assertion,
            },
        ).json()
        keys = self.http.get(conf["jwks_uri"]).json()["keys"]
        kid = jwt.get_unverified_header(token["id_token"])["kid"]
        key = jwt.PyJWK(next(k for k in keys if k["kid"] == kid), algorithm="RS256")
        id_claims = jwt.decode(
            token["id_token"],
            key.key,
            algorithms=["RS256"],
            audience="app",
            issuer=conf["issuer"],
            options={"require": ["exp", "iat", "iss", "aud"]},
        )
        if id_claims.get("nonce") != nonce:
            raise RuntimeError("nonce mismatch")
        patient: str | None = token.get("patient")
        return patient


class FhirClientPy:
    name = "(c) python fhirclient"

    def __init__(self, fake: FakeEhr, name: str | None = None) -> None:
        self.fake = fake
        self.name = name or self.name
        fake.register_client("fc-app", redirect_uris=[REDIRECT], secret="fc-secret")
        logging.getLogger("fhirclient").setLevel(logging.ERROR)

    def launch(self, browser: httpx.Client) -> str | None:
        settings = {
            "app_id": "fc-app",
            "app_secret": "fc-secret",
            "api_base": self.fake.base_url,
            "redirect_uri": REDIRECT,
            "launch_token": self.fake.issue_launch(),
            "scope": "openid fhirUser",
        }
        smart = fhirclient_client.FHIRClient(settings=settings)
        response = browser.get(smart.authorize_url)
        smart.handle_callback(response.headers["location"])
        context: dict[str, Any] = smart.launch_context or {}
        return context.get("patient")


RESOURCE_TYPES = (
    "Account",
    "AllergyIntolerance",
    "Appointment",
    "Binary",
    "CarePlan",
    "CareTeam",
    "Condition",
    "Consent",
    "Coverage",
    "Device",
    "DiagnosticReport",
    "DocumentReference",
    "Encounter",
    "Endpoint",
    "FamilyMemberHistory",
    "Flag",
    "Goal",
    "Group",
    "Immunization",
    "ImagingStudy",
    "List",
    "Location",
    "Media",
    "Medication",
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationRequest",
    "Observation",
    "Organization",
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "Procedure",
    "Provenance",
    "Questionnaire",
    "QuestionnaireResponse",
    "RelatedPerson",
    "RequestGroup",
    "ResearchStudy",
    "ServiceRequest",
    "Specimen",
    "Substance",
    "Task",
)


def production_sized_metadata(
    fake: FakeEhr, copies: int
) -> Callable[[httpx.Request], httpx.Response]:
    """A handler serving a CapabilityStatement shaped like a production EHR's (every resource
    with interactions and documented search parameters), delegating the rest to ``fake``."""
    statement = fake.capability_statement()
    resources = []
    for index in range(copies):
        kind = RESOURCE_TYPES[index % len(RESOURCE_TYPES)]
        params = [
            {
                "name": f"param-{n}",
                "type": "token",
                "documentation": f"Search {kind} by parameter {n}; see the vendor guide." * 3,
            }
            for n in range(12)
        ]
        interactions = [{"code": c} for c in ("read", "vread", "search-type", "create")]
        resources.append({"type": kind, "interaction": interactions, "searchParam": params})
    statement["rest"][0]["resource"] = resources
    body = json.dumps(statement).encode()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == fake.base_path + "/metadata":
            fake.requests.append(request)
            return httpx.Response(
                200, headers={"Content-Type": "application/fhir+json"}, content=body
            )
        return fake.handler(request)

    return handler


def _measure(
    runner: Callable[[httpx.Client], str | None], browser: httpx.Client
) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process — which includes the fake server thread)."""
    start, cpu = time.perf_counter(), time.process_time()
    patient = runner(browser)
    elapsed, cpu_used = time.perf_counter() - start, time.process_time() - cpu
    if patient != "patient-1":
        raise RuntimeError(f"launch returned no patient context: {patient!r}")
    return elapsed, cpu_used


def _load() -> str:
    try:
        return ", ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover - not on every platform
        return "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launches", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=15)
    parser.add_argument(
        "--capability-resources",
        type=int,
        default=len(RESOURCE_TYPES),
        help="resource entries in the production-sized CapabilityStatement of row (d)",
    )
    args = parser.parse_args()
    signer = LocalSigner.generate("RS384")
    fake = FakeEhr(base_url="http://127.0.0.1/fhir/r4")
    fake.register_client("app", redirect_uris=[REDIRECT], jwks={"keys": [signer.public_jwk()]})
    big = FakeEhr(base_url="http://127.0.0.1/fhir/r4")
    served: dict[str, Callable[[httpx.Request], httpx.Response]] = {"handler": big.handler}
    big_app = asgi_app_from_handler(lambda request: served["handler"](request))
    with (
        serve_on_loopback(fake.asgi_app()) as url,
        serve_on_loopback(big_app) as big_url,
        httpx.Client() as http,
        httpx.Client() as browser,
    ):
        fake.rebase(url + "/fhir/r4")
        big.rebase(big_url + "/fhir/r4")  # the statement embeds URLs: build it after rebasing
        served["handler"] = production_sized_metadata(big, args.capability_resources)
        impls = [
            TeamsEhr(fake, http, signer),
            HandWritten(fake, http, signer),
            FhirClientPy(fake),
            FhirClientPy(big, "(d) python fhirclient, production-sized /metadata"),
        ]
        times: dict[str, list[float]] = {impl.name: [] for impl in impls}
        cpu: dict[str, list[float]] = {impl.name: [] for impl in impls}
        for round_ in range(args.warmup + args.launches):
            for impl in impls:
                elapsed, cpu_used = _measure(impl.launch, browser)
                if round_ >= args.warmup:
                    times[impl.name].append(elapsed)
                    cpu[impl.name].append(cpu_used)
    medians = {name: statistics.median(values) * 1000 for name, values in times.items()}
    cpu_ms = {name: statistics.median(values) * 1000 for name, values in cpu.items()}
    p90 = {name: statistics.quantiles(v, n=10)[-1] * 1000 for name, v in times.items()}
    ours, hand, fhirclient, fhirclient_big = (medians[impl.name] for impl in impls)
    metadata_kib = (
        len(
            production_sized_metadata(big, args.capability_resources)(
                httpx.Request("GET", big.base_url + "/metadata")
            ).content
        )
        / 1024
    )
    lines = [
        f"# P2 (SMART part) — full EHR launch on loopback ({args.launches} launches each, "
        f"interleaved; Python {platform.python_version()})",
        "",
        "| implementation | median ms / launch | p90 ms | ratio to (b) | CPU ms / launch "
        "(incl. fake server) |",
        "|---|---|---|---|---|",
        *(
            f"| {name} | {medians[name]:.2f} | {p90[name]:.2f} | {medians[name] / hand:.2f} "
            f"| {cpu_ms[name]:.2f} |"
            for name in times
        ),
        "",
        f"- teams-ehr / hand-written = **{ours / hand:.2f}** (goal ≤ 1.15)",
        f"- fhirclient / teams-ehr = **{fhirclient / ours:.2f}** with FakeEhr's minimal "
        f"CapabilityStatement, **{fhirclient_big / ours:.2f}** with a production-sized one "
        f"({args.capability_resources} resources, {metadata_kib:.0f} KiB) — goal ≥ 3. fhirclient "
        "does less: no assertion signing, no JWKS fetch, no id_token verification; its only "
        "discovery path is /metadata, parsed into its models.",
        "- every launch: discovery, browser authorize (302), token (PKCE + client auth), "
        "JWKS + id_token verification for (a) and (b); fhirclient: /metadata, authorize, token "
        "with client_secret_basic.",
        f"- machine load average at the end: {_load()} (wall times are noisy on a busy "
        "machine; the ratio is from interleaved launches in one run)",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    (results / "smart.md").write_text(text)


if __name__ == "__main__":
    main()
