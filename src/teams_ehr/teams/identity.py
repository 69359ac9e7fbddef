"""Clinician identity binding: EHR user ↔ Microsoft identity (requirement B6, threat T14).

The only person-level data teams-ehr keeps is one row per clinician::

    (org_id, EHR issuer, EHR user id)  →  (Entra tenant id ``tid``, Entra object id ``oid``)

Rules, each refused with a typed error (requirement B6; ASVS 10.3.3 "identify users by
non-reassignable claims"; Microsoft identity platform: ``oid`` + ``tid`` identify a user across
applications):

* binding is allowed only while a live, validated EHR launch session exists (the caller says so
  with ``launch_session_valid``): otherwise :class:`IdentityBindingError` ``no_launch_session``,
  which defeats account-linking CSRF (an attacker linking *their* Microsoft account to a victim's
  EHR user);
* the Microsoft identity's tenant must be the organization's tenant: otherwise
  :class:`CrossTenantDeniedError`;
* an EHR user that is already bound stays bound: re-binding needs an explicit :meth:`unlink`
  (``already_bound``), so a second sign-in can never silently move a clinician's meetings to
  another organizer.

No name, UPN or e-mail is accepted here: :class:`MicrosoftIdentity` has no field for them.
"""

from __future__ import annotations

import re

import anyio.lowlevel
from pydantic import BaseModel, ConfigDict, field_validator

from teams_ehr._redact import get_logger
from teams_ehr._types import Clock
from teams_ehr.errors import (
    CrossTenantDeniedError,
    IdentityBindingError,
    StorageConflictError,
    UsageError,
)
from teams_ehr.store.protocol import IdentityLink, IdentityMapStore

__all__ = ["IdentityBinder", "MemoryIdentityMap", "MicrosoftIdentity", "normalize_guid"]

_log = get_logger(__name__)

_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_MAX_KEY_LENGTH = 2048


def normalize_guid(value: str) -> str:
    """Entra ``tid``/``oid`` values are GUIDs; compare them lower-case."""
    lowered = value.strip().lower()
    if not _GUID.match(lowered):
        raise ValueError("not a GUID")
    return lowered


class MicrosoftIdentity(BaseModel):
    """A verified Microsoft Entra user: tenant id and object id, nothing else."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    tenant_id: str
    object_id: str

    @field_validator("tenant_id", "object_id")
    @classmethod
    def _guid(cls, value: str) -> str:
        return normalize_guid(value)


def _check_key(org_id: str, ehr_issuer: str, ehr_user_id: str) -> None:
    for value in (org_id, ehr_issuer, ehr_user_id):
        if not value or len(value) > _MAX_KEY_LENGTH:
            raise UsageError("identity key parts must be non-empty and bounded", reason="bad_key")


class IdentityBinder:
    """Binding rules of requirement B6 over an :class:`~teams_ehr.store.protocol.IdentityMapStore`."""

    def __init__(self, store: IdentityMapStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def lookup(self, org_id: str, ehr_issuer: str, ehr_user_id: str) -> IdentityLink | None:
        """The bound Microsoft identity of an EHR user in an organization, if any."""
        _check_key(org_id, ehr_issuer, ehr_user_id)
        return await self._store.get_identity(org_id, ehr_issuer, ehr_user_id)

    async def bind(
        self,
        org_id: str,
        ehr_issuer: str,
        ehr_user_id: str,
        identity: MicrosoftIdentity,
        *,
        organization_tenant_id: str,
        launch_session_valid: bool,
    ) -> IdentityLink:
        """Bind once; see the module docstring for every refusal."""
        _check_key(org_id, ehr_issuer, ehr_user_id)
        if not launch_session_valid:
            raise IdentityBindingError(
                "binding needs a live, validated EHR launch session", reason="no_launch_session"
            )
        try:
            expected_tenant = normalize_guid(organization_tenant_id)
        except ValueError:
            raise UsageError(
                "organization tenant id is not a GUID", reason="bad_tenant_id"
            ) from None
        if identity.tenant_id != expected_tenant:
            _log.warning("identity binding refused: tenant differs (org %s)", org_id)
            raise CrossTenantDeniedError("the Microsoft account belongs to another tenant")
        existing = await self._store.get_identity(org_id, ehr_issuer, ehr_user_id)
        if existing is not None:
            raise IdentityBindingError(
                "this EHR user is already bound; unlink first", reason="already_bound"
            )
        link = IdentityLink(
            org_id=org_id,
            ehr_issuer=ehr_issuer,
            ehr_user_id=ehr_user_id,
            tenant_id=identity.tenant_id,
            object_id=identity.object_id,
            linked_at=self._clock(),
        )
        try:
            await self._store.bind_identity(link)
        except StorageConflictError:
            # A concurrent binding won the race: same outcome as binding twice.
            raise IdentityBindingError(
                "this EHR user is already bound; unlink first", reason="already_bound"
            ) from None
        _log.info("identity bound (org %s)", org_id)
        return link

    async def unlink(self, org_id: str, ehr_issuer: str, ehr_user_id: str) -> bool:
        """Remove a binding (the explicit step before re-binding); ``False`` if none existed."""
        _check_key(org_id, ehr_issuer, ehr_user_id)
        removed = await self._store.unlink_identity(org_id, ehr_issuer, ehr_user_id)
        if removed:
            _log.info("identity unlinked (org %s)", org_id)
        return removed


class MemoryIdentityMap:
    """An in-process :class:`IdentityMapStore` (tests, the sandbox demo).

    Keyed by ``(org_id, ehr_issuer, ehr_user_id)`` like the SQL stores; a duplicate bind raises
    :class:`StorageConflictError`. :attr:`rows` exposes the stored records for inspection.
    """

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str, str], IdentityLink] = {}

    @property
    def rows(self) -> tuple[IdentityLink, ...]:
        return tuple(self._rows.values())

    async def get_identity(
        self, org_id: str, ehr_issuer: str, ehr_user_id: str
    ) -> IdentityLink | None:
        await anyio.lowlevel.checkpoint()
        return self._rows.get((org_id, ehr_issuer, ehr_user_id))

    async def bind_identity(self, link: IdentityLink) -> None:
        if link.linked_at.tzinfo is None:
            raise UsageError("linked_at must be an aware datetime", reason="naive_datetime")
        key = (link.org_id, link.ehr_issuer, link.ehr_user_id)
        await anyio.lowlevel.checkpoint()
        # No await between the check and the write: atomic on one event loop.
        if key in self._rows:
            raise StorageConflictError("identity already bound")
        self._rows[key] = link

    async def unlink_identity(self, org_id: str, ehr_issuer: str, ehr_user_id: str) -> bool:
        await anyio.lowlevel.checkpoint()
        return self._rows.pop((org_id, ehr_issuer, ehr_user_id), None) is not None
