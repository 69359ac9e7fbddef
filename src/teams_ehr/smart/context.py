"""The launch context the EHR hands back with the token (requirement A6).

Sources: SMART App Launch 2.x app-launch.md §"Launch context" and scopes-and-launch-context.md
(``patient``, ``encounter``, ``fhirContext``, ``need_patient_banner``, ``smart_style_url``,
``intent``, ``tenant``), and Epic's token response (fhir.epic.com/Documentation?docId=oauth2:
``appointment``, ``location``, ``loginDepartment``, ``__epic.dstu2.patient``,
``need_patient_banner`` sent as the *string* ``"true"``/``"false"``). SMART says EHRs MAY add keys,
so unknown keys stay reachable via ``model_extra``.

Identity comes only from a *verified* ``id_token`` (SMART §"fhirUser"; threat T11): ``fhir_user`` is
its ``fhirUser`` claim and ``user_id`` is its ``sub`` claim — the OIDC subject, stable per issuer
(at Epic the FHIR id of the Practitioner, Patient or RelatedPerson). ``user_id`` is the key of the
EHR user ↔ Microsoft identity map (requirement B6); it is ``None`` when no ``id_token`` was
requested.

Names. Attributes (and the constructor) use Python names; parsing with
:func:`build_launch_context` or ``LaunchContext.model_validate`` accepts the wire names too, and
``model_dump(by_alias=True)`` writes the wire names back. Only three differ:

=====================  =========================
attribute              wire name (token response)
=====================  =========================
``fhir_context``       ``fhirContext``
``login_department``   ``loginDepartment`` (Epic)
``epic_dstu2_patient`` ``__epic.dstu2.patient`` (Epic)
=====================  =========================

``repr``/``str`` show only the granted scopes and flags: patient, encounter, appointment and user
ids are PHI or person identifiers and never appear there (threat T08). See
docs/primitives/launch-context.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator

from teams_ehr.errors import OAuthError
from teams_ehr.smart.scopes import parse_granted_scopes

__all__ = ["WIRE_NAMES", "FhirContextItem", "LaunchContext", "build_launch_context"]

WIRE_NAMES = {
    "fhir_context": "fhirContext",
    "login_department": "loginDepartment",
    "epic_dstu2_patient": "__epic.dstu2.patient",
}
"""The :class:`LaunchContext` attributes whose token-response name differs (attribute → wire)."""


def _wire(attribute: str, default: object) -> Any:
    """A field that parses from its wire name or its attribute name and dumps as the wire name."""
    wire = WIRE_NAMES[attribute]
    return Field(
        default=default, validation_alias=AliasChoices(wire, attribute), serialization_alias=wire
    )


# Token-response members that are credentials or transport metadata, never launch context.
_NOT_CONTEXT = frozenset(
    {"access_token", "refresh_token", "id_token", "token_type", "expires_in", "state", "scope"}
)
_REPR_FIELDS = ("scope", "need_patient_banner", "intent")


class FhirContextItem(BaseModel):
    """One ``fhirContext`` entry: ``reference``, ``canonical`` or ``identifier``, + type/role."""

    model_config = ConfigDict(frozen=True, extra="allow", hide_input_in_errors=True)

    reference: str | None = None
    canonical: str | None = None
    identifier: dict[str, Any] | None = None
    type: str | None = None
    role: str | None = None

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        yield "type", self.type
        yield "role", self.role


class LaunchContext(BaseModel):
    """Frozen launch context of one authorization; build it with :func:`build_launch_context`.

    Attributes use Python names; the token response's ``fhirContext``, ``loginDepartment`` and
    ``__epic.dstu2.patient`` are parsed into ``fhir_context``, ``login_department`` and
    ``epic_dstu2_patient`` (:data:`WIRE_NAMES`).
    """

    model_config = ConfigDict(frozen=True, extra="allow", hide_input_in_errors=True)

    patient: str | None = None
    encounter: str | None = None
    fhir_context: tuple[FhirContextItem, ...] = _wire("fhir_context", ())
    need_patient_banner: bool | None = None
    smart_style_url: str | None = None
    intent: str | None = None
    tenant: str | None = None
    scope: frozenset[str] = frozenset()
    fhir_user: str | None = None
    user_id: str | None = None
    appointment: str | None = None
    location: str | None = None
    login_department: str | None = _wire("login_department", None)
    epic_dstu2_patient: str | None = _wire("epic_dstu2_patient", None)

    @field_validator("need_patient_banner", mode="before")
    @classmethod
    def _coerce_banner(cls, value: object) -> object:
        # Epic sends "true"/"false" strings (fhir.epic.com/Documentation?docId=oauth2); anything
        # else is refused.
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in ("true", "false"):
                return lowered == "true"
            raise ValueError("need_patient_banner must be a boolean")
        return value

    @field_validator("scope", mode="before")
    @classmethod
    def _split_scope(cls, value: object) -> object:
        if value is None or isinstance(value, str):
            return parse_granted_scopes(value)
        return value

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name in _REPR_FIELDS:
            value = getattr(self, name)
            yield name, sorted(value) if isinstance(value, frozenset) else value
        yield "has_patient", self.patient is not None
        yield "has_user", self.user_id is not None


def build_launch_context(
    token_fields: Mapping[str, Any], id_token_claims: Mapping[str, Any] | None
) -> LaunchContext:
    """Build the context from the token response JSON and the *verified* id_token claims.

    Credentials (``access_token``…) are dropped; ``fhirUser``/``sub`` are taken only from
    ``id_token_claims`` — a ``fhirUser`` member of the token response itself is ignored, since
    nothing vouches for it. A malformed context (e.g. ``need_patient_banner: "maybe"``) raises
    :class:`~teams_ehr.errors.OAuthError` (``reason="token_response_invalid"``), without values.
    """
    fields: dict[str, Any] = {
        key: value
        for key, value in token_fields.items()
        if key not in _NOT_CONTEXT and key not in ("fhirUser", "fhir_user", "user_id", "sub")
    }
    fields["scope"] = token_fields.get("scope")
    if id_token_claims is not None:
        fhir_user = id_token_claims.get("fhirUser")
        subject = id_token_claims.get("sub")
        fields["fhir_user"] = fhir_user if isinstance(fhir_user, str) else None
        fields["user_id"] = subject if isinstance(subject, str) else None
    try:
        return LaunchContext.model_validate(fields)
    except ValidationError:
        raise OAuthError(
            "the token response's launch context is malformed",
            error="invalid_response",
            reason="token_response_invalid",
        ) from None
