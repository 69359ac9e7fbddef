"""Microsoft sandbox mode: the host itself plays Microsoft's side, the EHR stays real.

With ``microsoft_sandbox = true`` (docs/guides/ehr-analyst.md, "Prove the integration before
Microsoft 365 is ready") a host runs the whole visit against a real SMART EHR (Epic's sandbox or
any SMART launcher) before its Microsoft 365 tenant exists. :class:`MicrosoftSandbox` holds the
package's own FakeEntra and FakeGraph for one sandbox tenant and wires them into the runtime:

* server side, :meth:`MicrosoftSandbox.transport` routes requests for the Microsoft hosts
  (``login.microsoftonline.com``, ``graph.microsoft.com``, as configured) to the fakes in-process
  and sends everything else (the EHR) to the runtime's real network transport;
* browser side, a redirect to a Microsoft host becomes a page of this host under
  :data:`SANDBOX_PATH` (:meth:`MicrosoftSandbox.browser_location`): FakeEntra's sign-in and the
  simulated Teams meeting (lobby, admit, leave, end) of :mod:`teams_ehr.demo.sandbox_web`,
  served through the route table (:meth:`MicrosoftSandbox.serve`);
* Graph's webhooks: FakeGraph's subscription handshakes and the room's change notifications go
  straight to the runtime's attendance webhook, as Graph would POST them.

Settings refuse the mode unless ``app_base_url`` is loopback (or the explicit development flag
``microsoft_sandbox_off_loopback`` is set), and every page the routes serve carries
:data:`teams_ehr.web.SANDBOX_BANNER`. The pages need Starlette (``teams-ehr[fastapi]``).
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

import httpx

from teams_ehr._redact import get_logger
from teams_ehr._types import Clock, utc_now
from teams_ehr.app import MICROSOFT_CALLBACK_PATH, TeamsEhr
from teams_ehr.attendance.handshake import HandshakeKind
from teams_ehr.attendance.runtime import LIFECYCLE_PATH
from teams_ehr.config import TeamsEhrSettings
from teams_ehr.errors import ConfigurationError
from teams_ehr.orgs.console import ADMIN_MICROSOFT_CALLBACK_PATH
from teams_ehr.testing.fake_entra import FakeEntra
from teams_ehr.testing.fake_graph import FakeGraph
from teams_ehr.testing.graph_notifier import GraphNotifier
from teams_ehr.testing.meeting_room import MeetingRoom
from teams_ehr.testing.sandbox import APPROVER_OID, CLINICIAN_OID, TENANT_ID
from teams_ehr.web import SECURITY_HEADERS, WebResponse

if TYPE_CHECKING:
    from teams_ehr.demo.world import DemoAppointment, RoomHandles, RoomPerson
    from teams_ehr.integrations.spec import IncomingRequest

__all__ = [
    "SANDBOX_APPROVER_OID",
    "SANDBOX_CLINICIAN_OID",
    "SANDBOX_PATH",
    "SANDBOX_TENANT_ID",
    "MicrosoftSandbox",
]

SANDBOX_PATH = "/_sandbox/microsoft"
"""Where the host serves Microsoft's browser pages: ``/entra/...`` and ``/teams/...`` below it."""
SANDBOX_TENANT_ID = TENANT_ID
"""The simulated Microsoft 365 tenant: an organization's ``tenant_id`` in sandbox mode."""
SANDBOX_APPROVER_OID = APPROVER_OID
"""The EHR analyst's account (an administrator of the sandbox tenant and the approver)."""
SANDBOX_CLINICIAN_OID = CLINICIAN_OID
"""The clinician's account, who signs in once and organizes the meetings."""

_log = get_logger(__name__)
_PAGES_NEED = (
    "the Microsoft sandbox pages need Starlette: pip install 'teams-ehr[fastapi]' "
    "(docs/guides/ehr-analyst.md)"
)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


