"""The ``pytest11`` plugin: fixtures prefixed ``teams_ehr_`` exposing the fakes (requirement E1).

Installed with the package (``[project.entry-points.pytest11] teams_ehr``); opt out with
``-p no:teams_ehr``, or load it explicitly with ``-p teams_ehr.testing.plugin`` when plugin
autoloading is off. Nothing here is autouse and nothing is patched globally: a test gets a fake
only by naming its fixture, and plugs it into its own ``httpx`` client through the fake's
handler, so the plugin coexists with respx, pytest-httpx and plain ``httpx.MockTransport``.

Fixtures (each function-scoped):

* ``teams_ehr_ehr`` — a :class:`~teams_ehr.testing.fake_ehr.FakeEhr`;
* ``teams_ehr_fhir`` — a :class:`~teams_ehr.testing.fake_fhir.FakeFhirServer` plugged into
  ``teams_ehr_ehr`` (bearer tokens checked against the EHR's issued tokens);
* ``teams_ehr_entra`` — a :class:`~teams_ehr.testing.fake_entra.FakeEntra`;
* ``teams_ehr_graph`` — a :class:`~teams_ehr.testing.fake_graph.FakeGraph` (Graph tokens are
  checked by ``teams_ehr_entra`` when the test also uses it, otherwise any bearer is accepted);
* ``teams_ehr_sandbox`` — a :class:`~teams_ehr.testing.sandbox.Sandbox`: all fakes behind one
  router plus settings for a :class:`~teams_ehr.app.TeamsEhr`. When a test uses the sandbox,
  the individual fixtures above return the *sandbox's* fakes (the same objects);
* ``teams_ehr_harness`` — a started :class:`~teams_ehr.testing.harness.HostHarness` around the
  host the marker names (``@pytest.mark.teams_ehr(host=create_app)``), on ``teams_ehr_sandbox``.
  It is an async fixture: the test runs on anyio (``@pytest.mark.anyio``), asyncio or trio.

Options come from ``@pytest.mark.teams_ehr(...)`` markers (test, class, module), merged
closest-first and validated by constructing :class:`TeamsEhrOptions` (pytest_httpx's pattern).
Teardown fails the test, with a message pointing at ``docs/testing.md``, when a scripted failure
(``fail_next``, ``lose_next_response``, ``tamper_next_readback``) was never consumed
(``assert_all_consumed``) or when code under test sent a request the sandbox router refused
because no fake owns the host (``assert_all_routed``) — such a request would have left the
process in production code paths.

This module imports only pytest and ``teams_ehr.testing`` at import time; the fakes load inside
the fixtures.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from contextlib import AsyncExitStack
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import httpx

    from teams_ehr.app import TeamsEhr
    from teams_ehr.testing.fake_ehr import FakeEhr
    from teams_ehr.testing.fake_entra import FakeEntra
    from teams_ehr.testing.fake_fhir import FakeFhirServer
    from teams_ehr.testing.fake_graph import FakeGraph
    from teams_ehr.testing.harness import HostHarness
    from teams_ehr.testing.sandbox import Sandbox

__all__ = ["DOCS", "TeamsEhrOptions", "pending_scripted_failures"]

DOCS = "docs/testing.md"
DEFAULT_TENANT_ID = "7c1a6b2e-3f4d-4e5a-9b8c-0d1e2f3a4b5c"  # = teams_ehr.testing.sandbox.TENANT_ID
_SANDBOX = "teams_ehr_sandbox"
_HARNESS = "teams_ehr_harness"
_CALL_FAILED = pytest.StashKey[bool]()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TeamsEhrOptions:
    """The options of ``@pytest.mark.teams_ehr(...)``; unknown or mistyped options are errors.

    ``tenant_id`` configures the standalone ``teams_ehr_entra`` / ``teams_ehr_graph`` only: the
    sandbox always uses its own tenant (``teams_ehr.testing.sandbox.TENANT_ID``, the default),
    and ``teams_ehr_sandbox`` refuses any other value rather than ignore it. ``host`` (the app
    factory, ``create_app(runtime)``) and ``writer`` (the organization's attendance writer)
    configure ``teams_ehr_harness``.
    """

    epic: bool = True
    ehr_base: str = "https://ehr.test/interconnect/api/FHIR/R4"
    tenant_id: str = DEFAULT_TENANT_ID
    app_base_url: str = "https://app.test"
    graph_base_url: str = "https://graph.microsoft.com"
    clock: Callable[[], datetime] | None = None
    assert_all_consumed: bool = True
    assert_all_routed: bool = True
    host: Callable[[TeamsEhr], Any] | None = None
    writer: str = "epic_clinical_note"

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "clock":
                if value is not None and not callable(value):
                    raise TypeError("clock must be a callable returning an aware datetime")
            elif field.name == "host":
                if value is not None and not callable(value):
                    raise TypeError("host must be the app factory, create_app(runtime) -> app")
            elif field.type == "bool" and not isinstance(value, bool):
                raise TypeError(f"{field.name} must be True or False, not {value!r}")
            elif field.type == "str" and (not isinstance(value, str) or not value):
                raise TypeError(f"{field.name} must be a non-empty string, not {value!r}")
        for name in ("ehr_base", "app_base_url", "graph_base_url"):
            if not getattr(self, name).startswith(("https://", "http://")):
                raise ValueError(f"{name} must be an absolute http(s) URL")


def _options(request: pytest.FixtureRequest) -> TeamsEhrOptions:
    """Merge the markers closest-first (a test's marker beats its class's and module's)."""
    __tracebackhide__ = True
    merged: dict[str, Any] = {}
    for marker in request.node.iter_markers("teams_ehr"):
        if marker.args:
            pytest.fail(
                "@pytest.mark.teams_ehr takes keyword options only, e.g. "
                f"@pytest.mark.teams_ehr(epic=False); see {DOCS}#marker-options",
                pytrace=False,
            )
        merged = marker.kwargs | merged
    try:
        return TeamsEhrOptions(**merged)
    except (TypeError, ValueError) as exc:
        known = ", ".join(f.name for f in dataclasses.fields(TeamsEhrOptions))
        pytest.fail(
            f"invalid @pytest.mark.teams_ehr option: {exc}. Known options: {known}; "
            f"see {DOCS}#marker-options",
            pytrace=False,
        )


def _clock(options: TeamsEhrOptions) -> Callable[[], datetime]:
    if options.clock is not None:
        return options.clock
    from teams_ehr._types import utc_now

    return utc_now


# -- teardown checks ---------------------------------------------------------------------------


def pending_scripted_failures(fake: object) -> list[str]:
    """Human-readable descriptions of the failures scripted on ``fake`` and never consumed.

    Reads each fake's scripting queue (``fail_next``, ``lose_next_response``,
    ``tamper_next_readback``); the fakes live in this package, so the plugin may know their
    internals. Any other object has nothing pending.
    """
    from teams_ehr.testing.fake_ehr import FakeEhr
    from teams_ehr.testing.fake_entra import FakeEntra
    from teams_ehr.testing.fake_fhir import FakeFhirServer
    from teams_ehr.testing.fake_graph import FakeGraph

    name = type(fake).__name__
    pending: list[str] = []
    if isinstance(fake, FakeEhr | FakeEntra):
        pending += _lost(name, fake._lost)
    if isinstance(fake, FakeEhr):
        for endpoint, queued in fake._failures.items():
            pending += [f"{name}.fail_next({endpoint!r}, {f.status})" for f in queued]
    elif isinstance(fake, FakeEntra):
        for endpoint, failure in fake._failures.items():
            if failure.remaining > 0:
                pending.append(
                    f"{name}.fail_next({endpoint!r}, {failure.status}): {failure.remaining} left"
                )
    elif isinstance(fake, FakeFhirServer):
        pending += [f"{name}.fail_next({status})" for status, _, _ in fake._failures]
        if fake._lose_responses > 0:
            pending.append(f"{name}.lose_next_response(): {fake._lose_responses} left")
    elif isinstance(fake, FakeGraph):
        for script in fake._scripts:
            if script.times > 0:
                status = f", {script.status}" if script.kind == "fail" else ""
                pending.append(
                    f"{name} {script.kind} script ({script.path_substring!r}{status}): "
                    f"{script.times} left"
                )
    return pending


def _lost(name: str, lost: dict[str, int]) -> list[str]:
    return [
        f"{name}.lose_next_response({endpoint!r}): {n} left" for endpoint, n in lost.items() if n
    ]


def _consumed_problem(fakes: list[object]) -> str | None:
    pending = [entry for fake in fakes for entry in pending_scripted_failures(fake)]
    if not pending:
        return None
    listing = "\n".join(f"  - {entry}" for entry in pending)
    return (
        "scripted failures were never consumed, so the code path they were meant to exercise "
        f"did not run:\n{listing}\n"
        "Remove them, make the code reach them, or mark the test with "
        "@pytest.mark.teams_ehr(assert_all_consumed=False). "
        f"See {DOCS}#unconsumed-scripted-failures"
    )


def _routed_problem(refused: list[httpx.Request]) -> str | None:
    if not refused:
        return None
    first: dict[tuple[str, str], int] = {}
    for request in refused:
        key = (request.method, request.url.host)
        first[key] = first.get(key, 0) + 1
    listing = "\n".join(f"  - {method} {host} ({n}x)" for (method, host), n in first.items())
    return (
        f"the sandbox refused {len(refused)} request(s) to hosts no fake serves; outside the "
        f"sandbox this code would have sent them off the machine:\n{listing}\n"
        "Point the code at the sandbox's URLs (sandbox.settings, sandbox.ehr.base_url) or, if "
        "the refusal is what the test checks, mark it with "
        "@pytest.mark.teams_ehr(assert_all_routed=False). "
        f"See {DOCS}#requests-leaving-the-sandbox"
    )


def _teardown_checks(
    request: pytest.FixtureRequest,
    options: TeamsEhrOptions,
    fakes: list[object],
    refused: list[httpx.Request] | None = None,
) -> None:
    """Fail the test once, listing every problem. Unconsumed scripts are not reported when the
    test itself already failed (its failure, not the leftovers, is the news)."""
    __tracebackhide__ = True
    problems: list[str] = []
    if refused is not None and options.assert_all_routed:
        problems.append(_routed_problem(refused) or "")
    if options.assert_all_consumed and not request.node.stash.get(_CALL_FAILED, False):
        problems.append(_consumed_problem(fakes) or "")
    problems = [p for p in problems if p]
    if problems:
        pytest.fail("teams_ehr: " + "\nteams_ehr: ".join(problems), pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember whether the test body failed (read by the fixtures' teardown checks)."""
    report: pytest.TestReport = yield
    if report.when == "call" and report.failed:
        item.stash[_CALL_FAILED] = True
    return report


# -- fixtures ----------------------------------------------------------------------------------


def _recording_sandbox(
    options: TeamsEhrOptions, refused: list[httpx.Request], *, harness: bool
) -> Sandbox:
    from teams_ehr.testing.sandbox import Sandbox, SandboxRoutingError

    class RecordingSandbox(Sandbox):
        """A sandbox that remembers what its router refused (for the teardown check)."""

        async def route(self, request: httpx.Request) -> httpx.Response:
            try:
                return await super().route(request)
            except SandboxRoutingError:
                refused.append(request)
                raise

    attendance = None
    if harness:  # the harness runs attendance itself: no background workers
        from teams_ehr.testing.harness import harness_attendance

        attendance = harness_attendance()
    sandbox = RecordingSandbox(
        clock=_clock(options),
        app_base_url=options.app_base_url,
        ehr_base=options.ehr_base,
        graph_base_url=options.graph_base_url,
        attendance=attendance,
    )
    sandbox.ehr.epic = options.epic
    return sandbox


@pytest.fixture
def teams_ehr_sandbox(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    """The whole offline world (:class:`~teams_ehr.testing.sandbox.Sandbox`)."""
    __tracebackhide__ = True
    options = _options(request)
    from teams_ehr.testing.sandbox import TENANT_ID

    if options.tenant_id.lower() != TENANT_ID:
        pytest.fail(
            "teams_ehr_sandbox uses its own tenant (teams_ehr.testing.sandbox.TENANT_ID); "
            f"tenant_id applies to the standalone fakes only. See {DOCS}#marker-options",
            pytrace=False,
        )
    refused: list[httpx.Request] = []
    sandbox = _recording_sandbox(options, refused, harness=_HARNESS in request.fixturenames)
    yield sandbox
    try:
        _teardown_checks(
            request, options, [sandbox.ehr, sandbox.fhir, sandbox.entra, sandbox.graph], refused
        )
    finally:
        refused.clear()


def _sandbox_if_used(request: pytest.FixtureRequest) -> Sandbox | None:
    if _SANDBOX in request.fixturenames:
        sandbox: Sandbox = request.getfixturevalue(_SANDBOX)
        return sandbox
    return None


@pytest.fixture
def teams_ehr_ehr(request: pytest.FixtureRequest) -> Iterator[FakeEhr]:
    """A :class:`~teams_ehr.testing.fake_ehr.FakeEhr` (the sandbox's when the test uses it)."""
    __tracebackhide__ = True
    sandbox = _sandbox_if_used(request)
    if sandbox is not None:
        yield sandbox.ehr  # the sandbox fixture checks its own fakes
        return
    from teams_ehr.testing.fake_ehr import FakeEhr

    options = _options(request)
    fake = FakeEhr(options.ehr_base, clock=_clock(options), epic=options.epic)
    yield fake
    _teardown_checks(request, options, [fake])


@pytest.fixture
def teams_ehr_fhir(
    request: pytest.FixtureRequest, teams_ehr_ehr: FakeEhr
) -> Iterator[FakeFhirServer]:
    """A :class:`~teams_ehr.testing.fake_fhir.FakeFhirServer` plugged into ``teams_ehr_ehr``."""
    __tracebackhide__ = True
    sandbox = _sandbox_if_used(request)
    if sandbox is not None:
        yield sandbox.fhir
        return
    from teams_ehr.testing.fake_fhir import FakeFhirServer

    options = _options(request)
    ehr = teams_ehr_ehr

    def token_ok(token: str) -> bool:
        return ehr.token_info(token) is not None

    fake = FakeFhirServer(ehr.base_url, clock=_clock(options), token_check=token_ok)
    ehr.fhir_handler = fake.handler
    yield fake
    _teardown_checks(request, options, [fake])


@pytest.fixture
def teams_ehr_entra(request: pytest.FixtureRequest) -> Iterator[FakeEntra]:
    """A :class:`~teams_ehr.testing.fake_entra.FakeEntra` (the sandbox's when it is used)."""
    __tracebackhide__ = True
    sandbox = _sandbox_if_used(request)
    if sandbox is not None:
        yield sandbox.entra
        return
    from teams_ehr.testing.fake_entra import FakeEntra

    options = _options(request)
    fake = FakeEntra(options.tenant_id, clock=_clock(options))
    yield fake
    _teardown_checks(request, options, [fake])


@pytest.fixture
def teams_ehr_graph(request: pytest.FixtureRequest) -> Iterator[FakeGraph]:
    """A :class:`~teams_ehr.testing.fake_graph.FakeGraph` (the sandbox's when it is used)."""
    __tracebackhide__ = True
    sandbox = _sandbox_if_used(request)
    if sandbox is not None:
        yield sandbox.graph
        return
    from teams_ehr.testing.fake_graph import FakeGraph

    options = _options(request)
    checker: Callable[[str], str | None] | None = None
    if "teams_ehr_entra" in request.fixturenames:
        entra: FakeEntra = request.getfixturevalue("teams_ehr_entra")
        checker = entra.graph_token_tenant
    fake = FakeGraph(
        tenant_id=options.tenant_id,
        clock=_clock(options),
        base_url=options.graph_base_url,
        token_checker=checker,
    )
    yield fake
    _teardown_checks(request, options, [fake])


@pytest.fixture
async def teams_ehr_harness(
    request: pytest.FixtureRequest, teams_ehr_sandbox: Sandbox
) -> AsyncIterator[HostHarness]:
    """A started :class:`~teams_ehr.testing.harness.HostHarness` around the marker's ``host``."""
    __tracebackhide__ = True
    options = _options(request)
    if options.host is None:
        known = ", ".join(f.name for f in dataclasses.fields(TeamsEhrOptions))
        pytest.fail(
            "teams_ehr_harness needs the host under test: mark the test (or its module) with "
            "@pytest.mark.teams_ehr(host=create_app), create_app(runtime) returning your ASGI or "
            f"WSGI app. Known options: {known}; see {DOCS}#the-host-harness",
            pytrace=False,
        )
    from teams_ehr.errors import UsageError
    from teams_ehr.testing.harness import HostHarness

    async with AsyncExitStack() as stack:
        try:
            harness = HostHarness(options.host, sandbox=teams_ehr_sandbox, writer=options.writer)
            host: HostHarness | None = await stack.enter_async_context(harness)
        except UsageError as exc:  # the host or the options: say what to fix, no traceback
            host, problem = None, str(exc)
        if host is None:
            pytest.fail(f"teams_ehr_harness: {problem}", pytrace=False)
        yield host


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "teams_ehr(**options): configure the teams_ehr_* fixtures (epic, ehr_base, "
        "tenant_id, app_base_url, graph_base_url, clock, assert_all_consumed, "
        f"assert_all_routed, host, writer); see {DOCS}#marker-options",
    )
