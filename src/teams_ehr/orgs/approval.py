"""The approval state machine: one table, and the only code that changes an environment's state.

Requirement C1 and threat T28 (ASVS 2.3.1 no step skipping, 2.3.5 multi-user approval). Every
transition is a row of :data:`TRANSITIONS`; anything else raises
:class:`~teams_ehr.errors.StateTransitionError` and changes nothing (h11's rule: state machines
as data, one module owns them)::

    draft ──submit──▶ pending_approval ──approve──▶ active
      ▲                  │     ▲                      │
      └────withdraw──────┘     └──────────edit────────┘      any ──suspend──▶ suspended
                                                              suspended ──resume──▶ pending_approval

``edit`` keeps a draft a draft, keeps a pending request pending (the approver approves the new
hash), and sends an active environment back to ``pending_approval``; a suspended environment
stays suspended. Leaving ``active`` always clears the approval record, so ``resume`` needs a new
approval with a fresh EHR sign-in.

Approval (:func:`apply_approval`) needs all of, in this order:

1. the environment is ``pending_approval`` (no skipping from draft, no approving twice);
2. the designated approver's Microsoft sign-in: same Entra tenant
   (:class:`~teams_ehr.errors.CrossTenantDeniedError`) and the configured ``oid``
   (:class:`~teams_ehr.errors.ApprovalRequiredError` ``not_designated_approver``); when the
   organization forbids self-approval, someone other than the last editor;
3. an :class:`ApprovalProof` of a SMART sign-in against *exactly* the environment's canonical
   FHIR base, recent (``max_proof_age``), whose ``id_token`` issuer is the discovered issuer
   (threat T28: "aud == iss, id_token.iss == snapshot.issuer"). The proof holds no tokens: the Teams
   EHR connector docs say the EHR sign-in "is only used to validate your FHIR base URL", so the flow
   that produced it has already discarded them;
4. the configuration hash the approver reviewed equals the current hash (no approving a
   configuration that changed underneath).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

from teams_ehr.errors import (
    ApprovalRequiredError,
    ConfigurationError,
    CrossTenantDeniedError,
    StateTransitionError,
)
from teams_ehr.orgs.models import (
    ENVIRONMENT_NAMES,
    ApprovalState,
    Environment,
    EnvironmentConfig,
    EnvironmentName,
    Organization,
    config_hash,
)
from teams_ehr.smart.discovery import DiscoverySnapshot
from teams_ehr.teams.identity import MicrosoftIdentity

__all__ = [
    "DEFAULT_MAX_PROOF_AGE",
    "TRANSITIONS",
    "ApprovalEvent",
    "ApprovalProof",
    "apply_approval",
    "apply_edit",
    "apply_event",
    "apply_org_edit",
    "next_state",
]

ApprovalEvent = Literal["submit", "approve", "edit", "suspend", "resume", "withdraw"]

TRANSITIONS: Mapping[tuple[ApprovalState, ApprovalEvent], ApprovalState] = MappingProxyType(
    {
        ("draft", "submit"): "pending_approval",
        ("draft", "edit"): "draft",
        ("draft", "suspend"): "suspended",
        ("pending_approval", "approve"): "active",
        ("pending_approval", "edit"): "pending_approval",
        ("pending_approval", "withdraw"): "draft",
        ("pending_approval", "suspend"): "suspended",
        ("active", "edit"): "pending_approval",
        ("active", "suspend"): "suspended",
        ("suspended", "edit"): "suspended",
        ("suspended", "resume"): "pending_approval",
    }
)

DEFAULT_MAX_PROOF_AGE = timedelta(minutes=15)
_PROOF_SKEW = timedelta(seconds=60)


class ApprovalProof(BaseModel):
    """Evidence that the approver just signed in to the EHR at ``canonical_base``.

    Built by the approval sign-in flow (a SMART standalone or EHR launch with ``aud`` = that
    base) from its discovery snapshot and the *verified* ``id_token``'s ``iss`` claim. It has no
    field for tokens or codes, and ``extra="forbid"`` refuses any.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    canonical_base: str
    snapshot: DiscoverySnapshot
    id_token_issuer: str | None
    signed_in_at: datetime

    @field_validator("signed_in_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("signed_in_at must be timezone-aware")
        return value


def next_state(state: ApprovalState, event: ApprovalEvent) -> ApprovalState:
    """The table lookup; :class:`StateTransitionError` for a step the table does not have."""
    target = TRANSITIONS.get((state, event))
    if target is None:
        raise StateTransitionError(f"cannot {event} an environment that is {state}")
    return target


def _environment(org: Organization, name: EnvironmentName) -> Environment:
    env = org.environment(name)
    if env is None:
        raise ConfigurationError("the environment is not configured", reason="unknown_environment")
    return env


def _with(org: Organization, name: EnvironmentName, env: Environment) -> Organization:
    # Re-validate the whole organization so every invariant holds after each step.
    return Organization.model_validate(
        {**org.model_dump(exclude={str(name)}), name: env, "version": org.version}
    )


_APPROVAL_FIELDS = {"approved_config_hash", "approved_snapshot", "approved_by", "approved_at"}


def _moved(env: Environment, state: ApprovalState, **changes: Any) -> Environment:
    """``env`` in ``state``; the approval record is dropped unless ``changes`` sets a new one."""
    fields = env.model_dump(exclude=_APPROVAL_FIELDS)
    return Environment.model_validate({**fields, "state": state, **changes})


def apply_event(org: Organization, name: EnvironmentName, event: ApprovalEvent) -> Organization:
    """``submit``, ``withdraw``, ``suspend`` or ``resume`` one environment."""
    if event in ("approve", "edit"):
        raise ConfigurationError(
            "approve and edit have their own functions", reason="use_apply_approval_or_edit"
        )
    env = _environment(org, name)
    return _with(org, name, _moved(env, next_state(env.state, event)))


def apply_edit(
    org: Organization, name: EnvironmentName, config: EnvironmentConfig, *, actor: str
) -> Organization:
    """Set an environment's configuration; a new environment starts as a draft.

    An unchanged configuration is not an edit (same organization back).
    """
    env = org.environment(name)
    if env is None:
        return _with(org, name, Environment(config=config, edited_by=actor))
    if env.config == config:
        return org
    return _with(
        org, name, _moved(env, next_state(env.state, "edit"), config=config, edited_by=actor)
    )


def apply_org_edit(
    org: Organization,
    *,
    actor: str,
    display_name: str | None = None,
    approver_oid: str | None = None,
    allow_self_approval: bool | None = None,
) -> Organization:
    """Change organization-level fields; a new approver or policy is an edit of every
    environment (both are in the configuration hash)."""
    changes: dict[str, Any] = {
        key: value
        for key, value in (
            ("display_name", display_name),
            ("approver_oid", approver_oid),
            ("allow_self_approval", allow_self_approval),
        )
        if value is not None
    }
    updated = Organization.model_validate({**org.model_dump(), **changes, "version": org.version})
    hashed = ("approver_oid", "allow_self_approval")
    if all(getattr(updated, key) == getattr(org, key) for key in hashed):
        return updated
    for name in ENVIRONMENT_NAMES:
        env = updated.environment(name)
        if env is not None:
            moved = _moved(env, next_state(env.state, "edit"), edited_by=actor)
            updated = _with(updated, name, moved)
    return updated


def apply_approval(
    org: Organization,
    name: EnvironmentName,
    approver: MicrosoftIdentity,
    proof: ApprovalProof | None,
    *,
    expected_config_hash: str,
    now: datetime,
    max_proof_age: timedelta = DEFAULT_MAX_PROOF_AGE,
) -> Organization:
    """Approve one environment, or raise (see the module docstring for the rules and order)."""
    env = _environment(org, name)
    target = next_state(env.state, "approve")
    if not isinstance(approver, MicrosoftIdentity):
        raise ApprovalRequiredError("a Microsoft sign-in is required", reason="no_approver")
    if approver.tenant_id != org.tenant_id:
        raise CrossTenantDeniedError(
            "the approver belongs to another tenant", reason="approver_other_tenant"
        )
    if approver.object_id != org.approver_oid:
        raise ApprovalRequiredError(
            "only the designated approver can approve", reason="not_designated_approver"
        )
    if not org.allow_self_approval and env.edited_by == approver.object_id:
        raise ApprovalRequiredError("self-approval is not allowed", reason="self_approval")
    if not isinstance(proof, ApprovalProof):
        raise ApprovalRequiredError(
            "an EHR sign-in against the FHIR base is required", reason="smart_proof_required"
        )
    if proof.canonical_base != env.config.fhir_base:
        raise ApprovalRequiredError(
            "the EHR sign-in was against another FHIR base", reason="proof_other_base"
        )
    if not (now - max_proof_age <= proof.signed_in_at <= now + _PROOF_SKEW):
        raise ApprovalRequiredError("the EHR sign-in is not recent", reason="stale_proof")
    issuer = proof.snapshot.issuer
    if issuer is not None and proof.id_token_issuer != issuer:
        raise ApprovalRequiredError(
            "the EHR sign-in came from another issuer", reason="proof_issuer_mismatch"
        )
    current = config_hash(org, name)
    if expected_config_hash != current:
        raise ApprovalRequiredError(
            "the configuration changed since it was reviewed", reason="stale_config_hash"
        )
    approved = _moved(
        env,
        target,
        approved_config_hash=current,
        approved_snapshot=proof.snapshot,
        approved_by=approver.object_id,
        approved_at=now,
    )
    return _with(org, name, approved)
