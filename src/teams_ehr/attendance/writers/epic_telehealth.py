"""The Epic telehealth strategy: ``SetExternalConnectionStatus`` per connect or disconnect.

Epic shows a video visit's connection status on the provider's schedule through its
Telehealth Context-Aware Linking web service (https://open.epic.com/). What is publicly known,
and therefore what this adapter assumes (every item is configurable in
:class:`TelehealthStatusOptions`):

* **Path** ``/api/epic/2018/Telehealth/ContextLinking/SetExternalConnectionStatus`` relative to
  the organization's Interconnect base (public sample code; the ``2019`` revision is reported
  too). The Interconnect base is derived from the FHIR base by removing ``/api/FHIR/R4``
  unless ``interconnect_base`` is set.
* **Parameters** in the query string: ``ConferenceID`` (the visit's ``sessionId=%CSN%``
  context token, :attr:`FhirTarget.conference_id`), ``ExternalID``, ``ExternalIDType``,
  ``VendorName``, ``ConnectionStatus``. ⚠ The status value codes and the ``ExternalIDType``
  values are not documented publicly: the defaults (``connected → 1``, ``disconnected → 2``)
  mirror the one public sample and must be confirmed per organization. ``ExternalID`` is our
  opaque participant key, never a name.
* **Method** ``POST`` by default (the public sample uses ``GET``; both are accepted here).
* **Authentication**: the organization's OAuth 2.0 backend token (Epic accepts OAuth for web
  services), or HTTP Basic ``emp$<user>`` (Epic's documented non-OAuth scheme), plus the
  ``Epic-Client-ID`` header Epic requires on this call since February 2019.

Setting a status is naturally idempotent, so retries never duplicate; the status is
last-write-wins, so the durable note or audit record remains the legal record.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr

from teams_ehr._types import Clock, Flow, utc_now
from teams_ehr.attendance.events import AttendanceKind, Role
from teams_ehr.attendance.writers.base import FhirWriter
from teams_ehr.attendance.writers.fhir_http import fhir_error_for
from teams_ehr.attendance.writers.models import AttendanceDelivery, WriteOutcome, WriterStrategy
from teams_ehr.errors import ConfigurationError, UsageError
from teams_ehr.sansio import with_max_bytes

__all__ = [
    "DEFAULT_STATUS_PATH",
    "EpicTelehealthStatusWriter",
    "TelehealthStatusOptions",
    "interconnect_base",
]

DEFAULT_STATUS_PATH = "/api/epic/2018/Telehealth/ContextLinking/SetExternalConnectionStatus"
_FHIR_SUFFIXES = ("/api/FHIR/R4", "/api/FHIR/STU3", "/api/FHIR/DSTU2")


class TelehealthStatusOptions(BaseModel):
    """Per-organization settings for ``SetExternalConnectionStatus`` (see the module docstring).

    ``status_codes`` maps the kinds to send to Epic's status values (other kinds are
    ``skipped``); ``external_id_types`` maps roles to ``ExternalIDType`` values."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)
    path: str = DEFAULT_STATUS_PATH
    method: Literal["POST", "GET"] = "POST"
    interconnect_base: str | None = None
    vendor_name: str = "Microsoft Teams"
    status_codes: dict[AttendanceKind, str] = {"connected": "1", "disconnected": "2"}
    external_id_types: dict[Role, str] = {"patient": "1", "provider": "2", "other": "3"}
    epic_client_id: str | None = None
    auth: Literal["bearer", "basic"] = "bearer"
    basic_user: str | None = None
    basic_password: SecretStr | None = None


def interconnect_base(fhir_base: str) -> str:
    """``https://host/interconnect-x/api/FHIR/R4`` → ``https://host/interconnect-x``."""
    base = fhir_base.rstrip("/")
    for suffix in _FHIR_SUFFIXES:
        if base.lower().endswith(suffix.lower()):
            return base[: -len(suffix)]
    return base


@dataclass(frozen=True)
class EpicTelehealthStatusWriter(FhirWriter):
    """Per-fact strategy: one status call per fact of a kind in ``options.status_codes``."""

    options: TelehealthStatusOptions = field(default_factory=TelehealthStatusOptions)
    clock: Clock = utc_now
    strategy: ClassVar[WriterStrategy] = WriterStrategy.EPIC_TELEHEALTH_STATUS

    def accepts(self, kind: str) -> bool:
        return kind in self.options.status_codes

    def _authorization(self, access_token: SecretStr) -> str:
        opts = self.options
        if opts.auth == "bearer":
            return f"Bearer {access_token.get_secret_value()}"
        if not opts.basic_user or opts.basic_password is None:
            raise ConfigurationError("basic auth needs a user and password", reason="missing_auth")
        raw = f"emp${opts.basic_user}:{opts.basic_password.get_secret_value()}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def build_request(
        self, delivery: AttendanceDelivery, *, fhir_base: str, access_token: SecretStr
    ) -> httpx.Request:
        """The status request for the delivery's (single) fact."""
        opts = self.options
        fact = delivery.facts[0]
        conference = delivery.target.conference_id
        if not conference:
            raise ConfigurationError("a conference id is needed", reason="missing_target")
        status = opts.status_codes.get(fact.kind)
        if status is None:
            raise UsageError(
                f"no telehealth status is configured for {fact.kind!r} facts", reason="bad_fact"
            )
        params = {
            "ConferenceID": conference,
            "ExternalID": fact.participant_key,
            "ExternalIDType": opts.external_id_types.get(fact.role, "3"),
            "VendorName": opts.vendor_name,
            "ConnectionStatus": status,
        }
        headers = {"Accept": "application/json", "Authorization": self._authorization(access_token)}
        if opts.epic_client_id:
            headers["Epic-Client-ID"] = opts.epic_client_id
        base = (opts.interconnect_base or interconnect_base(fhir_base)).rstrip("/")
        request = httpx.Request(opts.method, base + opts.path, params=params, headers=headers)
        return with_max_bytes(request, 65_536)

    def _flow(
        self, delivery: AttendanceDelivery, *, fhir_base: str, access_token: SecretStr
    ) -> Flow[WriteOutcome]:
        request = self.build_request(delivery, fhir_base=fhir_base, access_token=access_token)
        response = yield request
        if response.is_success:
            return WriteOutcome("sent")
        raise fhir_error_for(response, "telehealth status", self.clock())
