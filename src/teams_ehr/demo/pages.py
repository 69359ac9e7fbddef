"""HTML of the demo pages: self-contained, escaped, no external assets (requirement E3).

Every value is escaped with :func:`html.escape` at the point it enters markup (:func:`e`); no page
loads anything from another origin. The one script, :data:`DEMO_JS`, is served from the demo's own
origin (``script-src 'self'`` in :data:`CSP`): it refreshes the meeting panel when the simulated
room changes and shows the live roster from the runtime's Server-Sent Events route when the
runtime has one.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["CSP", "DEMO_JS", "e", "layout", "table"]

CSP = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; "
    "img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:0;color:#1f2328;background:#f6f8fa}
header{background:#464775;color:#fff;padding:.7rem 1.2rem;display:flex;gap:1.2rem;align-items:center}
header a{color:#fff;text-decoration:none;font-weight:600}
header .brand{font-size:1.1rem;margin-right:auto}
main{max-width:60rem;margin:1.2rem auto;padding:0 1rem}
section{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:1rem 1.2rem;margin-bottom:1rem}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.4rem .5rem;border-bottom:1px solid #eaeef2;vertical-align:top}
button,.button{background:#5b5fc7;color:#fff;border:0;border-radius:6px;padding:.45rem .9rem;font-size:.95rem;cursor:pointer;text-decoration:none;display:inline-block}
button.secondary,.button.secondary{background:#6e7781}button.danger{background:#c4314b}
button:disabled{background:#afb8c1;cursor:not-allowed}
.ehr header{background:#0b6e4f}.portal header{background:#b3261e}.teams header{background:#464775}
.sandbox header{background:#57606a}
.note{color:#57606a;font-size:.9rem}.ok{color:#1a7f37;font-weight:600}.warn{color:#9a6700;font-weight:600}
pre{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:.6rem;overflow:auto;font-size:.8rem}
ul.people{list-style:none;padding:0}ul.people li{padding:.3rem 0;display:flex;gap:.8rem;align-items:center}
form.inline{display:inline}
input[type=text]{padding:.4rem;border:1px solid #d0d7de;border-radius:6px}
"""

DEMO_JS = """
(function () {
  var panel = document.getElementById('room-panel');
  if (panel && panel.dataset.state) {
    var version = panel.dataset.version;
    setInterval(function () {
      fetch(panel.dataset.state, {cache: 'no-store'}).then(function (r) { return r.json(); })
        .then(function (s) {
          if (String(s.version) === String(version)) { return; }
          version = s.version;
          return fetch(panel.dataset.panel, {cache: 'no-store'}).then(function (r) { return r.text(); })
            .then(function (text) { panel.innerHTML = text; });
        }).catch(function () {});
    }, 700);
  }
  var roster = document.getElementById('live-roster');
  if (roster && roster.dataset.sse && window.EventSource) {
    var people = {}, call = null, count = 0;
    var render = function () {
      var list = roster.querySelector('ul');
      list.textContent = '';
      Object.keys(people).forEach(function (key) {
        var p = people[key], item = document.createElement('li');
        item.textContent = p.at.substr(11, 8) + ' UTC \u2014 ' + p.role + ': ' + p.kind;
        list.appendChild(item);
      });
      roster.querySelector('.call').textContent = call ? 'call: ' + call : '';
      roster.dataset.events = String(count);
      roster.dataset.roles = Object.keys(people).map(function (k) {
        return people[k].role + ':' + people[k].kind;
      }).sort().join(' ');
    };
    var apply = function (e) {
      if (e.kind === 'call_started' || e.kind === 'call_ended') { call = e.kind; return; }
      var known = people[e.participant];
      if (!known || e.at >= known.at) { people[e.participant] = e; }
    };
    var source = new EventSource(roster.dataset.sse);
    source.addEventListener('snapshot', function (m) {
      var s = JSON.parse(m.data);
      people = {};
      call = s.call && s.call.kind;
      (s.participants || []).forEach(apply);
      render();
    });
    source.addEventListener('attendance', function (m) {
      count += 1;
      apply(JSON.parse(m.data));
      render();
    });
    source.addEventListener('closed', function () { source.close(); });
  }
})();
"""


def e(value: object) -> str:
    """Escape ``value`` for HTML text and attribute values."""
    return html.escape(str(value), quote=True)


_NAV = (
    ("/", "Start"),
    ("/ehr", "EHR schedule"),
    ("/portal", "Patient portal"),
    ("/attendance", "Attendance"),
    ("/demo/admin", "Admin"),
)


def layout(title: str, body: str, *, theme: str = "", script: bool = False) -> str:
    """A whole page around ``body`` (already escaped markup)."""
    nav = "".join(f"<a href='{e(href)}'>{e(text)}</a>" for href, text in _NAV)
    tag = "<script src='/static/demo.js' defer></script>" if script else ""
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{e(title)}</title><link rel='icon' href='data:,'><style>{_STYLE}</style>{tag}</head>"
        f"<body class='{e(theme)}'><header><span class='brand'>{e(title)}</span>{nav}</header>"
        f"<main>{body}</main></body></html>"
    )


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A table; cells are markup already (escape text cells with :func:`e`)."""
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def button_form(
    action: str,
    label: str,
    *,
    fields: dict[str, str] | None = None,
    css: str = "",
    test_id: str = "",
    method: str = "post",
) -> str:
    """A one-button form (POST by default) with hidden ``fields``."""
    hidden = "".join(
        f"<input type='hidden' name='{e(k)}' value='{e(v)}'>" for k, v in (fields or {}).items()
    )
    tid = f" data-testid='{e(test_id)}'" if test_id else ""
    return (
        f"<form class='inline' method='{e(method)}' action='{e(action)}'>{hidden}"
        f"<button class='{e(css)}'{tid}>{e(label)}</button></form>"
    )


def pretty_json(data: Any) -> str:
    return f"<pre>{e(json.dumps(data, indent=2, sort_keys=True, default=str))}</pre>"


def message(title: str, text: str, *, theme: str = "sandbox") -> str:
    return layout(title, f"<section><p>{e(text)}</p></section>", theme=theme)