class _MicrosoftRouter(httpx.AsyncBaseTransport):
    """By host: Microsoft's to the fakes in this process, every other to ``network``."""

    def __init__(self, sandbox: MicrosoftSandbox, network: httpx.AsyncBaseTransport) -> None:
        self._sandbox = sandbox
        self._network = network

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host == self._sandbox.entra_host:
            await request.aread()
            return self._sandbox.entra.handler(request)
        if host == self._sandbox.graph_host:
            await request.aread()
            return await self._sandbox.graph.handler(request)
        return await self._network.handle_async_request(request)

    async def aclose(self) -> None:
        await self._network.aclose()


class MicrosoftSandbox:
    """FakeEntra and FakeGraph of one sandbox tenant, served by the host for its runtime.

    The Microsoft app registration is the settings' own (``microsoft.client_id`` with its
    ``client_secret`` or certificate), its redirect URIs those of ``app_base_url``.
    """

    def __init__(self, settings: TeamsEhrSettings, *, clock: Clock = utc_now) -> None:
        if not settings.microsoft_sandbox:
            raise ConfigurationError(
                "MicrosoftSandbox needs settings with microsoft_sandbox = true",
                reason="invalid_settings",
            )
        microsoft = settings.microsoft
        self.app_base_url = settings.app_base_url
        self.entra = FakeEntra(TENANT_ID, clock=clock, authority_host=microsoft.authority_host)
        self.graph = FakeGraph(
            tenant_id=TENANT_ID,
            clock=clock,
            base_url=microsoft.graph_base_url,
            token_checker=self.entra.graph_token_tenant,
        )
        certificate = microsoft.certificate()
        secret = microsoft.client_secret
        self.entra.register_app(
            microsoft.client_id,
            redirect_uris=[
                settings.app_base_url + MICROSOFT_CALLBACK_PATH,
                settings.app_base_url + ADMIN_MICROSOFT_CALLBACK_PATH,
            ],
            secret=None if secret is None else secret.get_secret_value(),
            certificate_pem=None if certificate is None else certificate[1],
        )
        self.entra_host = httpx.URL(self.entra.authority_host).host
        self.graph_host = httpx.URL(self.graph.base_url).host
        self._fakes = {
            _origin(self.entra.authority_host): "entra",
            "https://teams.microsoft.com": "teams",
        }
        self.prefix = urlsplit(settings.app_base_url).path + SANDBOX_PATH
        self._runtime: TeamsEhr | None = None
        webhooks = httpx.AsyncClient(transport=httpx.MockTransport(self._webhook))
        self.graph.subscriptions.webhook_client = webhooks
        self.notifier = GraphNotifier(
            self.graph, self.entra, app_id=microsoft.client_id, webhook_client=webhooks
        )
        self._people: dict[tuple[str, str], RoomPerson] = {}
        self._names: dict[str, str] = {}
        self._handles: RoomHandles | None = None
        self._pages: Any = None

    def __repr__(self) -> str:
        return f"<MicrosoftSandbox tenant={TENANT_ID!r}>"

    # -- the runtime's side -----------------------------------------------------------------------

    def transport(self, network: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        """The runtime's transport: Microsoft's hosts served here, the rest by ``network``."""
        return _MicrosoftRouter(self, network)

    def administrators(self, configured: Mapping[str, frozenset[str]]) -> dict[str, frozenset[str]]:
        """``configured`` plus the sandbox analyst as an administrator of the sandbox tenant."""
        merged = dict(configured)
        merged[TENANT_ID] = merged.get(TENANT_ID, frozenset()) | {APPROVER_OID}
        return merged

    def attach(self, runtime: TeamsEhr) -> None:
        """Deliver Graph's webhooks to ``runtime`` (called when it opens)."""
        self._runtime = runtime
        _log.warning(
            "Microsoft sandbox mode: Microsoft sign-in, Graph and Teams are simulated by this "
            "process (tenant %s); pages are under %s",
            TENANT_ID,
            self.app_base_url + SANDBOX_PATH,
        )

    async def _webhook(self, request: httpx.Request) -> httpx.Response:
        runtime = self._runtime
        if runtime is None or runtime.attendance is None:
            return httpx.Response(404)
        kind: HandshakeKind = (
            "lifecycle" if request.url.path.endswith(LIFECYCLE_PATH) else "notification"
        )
        body = await request.aread()
        result = await runtime.attendance.webhook(kind, dict(request.url.params), body)
        headers = [("Content-Type", result.content_type), *result.headers]
        return httpx.Response(result.status, content=result.body, headers=headers)

    # -- the browser's side -----------------------------------------------------------------------

    def browser_location(self, location: str) -> str:
        """A redirect to Microsoft's sign-in or a Teams join URL, as this host's sandbox page."""
        from teams_ehr.demo.gateway import browser_location

        return browser_location(location, self._fakes, prefix=self.app_base_url + SANDBOX_PATH)

    async def serve(self, method: str, path: str, request: IncomingRequest) -> WebResponse:
        """Hand a browser request for ``path`` (below :data:`SANDBOX_PATH`) to the pages."""
        pages = self._pages_app()
        cookie = next((v for k, v in request.headers.items() if k.lower() == "cookie"), "")
        headers = {"cookie": cookie} if cookie else {}
        content = b""
        if method == "POST":
            headers["content-type"] = "application/x-www-form-urlencoded"
            content = urlencode(dict(request.params)).encode("ascii")
        query = "" if method == "POST" or not request.query else "?" + urlencode(request.query)
        transport = httpx.ASGITransport(app=pages)
        async with httpx.AsyncClient(transport=transport, base_url="http://sandbox") as client:
            answer = await client.request(
                method, self.prefix + path + query, headers=headers, content=content
            )
        out: list[tuple[str, str]] = [*SECURITY_HEADERS]
        for name in ("content-security-policy", "set-cookie", "location"):
            for value in answer.headers.get_list(name):
                if name == "location" and value.startswith("/"):
                    value = _origin(self.app_base_url) + value
                out.append((name.title(), value))
        media = answer.headers.get("content-type", "text/plain; charset=utf-8")
        return WebResponse(answer.status_code, answer.content, media, tuple(out))

    def _pages_app(self) -> Any:
        if self._pages is None:
            try:
                from teams_ehr.demo.sandbox_web import microsoft_pages
                from teams_ehr.demo.world import RoomHandles
            except ModuleNotFoundError:
                raise ConfigurationError(_PAGES_NEED, reason="missing_dependency") from None
            self._handles = RoomHandles(self.graph)
            self._pages = microsoft_pages(self, self.prefix)
        return self._pages

    # -- what the pages act on (teams_ehr.demo.sandbox_web.MicrosoftSide) --------------------------

    @property
    def people(self) -> MutableMapping[tuple[str, str], RoomPerson]:
        return self._people

    def room(self, handle: str) -> MeetingRoom | None:
        return None if self._handles is None else self._handles.room(handle)

    def room_handle_for_join_url(self, join_url: str) -> str | None:
        return None if self._handles is None else self._handles.for_join_url(join_url)

    def appointment_of_room(self, handle: str) -> DemoAppointment | None:
        return None  # the schedule is the real EHR's: the pages show no appointment

    def roster_url(self, appointment: DemoAppointment) -> str | None:
        return None

    @property
    def portal_url(self) -> str | None:
        return None  # the patient portal is the real EHR's

    def signed_in(self, object_id: str, name: str) -> None:
        self._names[object_id.lower()] = name

    def display_name(self, object_id: str) -> str | None:
        return self._names.get(object_id.lower())

    def guest_name(self, handle: str, portal_browser: str | None) -> str:
        return ""  # the real portal's launch context does not reach these pages

    async def room_changed(self) -> None:
        """Graph's change notifications for the room, to the runtime's webhook now."""
        await self.notifier.flush()
