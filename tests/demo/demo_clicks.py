"""Plain-HTTP "clicks" on the demo's pages: find a form by its ``data-testid`` and submit it."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser

import httpx


@dataclass
class Form:
    method: str
    action: str
    fields: dict[str, str] = field(default_factory=dict)


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.by_test_id: dict[str, Form] = {}
        self.links: dict[str, str] = {}
        self._current: Form | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._current = Form(a.get("method", "get").lower(), a.get("action", ""))
        elif tag == "input" and self._current is not None and "name" in a:
            self._current.fields[a["name"]] = a.get("value", "")
        elif tag == "button" and self._current is not None and "data-testid" in a:
            self.by_test_id[a["data-testid"]] = self._current
        elif tag == "a" and "data-testid" in a:
            self.links[a["data-testid"]] = a.get("href", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None


def parse(text: str) -> _Forms:
    parser = _Forms()
    parser.feed(text)
    return parser


class Clicker:
    """One browser (its own cookie jar) following redirects like a browser does."""

    def __init__(self, base_url: str) -> None:
        self.client = httpx.Client(base_url=base_url.rstrip("/"), follow_redirects=True)
        self.history: list[httpx.Response] = []

    def close(self) -> None:
        self.client.close()

    def get(self, path: str) -> httpx.Response:
        return self._keep(self.client.get(path))

    def click(self, page: httpx.Response, test_id: str, **overrides: str) -> httpx.Response:
        forms = parse(page.text)
        if test_id in forms.links:
            return self.get(forms.links[test_id])
        form = forms.by_test_id.get(test_id)
        assert form is not None, f"no control {test_id!r} on {page.url.path}"
        data = {**form.fields, **overrides}
        if form.method == "post":
            return self._keep(self.client.post(form.action, data=data))
        return self._keep(self.client.get(form.action, params=data or None))

    def _keep(self, response: httpx.Response) -> httpx.Response:
        self.history.extend(response.history)
        self.history.append(response)
        return response
