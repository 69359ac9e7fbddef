"""Totality of the SMART server-response parsers: the SMART configuration, the CapabilityStatement
fallback and openid-configuration (SMART App Launch §"Discovery", OIDC Discovery 1.0 §3) and the
token endpoint's answers (RFC 6749 §5.1/§5.2, ``Retry-After`` of RFC 9110 §10.2.3)."""

from __future__ import annotations

from typing import Any

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

from teams_ehr.smart.client_auth import ClientAuthentication
from teams_ehr.smart.discovery import discovery_flow, openid_configuration_flow
from teams_ehr.smart.tokens import TokenResponse, token_request_flow
from teams_ehr.teams.credentials import token_request_flow as entra_token_flow

BASE = "https://fhir.example.org/r4"
ENDPOINT = st.one_of(
    TEXT,
    st.sampled_from(
        [
            "https://auth.example.org/token",
            "/token",
            "https://10.0.0.1/x",
            "https://[::1]/x",
            "https://[bad/x",
            "https://h:99999/x",
            "http://auth.example.org/token",
            "https://u:p@auth.example.org/x",
            "//auth.example.org/x#f",
        ]
    ),
)
SMART_KEYS = [
    "issuer",
    "jwks_uri",
    "authorization_endpoint",
    "token_endpoint",
    "grant_types_supported",
    "token_endpoint_auth_methods_supported",
    "token_endpoint_auth_signing_alg_values_supported",
    "registration_endpoint",
    "scopes_supported",
    "response_types_supported",
    "management_endpoint",
    "introspection_endpoint",
    "revocation_endpoint",
    "capabilities",
    "code_challenge_methods_supported",
    "authorization_response_iss_parameter_supported",
]
SMART_DOC = shaped(SMART_KEYS, st.one_of(ENDPOINT, JSON_VALUES))


def _extension(url: Any, value: Any) -> dict[str, Any]:
    return {"url": url, "valueUri": value}


OAUTH_EXTENSION = st.builds(
    lambda inner: {
        "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
        "extension": inner,
    },
    st.one_of(
        JSON_VALUES,
        st.lists(
            st.builds(
                _extension, st.sampled_from(["authorize", "token", "register"]) | TEXT, ENDPOINT
            ),
            max_size=3,
        ),
    ),
)
CAPABILITY = st.one_of(
    JSON_VALUES,
    st.builds(
        lambda rest: {"resourceType": "CapabilityStatement", "rest": rest},
        st.one_of(
            JSON_VALUES,
            st.lists(
                st.one_of(
                    JSON_VALUES,
                    st.builds(
                        lambda ext: {"security": {"extension": ext}},
                        st.one_of(JSON_VALUES, st.lists(OAUTH_EXTENSION | JSON_VALUES, max_size=2)),
                    ),
                ),
                max_size=2,
            ),
        ),
    ),
)


@given(
    responses(json_bodies(SMART_DOC)),
    responses(json_bodies(CAPABILITY)),
    st.booleans(),
    st.booleans(),
)
@example(
    httpx.Response(200, content=b"[" * 100_000),
    httpx.Response(200, content=b"[" * 100_000),
    True,
    True,
)
@example(
    httpx.Response(200, json={"token_endpoint": "https://[bad/x"}),
    httpx.Response(200, json={"rest": 1}),
    False,
    False,
)
@example(
    httpx.Response(200, json={"token_endpoint": "https://a.example/t", "issuer": "https://["}),
    httpx.Response(200, json={"rest": [{"security": {"extension": 5}}]}),
    False,
    False,
)
def test_discovery_is_total(
    first: httpx.Response, fallback: httpx.Response, allow_http: bool, require_pkce: bool
) -> None:
    for answer in ([first], [httpx.Response(404), fallback]):
        assert_total(
            lambda answer=answer: run_flow(
                discovery_flow(BASE, allow_http=allow_http, require_pkce=require_pkce),
                answers(answer),
            )
        )


OPENID_DOC = shaped(
    ["issuer", "jwks_uri", "id_token_signing_alg_values_supported"],
    st.one_of(ENDPOINT, JSON_VALUES),
)


@given(responses(json_bodies(OPENID_DOC)), st.booleans())
@example(httpx.Response(200, json={"issuer": "i", "jwks_uri": "https://[x"}), False)
def test_openid_configuration_is_total(response: httpx.Response, allow_http: bool) -> None:
    assert_total(
        lambda: run_flow(
            openid_configuration_flow(BASE, allow_http=allow_http), answers([response])
        )
    )


class _NoAuth:
    """Public-client authentication (a :class:`ClientAuthentication`): nothing added."""

    client_id = "client-1"

    def token_request_auth(
        self, token_endpoint: str, *, now: Any
    ) -> tuple[dict[str, str], dict[str, str]]:
        return {}, {}


def _auth() -> ClientAuthentication:
    return _NoAuth()


TOKEN_DOC = shaped(
    [
        "access_token",
        "token_type",
        "expires_in",
        "scope",
        "id_token",
        "refresh_token",
        "error",
        "error_description",
        "patient",
    ],
    st.one_of(st.sampled_from(["Bearer", "bearer", "invalid_grant", "tok"]), JSON_VALUES),
)
TOKEN_RESPONSES = responses(
    json_bodies(TOKEN_DOC), header_names=("retry-after", "content-type", "www-authenticate")
)


@given(
    st.lists(TOKEN_RESPONSES, min_size=1, max_size=3),
    st.sampled_from(["authorization_code", "client_credentials", "refresh_token"]),
)
@example([httpx.Response(200, content=b"[" * 100_000)], "authorization_code")
@example([httpx.Response(429, headers=[(b"Retry-After", "²".encode())])], "client_credentials")
def test_token_endpoint_answers_are_total(answer: list[httpx.Response], grant_type: str) -> None:
    flow = token_request_flow(
        "https://auth.example.org/token", {"grant_type": grant_type}, _auth(), clock=lambda: NOW
    )
    result = assert_total(run_flow, flow, answers(answer))
    assert not isinstance(result, TokenResponse) or result.token_type == "Bearer"


ENTRA_DOC = shaped(
    ["access_token", "token_type", "expires_in", "error", "error_description"],
    st.one_of(st.sampled_from(["Bearer", "tok", "3599", "²", "٣"]), JSON_VALUES),
)


@given(responses(json_bodies(ENTRA_DOC)))
@example(httpx.Response(200, json={"access_token": "t", "token_type": "Bearer", "expires_in": "²"}))
@example(httpx.Response(200, content=b"[" * 100_000))
def test_entra_token_answers_are_total(response: httpx.Response) -> None:
    flow = entra_token_flow(
        "https://login.microsoftonline.com/t/oauth2/v2.0/token", {"grant_type": "x"}, now=0
    )
    assert_total(run_flow, flow, answers([response]))
