"""Framework-free HTTP responses that the integrations translate 1:1 (requirement C4, threat T08).

Every response of a launch, callback or join carries ``Referrer-Policy: no-referrer`` and
``Cache-Control: no-store`` so codes, states and join links never leak through the Referer header
or a shared cache. Error bodies are generic: the ``reason`` goes to logs and metrics, never to the
browser (it could tell an attacker which check failed), except the few reasons that are the
person's own business (:func:`error_response` lists them). Pages use the one layout of
:mod:`teams_ehr.theme`. :class:`WebStream` is a streamed body
(the live roster's Server-Sent Events, WHATWG HTML §9.2) that adapters forward chunk by chunk.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC

from teams_ehr import theme
from teams_ehr.errors import (
    ApprovalRequiredError,
    AuthorizationDeclinedError,
    JoinLinkInvalidError,
    SecurityError,
    TeamsEhrError,
)

__all__ = [
    "SECURITY_HEADERS",
    "SSE_HEADERS",
    "WebResponse",
    "WebStream",
    "error_page",
    "error_response",
    "html_page",
    "not_found_response",
    "redirect",
    "wants_html",
    "with_banner",
]

SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
    ("Pragma", "no-cache"),
    ("X-Content-Type-Options", "nosniff"),
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
    "<div role='alert' class='sandbox-banner' data-testid='microsoft-sandbox-banner'>"
    "Microsoft sandbox: Microsoft sign-in, Graph and Teams on this page are simulated by this "
    "server. No real Microsoft 365 account or meeting is involved.</div>"
)


def with_banner(response: WebResponse, banner: str = SANDBOX_BANNER) -> WebResponse:
    """``response`` with ``banner`` (markup) at the top of its ``<body>`` when it is an HTML
    page; any other response unchanged. The Microsoft sandbox mode marks every page with it
    (docs/guides/ehr-analyst.md); its look comes from :data:`teams_ehr.theme.STYLESHEET`."""
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


def html_page(
    body_html: str,
    *,
    status: int = 200,
    title: str = "teams-ehr",
    nav: Sequence[tuple[str, ...]] = (),
    current: str | None = None,
    notice: str | None = None,
    scripts: Sequence[str] = (),
    home: str | None = None,
) -> WebResponse:
    """A page in the one layout of :func:`teams_ehr.theme.page`; ``body_html`` must already be
    escaped by the caller. The ``Content-Security-Policy`` allows the stylesheet and the inline
    ``scripts`` by hash only (no ``'unsafe-inline'``)."""
    document = theme.page(
        title, body_html, nav=nav, current=current, status=notice, scripts=scripts, home=home
    )
    return WebResponse(
        status,
        document.encode("utf-8"),
        "text/html; charset=utf-8",
        (*SECURITY_HEADERS, ("Content-Security-Policy", theme.csp(scripts=scripts))),
    )


_PUBLIC_TEXT = {
    400: ("The request could not be accepted", "The request could not be accepted."),
    401: ("Sign-in not verified", "The sign-in could not be verified."),
    403: ("Not allowed", "You are not allowed to do this."),
    404: (
        "Link not valid",
        "This link is not valid. Please ask your care team for a new one.",
    ),
    409: ("Not ready yet", "Your visit is not ready yet. Please try again in a few minutes."),
    429: ("Too many attempts", "Too many attempts. Please wait a minute and try again."),
}
_FALLBACK = ("Something went wrong", "Something went wrong. Please try again later.")

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
_NOT_APPROVED_TEXT = (
    "Virtual visits for this organization have not been approved yet, so nothing was shared "
    "and no visit was opened.",
    "Contact your organization's EHR analyst or Microsoft 365 administrator: they finish the "
    "approval in the teams-ehr admin console (Organizations, then Review and approve). "
    "Start again from your EHR once it is approved.",
)
_SUSPENDED_TEXT = (
    "Your organization has paused virtual visits started from the EHR, so nothing was shared "
    "and no visit was opened.",
    "Contact your organization's EHR analyst or Microsoft 365 administrator to find out when "
    "they resume.",
)
# Reasons whose words are safe to show: each concerns the signed-in person's own action.
_ADMIN_TEXT: dict[str, tuple[str, tuple[str, ...]]] = {
    "admin_not_signed_in": ("Please sign in", ("Your session has ended. Sign in again.",)),
    "not_administrator": (
        "Not an administrator",
        ("Your account is not an administrator of this organization.",),
    ),
    "not_designated_approver": (
        "Only the designated approver can approve",
        ("Ask the approver named on the organization's page to sign in and approve.",),
    ),
    "self_approval": (
        "Another person must approve",
        ("You edited this configuration, so someone else must approve it.",),
    ),
    "stale_config_hash": (
        "The configuration changed",
        ("The configuration changed since it was reviewed. Review it again, then approve.",),
    ),
    "stale_proof": (
        "The EHR sign-in is too old",
        ("Sign in to the EHR again from the review page, then approve.",),
    ),
    "smart_proof_required": (
        "EHR sign-in needed",
        ("Sign in to the EHR from the review page before approving.",),
    ),
    "not_pending": (
        "Not waiting for approval",
        ("This environment is not waiting for approval. Submit it first.",),
    ),
    "not_approved": (
        "Not approved yet",
        ("Integration records appear once this environment is approved and unchanged since.",),
    ),
}
_LINK_ADVICE = "Please ask your care team for a new link."


def _join_link_text(exc: JoinLinkInvalidError) -> tuple[str, tuple[str, ...]] | None:
    """The page of a refused join link whose holder had a genuine token (threat T20: the
    status stays 404 for all, so only someone holding a real 256-bit token sees more)."""
    if exc.reason == "not_yet_valid" and exc.opens_at is not None:
        opens = exc.opens_at.astimezone(UTC)
        return (
            "Your visit link is not open yet",
            (
                f"This link opens at {opens:%H:%M} UTC on {opens.day} {opens:%b %Y}.",
                "Please come back then; the link stays the same.",
            ),
        )
    if exc.reason == "expired":
        return ("This visit link has expired", ("The time for this visit is over.", _LINK_ADVICE))
    if exc.reason == "revoked":
        return (
            "This visit link was cancelled",
            ("The appointment may have been cancelled or moved.", _LINK_ADVICE),
        )
    return None


def _explain(exc: TeamsEhrError, status: int) -> tuple[str, tuple[str, ...], str]:
    """Title, paragraphs and a ``data-testid`` for ``exc``'s page; only reasons listed here
    reach the browser (design: the reason of a refusal is for logs, not attackers)."""
    if isinstance(exc, AuthorizationDeclinedError):
        if exc.reason == "consent_required":
            return (
                "Your organization has not allowed this app",
                _CONSENT_REQUIRED_TEXT,
                "error-consent-required",
            )
        return "You declined access", _DECLINED_TEXT, "error-declined"
    if isinstance(exc, ApprovalRequiredError):
        if exc.reason == "org_suspended":
            title = "Virtual visits are paused for this organization"
            return title, _SUSPENDED_TEXT, "error-suspended"
        if exc.reason == "org_not_approved":
            return "This organization isn't approved yet", _NOT_APPROVED_TEXT, "error-not-approved"
        if exc.reason in _ADMIN_TEXT:
            title, lines = _ADMIN_TEXT[exc.reason]
            return title, lines, f"error-{exc.reason.replace('_', '-')}"
    if isinstance(exc, JoinLinkInvalidError) and status == 404:
        explained = _join_link_text(exc)
        if explained is not None:
            return explained[0], explained[1], f"error-link-{exc.reason.replace('_', '-')}"
    title, text = _PUBLIC_TEXT.get(status, _FALLBACK)
    return title, (text,), f"error-{status}"


def error_page(
    title: str,
    lines: Sequence[str],
    *,
    status: int,
    back: tuple[str, str] | None = None,
    test_id: str = "error",
    kind: str = "error",
) -> WebResponse:
    """An error page in the shared layout: a heading, plain paragraphs and, when given, a way
    back (``back`` is ``(href, text)``)."""
    body = theme.notice(None, lines, kind=kind, test_id=test_id)
    if back is not None:
        link = theme.button_link(back[0], back[1], test_id="error-back")
        body = theme.Markup(f"{body}<p class='actions'>{link}</p>")
    return html_page(f"<h1>{theme.e(title)}</h1>{body}", status=status, title=title)


_NOT_A_FAULT = frozenset({"error-declined", "error-link-not-yet-valid"})  # shown calmly


def error_response(exc: TeamsEhrError, *, back: tuple[str, str] | None = None) -> WebResponse:
    """The page for ``exc``: status from its hint, text by status and by the few reasons that
    are the person's own business (declined consent, organization not approved, a join link not
    open yet, expired or cancelled, console steps); a 429 or 503 from an error that knows its
    ``retry_after`` also says when to retry (RFC 9110 §10.2.3). ``back`` is a way back
    ``(href, text)``."""
    status = exc.http_status_hint
    if isinstance(exc, SecurityError) and status >= 500:
        status = 400
    title, lines, test_id = _explain(exc, status)
    kind = "info" if test_id in _NOT_A_FAULT else "error"
    page = error_page(title, lines, status=status, back=back, test_id=test_id, kind=kind)
    retry_after = getattr(exc, "retry_after", None)
    if status in (429, 503) and isinstance(retry_after, int | float) and retry_after > 0:
        # RFC 9110 §10.2.3 / RFC 6585 §4: tell a rate-limited client when to come back
        retry = ("Retry-After", str(math.ceil(retry_after)))
        page = dataclasses.replace(page, headers=(*page.headers, retry))
    return page


def wants_html(accept: str | None) -> bool:
    """Whether an ``Accept`` header prefers HTML over JSON (RFC 9110 §12.5.1, by q-value;
    a browser sends ``text/html`` first, an API client ``application/json`` or ``*/*``)."""
    html_q = json_q = 0.0
    for item in (accept or "").split(","):
        media, _, params = item.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            name, _, number = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(number)
                except ValueError:
                    q = 0.0
        media = media.strip().lower()
        if media in ("text/html", "application/xhtml+xml"):
            html_q = max(html_q, q)
        elif media in ("application/json", "application/problem+json"):
            json_q = max(json_q, q)
    return html_q > 0 and html_q >= json_q


def not_found_response(accept: str | None, *, back: tuple[str, str] | None = None) -> WebResponse:
    """404 for an unknown path, negotiated (RFC 9110 §12): an HTML page with a way back for a
    browser, ``{"detail": "Not Found"}`` (Starlette's shape) for an API client."""
    if not wants_html(accept):
        return WebResponse(404, b'{"detail":"Not Found"}', "application/json")
    return error_page(
        "Page not found",
        (
            "There is no page at this address. Check the link, or start again from your EHR "
            "or patient portal.",
        ),
        status=404,
        back=back,
        test_id="error-not-found",
    )
