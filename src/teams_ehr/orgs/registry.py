"""The organization registry over an :class:`~teams_ehr.store.protocol.OrganizationStore` (requirement C1).

It persists what :mod:`teams_ehr.orgs.approval` decides, keeps the issuer claims in step, and
writes an append-only audit entry for every change and every refused approval (threats T28,
T32: actor = Entra ``oid`` or ``"system"``, action, detail with ids, states, hashes and reason
codes — never tokens).

* Optimistic concurrency: every write passes the version it read; a concurrent change raises
  :class:`~teams_ehr.errors.StorageConflictError` and nothing is written.
* One active organization per canonical FHIR base (threat T27): approval claims the base in the
  store *before* saving the active state; a base held by another organization raises
  ``StorageConflictError`` (reason ``issuer_claimed``). Edits and suspensions release it.
* :meth:`OrganizationRegistry.resolve_issuer` implements
  :class:`~teams_ehr.smart.launch.IssuerResolver`: a binding is returned only when the
  organization's environment is *active* for exactly that base and its approved hash equals the
  current configuration hash, so an environment edited since approval cannot launch even if a
  stale claim survived in the store.
* Reads can be scoped to a tenant (``tenant_id=``): an admin page of tenant A never sees B.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import timedelta
from typing import Any

from teams_ehr._redact import get_logger
from teams_ehr._types import Clock
from teams_ehr.errors import (
    ConfigurationError,
    SecurityError,
    StateTransitionError,
    StorageConflictError,
    StorageError,
)
from teams_ehr.orgs.approval import (
    DEFAULT_MAX_PROOF_AGE,
    ApprovalEvent,
    ApprovalProof,
    apply_approval,
    apply_edit,
    apply_event,
    apply_org_edit,
)
from teams_ehr.orgs.models import (
    ENVIRONMENT_NAMES,
    EnvironmentConfig,
    EnvironmentName,
    Organization,
    config_hash,
)
from teams_ehr.smart.discovery import DiscoverySnapshot
from teams_ehr.store.protocol import AuditEntry, IssuerBinding, OrganizationStore
from teams_ehr.teams.identity import MicrosoftIdentity, normalize_guid

__all__ = ["SYSTEM_ACTOR", "OrganizationRegistry"]

SYSTEM_ACTOR = "system"
_log = get_logger(__name__)
_request_org: ContextVar[list[Organization] | None] = ContextVar(
    "teams_ehr_request_org", default=None
)


def _actor(actor: str) -> str:
    if actor == SYSTEM_ACTOR:
        return actor
    try:
        return normalize_guid(actor)
    except ValueError:
        raise ConfigurationError(
            "actor must be an Entra oid or 'system'", reason="bad_actor"
        ) from None


def _claims(org: Organization) -> dict[EnvironmentName, str]:
    """The canonical bases an organization should hold: those of its active environments."""
    claims: dict[EnvironmentName, str] = {}
    for name in ENVIRONMENT_NAMES:
        env = org.environment(name)
        if env is not None and env.state == "active":
            claims[name] = env.config.fhir_base
    return claims


class OrganizationRegistry:
    """Create, edit, approve and suspend organizations; resolve launch issuers (requirements C1, A1)."""

    def __init__(
        self,
        store: OrganizationStore,
        clock: Clock,
        *,
        max_proof_age: timedelta = DEFAULT_MAX_PROOF_AGE,
    ) -> None:
        self._store = store
        self._clock = clock
        self._max_proof_age = max_proof_age

    def __repr__(self) -> str:
        return "<OrganizationRegistry>"

    # -- reads -------------------------------------------------------------------------------

    async def get(self, org_id: str, *, tenant_id: str | None = None) -> Organization | None:
        """The organization, or ``None`` (also when it belongs to another ``tenant_id``).

        Inside :meth:`read_for_request`, the organization the request already read is returned
        to the task serving that request, without a second store read."""
        memo = _request_org.get()
        if memo and memo[0].org_id == org_id:
            org = memo[0]
        else:
            row = await self._store.get_organization(org_id)
            if row is None:
                return None
            org = Organization.from_row(row)
        if tenant_id is not None and org.tenant_id != _tenant(tenant_id):
            return None
        return org

    @staticmethod
    @contextmanager
    def read_for_request(org: Organization) -> Iterator[None]:
        """Serve :meth:`get` of ``org`` from this read until the block ends, to this task and
        the tasks it starts; a task that outlives the block reads the store again. A request
        decides on one consistent read; a suspension committed before the next request stops
        that one."""
        memo = [org]  # emptied on exit: copies of the context in longer-lived tasks see nothing
        token = _request_org.set(memo)
        try:
            yield
        finally:
            memo.clear()
            _request_org.reset(token)

    async def list(self, *, tenant_id: str | None = None) -> list[Organization]:
        orgs = [Organization.from_row(row) for row in await self._store.list_organizations()]
        if tenant_id is None:
            return orgs
        wanted = _tenant(tenant_id)
        return [org for org in orgs if org.tenant_id == wanted]

    async def audit_log(self, org_id: str) -> Sequence[AuditEntry]:
        return await self._store.list_audit(org_id)

    async def resolve_issuer(
        self, canonical_base: str, *, known: Organization | None = None
    ) -> IssuerBinding | None:
        """:class:`~teams_ehr.smart.launch.IssuerResolver`: only approved, unedited, active.

        ``known``: the organization as the caller read it during this request; used instead of a
        second read when the binding names it (any other organization is read)."""
        binding = await self._store.resolve_issuer(canonical_base)
        if binding is None or binding.canonical_base != canonical_base:
            return None
        if known is not None and known.org_id == binding.org_id:
            org: Organization | None = known
        else:
            org = await self.get(binding.org_id)
        env = None if org is None else org.environment(binding.environment)
        if org is None or env is None or env.state != "active":
            return None
        if env.config.fhir_base != canonical_base:
            return None
        if env.approved_config_hash != config_hash(org, binding.environment):
            _log.warning("issuer claim of org %s is stale (edited since approval)", org.org_id)
            return None
        return binding

    async def approved_snapshot(
        self, org_id: str, environment: EnvironmentName
    ) -> DiscoverySnapshot | None:
        """The discovery snapshot taken at approval, for launch-time comparison (requirement A2, threat T03)."""
        return self.approved_snapshot_of(await self.get(org_id), environment)

    @staticmethod
    def approved_snapshot_of(
        org: Organization | None, environment: EnvironmentName
    ) -> DiscoverySnapshot | None:
        """:meth:`approved_snapshot` of an organization already read in this request."""
        env = None if org is None else org.environment(environment)
        if org is None or env is None or env.state != "active":
            return None
        if env.approved_config_hash != config_hash(org, environment):
            return None
        return env.approved_snapshot

    # -- writes ------------------------------------------------------------------------------

    async def create(self, org: Organization, *, actor: str) -> Organization:
        """Store a new organization; every environment must be a fresh draft.

        The creator is recorded as each environment's editor: the self-approval rule
        (:func:`~teams_ehr.orgs.approval.apply_approval`) must see who configured it.
        """
        who = _actor(actor)
        created: dict[str, Any] = {}
        for name in ENVIRONMENT_NAMES:
            env = org.environment(name)
            if env is not None and env.state != "draft":
                raise StateTransitionError("a new organization's environments start as drafts")
            if env is not None:
                created[name] = env.model_copy(update={"edited_by": who})
        org = org.model_copy(update=created)
        version = await self._store.put_organization(
            org.org_id, org.document(), expected_version=None
        )
        await self._audit(org.org_id, who, "created", environments=_states(org))
        return org.model_copy(update={"version": version})

    async def update(
        self,
        org_id: str,
        *,
        expected_version: int,
        actor: str,
        display_name: str | None = None,
        approver_oid: str | None = None,
        allow_self_approval: bool | None = None,
        environments: Mapping[EnvironmentName, EnvironmentConfig] | None = None,
    ) -> Organization:
        """Edit fields and environment configurations; any approval-relevant change sends the
        affected environments back for approval and releases their issuer claims."""
        who = _actor(actor)
        org = await self._load(org_id, expected_version)
        updated = apply_org_edit(
            org,
            actor=who,
            display_name=display_name,
            approver_oid=approver_oid,
            allow_self_approval=allow_self_approval,
        )
        for name, config in (environments or {}).items():
            updated = apply_edit(updated, name, config, actor=who)
        if updated == org:
            return org
        saved = await self._save(org, updated)
        changed = [n for n in ENVIRONMENT_NAMES if org.environment(n) != updated.environment(n)]
        await self._audit(org_id, who, "edited", environments=_states(updated), changed=changed)
        return saved

    async def submit_for_approval(
        self, org_id: str, environment: EnvironmentName, *, actor: str
    ) -> Organization:
        return await self._event(org_id, environment, "submit", actor, "submitted")

    async def withdraw(
        self, org_id: str, environment: EnvironmentName, *, actor: str
    ) -> Organization:
        return await self._event(org_id, environment, "withdraw", actor, "withdrawn")

    async def suspend(
        self, org_id: str, environment: EnvironmentName, *, actor: str, reason: str = "manual"
    ) -> Organization:
        """Suspend (from any state but suspended); launches stop at once."""
        return await self._event(org_id, environment, "suspend", actor, "suspended", reason=reason)

    async def resume(
        self, org_id: str, environment: EnvironmentName, *, actor: str
    ) -> Organization:
        """Back to ``pending_approval``: a suspended environment needs a new approval."""
        return await self._event(org_id, environment, "resume", actor, "resumed")

    async def approve(
        self,
        org_id: str,
        environment: EnvironmentName,
        approver: MicrosoftIdentity,
        proof: ApprovalProof | None,
        *,
        config_hash: str,
    ) -> Organization:
        """Approve with the approver's Microsoft identity, the EHR sign-in proof and the hash of
        the configuration the approver reviewed (:func:`~teams_ehr.orgs.models.config_hash`)."""
        org = await self._load(org_id, None)
        actor = approver.object_id if isinstance(approver, MicrosoftIdentity) else "unknown"
        try:
            approved = apply_approval(
                org,
                environment,
                approver,
                proof,
                expected_config_hash=config_hash,
                now=self._clock(),
                max_proof_age=self._max_proof_age,
            )
        except (SecurityError, StateTransitionError) as exc:
            await self._refused(org_id, actor, environment, exc.reason)
            raise
        env = approved.environment(environment)
        if env is None or env.approved_config_hash is None:  # pragma: no cover - invariant
            raise StateTransitionError("approval produced no approved environment")
        try:
            saved = await self._save(org, approved)
        except StorageConflictError as exc:
            await self._refused(org_id, actor, environment, exc.reason)
            raise
        await self._audit(
            org_id,
            actor,
            "approved",
            environment=environment,
            fhir_base=env.config.fhir_base,
            config_hash=env.approved_config_hash,
        )
        return saved

    # -- internals ---------------------------------------------------------------------------

    async def _load(self, org_id: str, expected_version: int | None) -> Organization:
        org = await self.get(org_id)
        if org is None:
            raise ConfigurationError("unknown organization", reason="unknown_organization")
        if expected_version is not None and org.version != expected_version:
            raise StorageConflictError("organization version mismatch", reason="version_mismatch")
        return org

    async def _event(
        self,
        org_id: str,
        environment: EnvironmentName,
        event: ApprovalEvent,
        actor: str,
        action: str,
        **detail: Any,
    ) -> Organization:
        who = _actor(actor)
        org = await self._load(org_id, None)
        updated = apply_event(org, environment, event)
        saved = await self._save(org, updated)
        env = updated.environment(environment)
        state = None if env is None else env.state
        await self._audit(org_id, who, action, environment=environment, state=state, **detail)
        return saved

    async def _save(self, before: Organization, after: Organization) -> Organization:
        """Claim new issuers, write at ``before.version``, then release dropped issuers.

        A claim made here is undone if the write fails; a release that fails after the write
        leaves a stale claim that :meth:`resolve_issuer` ignores (hash and state checked).
        """
        old, new = _claims(before), _claims(after)
        claimed: list[str] = []
        try:
            for name, base in new.items():
                if old.get(name) != base:
                    await self._store.claim_issuer(IssuerBinding(base, after.org_id, name))
                    claimed.append(base)
            version = await self._store.put_organization(
                after.org_id, after.document(), expected_version=before.version
            )
        except StorageError:
            for base in claimed:
                await self._store.release_issuer(base, after.org_id)
            raise
        for name, base in old.items():
            if new.get(name) != base:
                await self._store.release_issuer(base, after.org_id)
        return after.model_copy(update={"version": version})

    async def _refused(
        self, org_id: str, actor: str, environment: EnvironmentName, reason: str
    ) -> None:
        """A refused approval: an audit entry and one ``security_event`` log record (threat T32)."""
        _log.warning(
            "organization %s: approval refused: %s",
            org_id,
            reason,
            extra={"security_event": reason},
        )
        await self._store.append_audit(
            org_id,
            at=self._clock(),
            actor=actor,
            action="approval_refused",
            detail={"environment": environment, "reason": reason},
        )

    async def _audit(self, org_id: str, actor: str, action: str, **detail: Any) -> None:
        await self._store.append_audit(
            org_id, at=self._clock(), actor=actor, action=action, detail=detail
        )
        _log.info("organization %s: %s", org_id, action)


def _tenant(tenant_id: str) -> str:
    try:
        return normalize_guid(tenant_id)
    except ValueError:
        raise ConfigurationError("tenant_id must be a GUID", reason="bad_tenant") from None


def _states(org: Organization) -> dict[str, str | None]:
    return {
        name: None if (env := org.environment(name)) is None else env.state
        for name in ENVIRONMENT_NAMES
    }
