"""The writer protocol, and the base that turns a strategy's sans-IO flow into ``write`` calls.

Every strategy is a sans-IO flow (yields :class:`httpx.Request`, receives
:class:`httpx.Response`; the shape of httpx's ``Auth.auth_flow``) built by ``write_flow``. The
outbox worker runs that flow; integrators call :meth:`FhirWriter.write` (``httpx.AsyncClient``,
asyncio or trio) or :meth:`FhirWriter.write_sync` (``httpx.Client``), which drive the same flow.
Two checks live here, once for every strategy: a delivery of another strategy is refused with
``UsageError(reason="writer_strategy_mismatch")``, and a fact of a kind the strategy does not
record yields ``WriteOutcome("skipped")`` without a request. See
``docs/reference/attendance-writer.md``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import ClassVar, Protocol, runtime_checkable

import httpx
from pydantic import SecretStr

from teams_ehr._concurrency import KeyedLocks
from teams_ehr._types import Flow
from teams_ehr.attendance.fhir_resources import FhirTarget
from teams_ehr.attendance.reports import AttendanceFactLike
from teams_ehr.attendance.writers.models import AttendanceDelivery, WriteOutcome, WriterStrategy
from teams_ehr.errors import UsageError
from teams_ehr.sansio import run_async, run_sync

__all__ = ["WRITE_LOCKS", "AttendanceWriter", "FhirWriter", "write_lock_name"]

WRITE_LOCKS = KeyedLocks()
"""Process-wide locks for search-then-create, shared by :meth:`FhirWriter.write` and the outbox."""


def write_lock_name(fhir_base: str, lock_key: str) -> str:
    """The :data:`WRITE_LOCKS` key of a writer's ``lock_key`` on one FHIR server."""
    return f"{fhir_base.rstrip('/')}|{lock_key}"


@runtime_checkable
class AttendanceWriter(Protocol):
    """A write-back strategy, as the outbox sees it. ``lock_key`` names what must not be written
    concurrently in one process (search-then-create), or ``None``."""

    @property
    def strategy(self) -> WriterStrategy: ...

    def accepts(self, kind: str) -> bool: ...

    def lock_key(self, delivery: AttendanceDelivery) -> str | None: ...

    def write_flow(
        self, delivery: AttendanceDelivery, *, fhir_base: str, access_token: SecretStr
    ) -> Flow[WriteOutcome]: ...


def _skipped() -> Flow[WriteOutcome]:
    return WriteOutcome("skipped")
    yield  # pragma: no cover - makes this function a generator


def _token(access_token: SecretStr | str) -> SecretStr:
    return access_token if isinstance(access_token, SecretStr) else SecretStr(access_token)


class FhirWriter(ABC):
    """What every strategy shares: the checks, ``write`` and ``write_sync``.

    A strategy sets :attr:`strategy`, implements :meth:`accepts` and ``_flow`` (the write of one
    checked delivery) and, where it searches before creating, :meth:`lock_key`."""

    strategy: ClassVar[WriterStrategy]

    @abstractmethod
    def accepts(self, kind: str) -> bool:
        """Whether this strategy records facts of ``kind``."""

    def lock_key(self, delivery: AttendanceDelivery) -> str | None:
        """What must not be written concurrently in one process, or ``None``."""
        return None

    @abstractmethod
    def _flow(
        self, delivery: AttendanceDelivery, *, fhir_base: str, access_token: SecretStr
    ) -> Flow[WriteOutcome]:
        """The write of a delivery already checked for strategy and kind."""

    def write_flow(
        self, delivery: AttendanceDelivery, *, fhir_base: str, access_token: SecretStr
    ) -> Flow[WriteOutcome]:
        """The sans-IO flow writing ``delivery`` (run it with the outbox, or use :meth:`write`).

        Raises :class:`~teams_ehr.errors.UsageError` (``writer_strategy_mismatch``) when the
        delivery was made for another strategy."""
        if delivery.strategy is not self.strategy:
            raise UsageError(
                f"a {delivery.strategy.value} delivery cannot be written by the "
                f"{self.strategy.value} writer; route it to a writer of its strategy",
                reason="writer_strategy_mismatch",
            )
        if not self.strategy.per_visit and not self.accepts(delivery.facts[0].kind):
            return _skipped()
        return self._flow(delivery, fhir_base=fhir_base, access_token=access_token)

    def delivery(
        self,
        fact: AttendanceFactLike | Sequence[AttendanceFactLike],
        *,
        target: FhirTarget,
    ) -> AttendanceDelivery:
        """The delivery this writer makes of ``fact`` (one fact, or a visit's facts for the
        per-visit note); ``UsageError`` (``bad_fact``) for an unknown kind or role."""
        facts = list(fact) if isinstance(fact, Sequence) else [fact]
        return AttendanceDelivery.of(self.strategy, facts, target=target)

    async def write(
        self,
        fact: AttendanceFactLike | Sequence[AttendanceFactLike],
        *,
        target: FhirTarget,
        http: httpx.AsyncClient,
        fhir_base: str,
        access_token: SecretStr | str,
    ) -> WriteOutcome:
        """Write ``fact`` to the FHIR server at ``fhir_base`` (asyncio or trio).

        Search-then-create writes are serialized per resource in this process (the same locks as
        the outbox). Errors: :class:`~teams_ehr.errors.UsageError` for misuse,
        :class:`~teams_ehr.errors.FhirError` / ``FhirUnavailableError`` for the server's answer,
        :class:`~teams_ehr.errors.TransportError` for the network."""
        delivery = self.delivery(fact, target=target)
        token = _token(access_token)
        key = self.lock_key(delivery)
        async with AsyncExitStack() as stack:
            if key is not None:
                await stack.enter_async_context(WRITE_LOCKS.hold(write_lock_name(fhir_base, key)))
            flow = self.write_flow(delivery, fhir_base=fhir_base, access_token=token)
            return await run_async(flow, http)
        raise AssertionError("unreachable")  # pragma: no cover

    def write_sync(
        self,
        fact: AttendanceFactLike | Sequence[AttendanceFactLike],
        *,
        target: FhirTarget,
        http: httpx.Client,
        fhir_base: str,
        access_token: SecretStr | str,
    ) -> WriteOutcome:
        """:meth:`write` on a synchronous ``httpx.Client``: the same flow, the same outcomes and
        errors. It takes no lock: keep search-then-create writes of one visit on one thread."""
        delivery = self.delivery(fact, target=target)
        flow = self.write_flow(delivery, fhir_base=fhir_base, access_token=_token(access_token))
        return run_sync(flow, http)
