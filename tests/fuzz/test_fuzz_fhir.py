"""Totality of the FHIR response parsers: conditional and search-then-create writes (FHIR R4
§3.1.0.8 "conditional create", §3.1.1.5 searchset Bundles, OperationOutcome) and the Appointment
read that times a visit (FHIR R4 Appointment)."""

from __future__ import annotations

import httpx
from fuzz_support import (
    JSON_VALUES,
    NOW,
    TEXT,
    answers,
    assert_total,
    json_bodies,
    responses,
    run_flow,
    shaped,
)
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import SecretStr

from teams_ehr.attendance.fhir_resources import ResourceIdentity
from teams_ehr.attendance.writers.fhir_http import create_once_flow
from teams_ehr.smart.context import LaunchContext
from teams_ehr.visits.appointments import appointment_slot_flow

BASE = "https://fhir.example.org/r4"
SYSTEM = "urn:teams-ehr:visit"
IDENTITIES = st.sampled_from(
    [
        ResourceIdentity("Communication", SYSTEM, "v-1"),
        ResourceIdentity("Communication", SYSTEM, "v-1", via="tag"),
    ]
)
MATCHING = {
    "resourceType": "Communication",
    "id": "c1",
    "identifier": [{"system": SYSTEM, "value": "v-1"}],
}
RESOURCE = st.one_of(
    st.just(MATCHING),
    shaped(
        ["resourceType", "id", "identifier", "meta"],
        st.one_of(st.just("Communication"), JSON_VALUES),
    ),
    st.builds(lambda tag: {"resourceType": "Communication", "meta": {"tag": tag}}, JSON_VALUES),
)
ENTRY = st.one_of(JSON_VALUES, st.builds(lambda r: {"resource": r}, RESOURCE))
LINK = st.one_of(
    JSON_VALUES,
    st.builds(
        lambda url: {"relation": "next", "url": url},
        st.sampled_from([BASE + "/Communication?page=2", "https://evil.example/x"]) | TEXT,
    ),
)
BUNDLE = st.builds(
    lambda entry, link, extra: {"resourceType": "Bundle", "entry": entry, "link": link, **extra},
    st.lists(ENTRY, max_size=3) | JSON_VALUES,
    st.lists(LINK, max_size=2) | JSON_VALUES,
    shaped(["type", "total"]),
)
OUTCOME = st.builds(
    lambda issue: {"resourceType": "OperationOutcome", "issue": issue},
    st.lists(shaped(["code", "severity", "diagnostics"]), max_size=2) | JSON_VALUES,
)
FHIR_DOC = st.one_of(BUNDLE, OUTCOME, RESOURCE, JSON_VALUES)
FHIR_RESPONSES = responses(
    json_bodies(FHIR_DOC), header_names=("retry-after", "location", "content-location", "etag")
)


@given(IDENTITIES, st.booleans(), st.lists(FHIR_RESPONSES, min_size=1, max_size=4))
@example(
    ResourceIdentity("Communication", SYSTEM, "v-1"),
    False,
    [httpx.Response(200, json={"resourceType": "Bundle", "link": ["next"]})],
)
@example(
    ResourceIdentity("Communication", SYSTEM, "v-1"),
    True,
    [httpx.Response(503, headers={"Retry-After": "9" * 20})],
)
@example(
    ResourceIdentity("Communication", SYSTEM, "v-1", via="tag"),
    False,
    [
        httpx.Response(
            200,
            json={
                "resourceType": "Bundle",
                "entry": [{"resource": {"resourceType": "Communication", "meta": "x"}}],
            },
        )
    ],
)
def test_fhir_write_answers_are_total(
    identity: ResourceIdentity, conditional: bool, answer: list[httpx.Response]
) -> None:
    flow = create_once_flow(
        BASE,
        SecretStr("token"),
        {"resourceType": "Communication"},
        identity,
        conditional_create=conditional,
        clock=lambda: NOW,
    )
    assert_total(run_flow, flow, answers(answer))


APPOINTMENT = shaped(
    ["resourceType", "start", "end", "status"],
    st.one_of(
        st.sampled_from(
            [
                "Appointment",
                "9999-12-31T23:59:59Z",
                "9999-12-31T23:30:00+00:00",
                "0001-01-01T00:00:00+00:00",
                "2030-05-01T15:00:00Z",
                "2030-05-01T15:00:00",
            ]
        ),
        JSON_VALUES,
    ),
)


@given(responses(json_bodies(APPOINTMENT)), st.sampled_from(["a1", "x/y"]))
@example(
    httpx.Response(200, json={"resourceType": "Appointment", "start": "9999-12-31T23:30:00Z"}), "a1"
)
def test_appointment_reads_are_total(response: httpx.Response, appointment: str) -> None:
    context = LaunchContext(appointment=appointment)
    flow = appointment_slot_flow(BASE, context, "token", now=NOW)
    assert_total(run_flow, flow, answers([response]))


def test_answers_strategy_keeps_raw_header_bytes() -> None:
    respond = answers([httpx.Response(200, headers=[(b"x", b"\xff")])])
    assert respond(httpx.Request("GET", BASE)).headers.raw == [(b"x", b"\xff")]
