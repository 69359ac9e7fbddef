"""The browser the fakes play: what ``authorize_in_browser`` accepts, and the redirect it returns.

:meth:`FakeEhr.authorize_in_browser <teams_ehr.testing.fake_ehr.FakeEhr.authorize_in_browser>`
and :meth:`FakeEntra.authorize_in_browser
<teams_ehr.testing.fake_entra.FakeEntra.authorize_in_browser>` take the same targets: a URL
(``str`` or ``httpx.URL``, opened with ``GET``), an ``httpx.Request`` (sent as is, e.g. a form
``POST``), or an object shaped like :class:`teams_ehr.smart.authorize.AuthorizationRedirect`
(``method``, ``url``, ``fields``). Both answer with the query parameters of the authorization
server's redirect back to the app (RFC 6749 §4.1.2).
"""

from __future__ import annotations

from typing import Protocol, TypeAlias
from urllib.parse import parse_qsl, urlsplit

import httpx

__all__ = ["AuthorizationRedirectLike", "BrowserTarget", "browser_request", "redirect_params"]


class AuthorizationRedirectLike(Protocol):
    """An authorization redirect as the SMART client produces it (a GET URL or a POST form)."""

    @property
    def method(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def fields(self) -> tuple[tuple[str, str], ...]: ...


BrowserTarget: TypeAlias = "str | httpx.URL | httpx.Request | AuthorizationRedirectLike"


def browser_request(target: BrowserTarget) -> httpx.Request:
    """The request a browser sends for ``target``."""
    if isinstance(target, httpx.Request):
        return target
    if isinstance(target, str | httpx.URL):
        return httpx.Request("GET", target)
    if target.method.upper() == "POST":
        return httpx.Request("POST", target.url, data=dict(target.fields))
    return httpx.Request("GET", target.url)


def redirect_params(response: httpx.Response) -> dict[str, str] | None:
    """The query parameters of a ``302`` redirect, or ``None`` when ``response`` is not one."""
    location = response.headers.get("location")
    if response.status_code != 302 or not location:
        return None
    return dict(parse_qsl(urlsplit(location).query, keep_blank_values=True))
