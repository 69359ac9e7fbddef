"""Framework-free HTTP responses that the integrations translate 1:1 (requirement C4, threat T08).

Every response of a launch, callback or join carries ``Referrer-Policy: no-referrer`` and
``Cache-Control: no-store`` so codes, states and join links never leak through the Referer header
or a shared cache. Error bodies are generic: the ``reason`` goes to logs and metrics, never to the
browser (it could tell an attacker which check failed). :class:`WebStream` is a streamed body
(the live roster's Server-Sent Events, WHATWG HTML §9.2) that adapters forward chunk by chunk.
"""

from __future__ import annotations

import dataclasses
import html
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from teams_ehr.errors import AuthorizationDeclinedError, SecurityError, TeamsEhrError

__all__ = [
    "SECURITY_HEADERS",
    "SSE_HEADERS",
    "WebResponse",
    "WebStream",
    "error_response",
    "html_page",
    "redirect",
    "with_banner",
]

SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
    ("Pragma", "no-cache"),
    ("X-Content-Type-Options", "nosniff"),
)

_PAGE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; form-action https: http:; base-uri 'none'"
)


@dataclass(frozen=True, slots=True)
class WebResponse:
    """A status, headers and a body; ``headers`` always include :data:`SECURITY_HEADERS`."""

    status: int
    body: bytes = b""
    media_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = field(default=SECURITY_HEADERS)

    @property
    def location(self) -> str | None:
        return next((v for k, v in self.headers if k.lower() == "location"), None)

    def __repr__(self) -> str:  # the Location may be a join link: never show it
        return f"<WebResponse status={self.status} media_type={self.media_type!r}>"


SSE_HEADERS: tuple[tuple[str, str], ...] = (
    *SECURITY_HEADERS,
    ("X-Accel-Buffering", "no"),  # proxies must not buffer an event stream
)


@dataclass(frozen=True, slots=True)
class WebStream:
    """A streamed response: ``chunks`` are written as they come; the adapter closes the
    iterator (``aclose``) when the client goes away."""

    chunks: AsyncIterator[bytes]
    status: int = 200
    media_type: str = "text/event-stream; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = field(default=SSE_HEADERS)

    def __repr__(self) -> str:
        return f"<WebStream status={self.status} media_type={self.media_type!r}>"


SANDBOX_BANNER = (
    "<div role='alert' data-testid='microsoft-sandbox-banner' style='background:#9a6700;"
    "color:#fff;padding:.5rem 1rem;font:600 1rem system-ui,sans-serif;text-align:center'>"
    "Microsoft sandbox: Microsoft sign-in, Graph and Teams on this page are simulated by this "
    "server. No real Microsoft 365 account or meeting is involved.</div>"
)


def with_banner(response: WebResponse, banner: str = SANDBOX_BANNER) -> WebResponse:
    """``response`` with ``banner`` (markup) at the top of its ``<body>`` when it is an HTML
    page; any other response unchanged. The Microsoft sandbox mode marks every page with it
    (docs/guides/ehr-analyst.md)."""
    if not response.media_type.startswith("text/html"):
        return response
    body = response.body
    start = body.find(b"<body")
    end = body.find(b">", start) + 1 if start >= 0 else 0
    marked = body[:end] + banner.encode("utf-8") + body[end:]
    return dataclasses.replace(response, body=marked)


def redirect(location: str, *, status: int = 303) -> WebResponse:
    """A redirect to a URL the caller built from server-side state (never from the request)."""
    return WebResponse(status, headers=(*SECURITY_HEADERS, ("Location", location)))


def html_page(body_html: str, *, status: int = 200, title: str = "teams-ehr") -> WebResponse:
    """A minimal self-contained page; ``body_html`` must already be escaped by the caller."""
    document = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}</title></head><body>{body_html}</body></html>"
    )
    return WebResponse(
        status,
        document.encode("utf-8"),
        "text/html; charset=utf-8",
        (*SECURITY_HEADERS, ("Content-Security-Policy", _PAGE_CSP)),
    )


_PUBLIC_TEXT = {
    400: "The request could not be accepted.",
    401: "The sign-in could not be verified.",
    403: "You are not allowed to do this.",
    404: "This link is not valid. Please ask your care team for a new one.",
    409: "Your visit is not ready yet. Please try again in a few minutes.",
    429: "Too many attempts. Please wait a minute and try again.",
}


_DECLINED_TEXT = (
    "You chose not to allow access, so nothing was shared and the visit was not opened.",
    "If that was a mistake, start again from your EHR or patient portal (for example "
    "Begin virtual visit) and choose Allow.",
)
_CONSENT_REQUIRED_TEXT = (
    "Your Microsoft account may not allow this app yet, so nothing was shared.",
    "Ask your organization's Microsoft 365 administrator to approve the app, then start again "
    "from your EHR.",
)


def _paragraphs(lines: tuple[str, ...]) -> str:
    return "".join(f"<p>{html.escape(line)}</p>" for line in lines)


def error_response(exc: TeamsEhrError) -> WebResponse:
    """The generic page for ``exc``: status from its hint, text by status only; a 429 or 503
    from an error that knows its ``retry_after`` also says when to retry. A person who declined
    at the EHR or at Microsoft (:class:`~teams_ehr.errors.AuthorizationDeclinedError`) is told
    so and how to start again."""
    status = exc.http_status_hint
    if isinstance(exc, SecurityError) and status >= 500:
        status = 400
    if isinstance(exc, AuthorizationDeclinedError):
        lines = _CONSENT_REQUIRED_TEXT if exc.reason == "consent_required" else _DECLINED_TEXT
        return html_page(_paragraphs(lines), status=status, title="Access not allowed")
    text = _PUBLIC_TEXT.get(status, "Something went wrong. Please try again later.")
    page = html_page(f"<p>{html.escape(text)}</p>", status=status, title="teams-ehr")
    retry_after = getattr(exc, "retry_after", None)
    if status in (429, 503) and isinstance(retry_after, int | float) and retry_after > 0:
        # RFC 9110 §10.2.3 / RFC 6585 §4: tell a rate-limited client when to come back
        retry = ("Retry-After", str(math.ceil(retry_after)))
        page = dataclasses.replace(page, headers=(*page.headers, retry))
    return page
