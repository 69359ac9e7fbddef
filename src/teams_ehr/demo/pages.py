"""HTML of the demo pages: self-contained, escaped, responsive, no external assets (requirement E3).

Every value is escaped with :func:`html.escape` at the point it enters markup (:func:`e`); no page
loads anything from another origin. Pages use the shared visual language of
:mod:`teams_ehr.theme` plus the demo's accents (:data:`STYLE`); both stylesheets are inline and
allowed by their SHA-256 hashes (CSP Level 3 §8.3, hash-source), so :data:`CSP` needs no
``'unsafe-inline'`` and the pages look the same on a host's Microsoft sandbox, which serves no
demo assets. The one script,
:data:`DEMO_JS`, is served from the demo's own origin (``script-src 'self'``): it refreshes the
meeting panel when the simulated room changes and shows the live roster from the runtime's
Server-Sent Events route, in plain words.

Accessibility (WCAG 2.2 AA): ``lang`` (SC 3.1.1), one ``<h1>`` per page and ``header``/``nav``/
``main`` landmarks (SC 1.3.1, 2.4.1 with a skip link), visible focus (SC 2.4.7), text contrast of
4.5:1 or more (SC 1.4.3), status in words, never by colour alone (SC 1.4.1), no horizontal
scrolling at 320 CSS px (SC 1.4.10 Reflow).
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from typing import Any

from teams_ehr import theme as _theme

__all__ = [
    "CSP",
    "DEMO_JS",
    "NAV",
    "STYLE",
    "button_form",
    "details",
    "e",
    "layout",
    "message",
    "pretty_json",
    "table",
]

STYLE = """
.ehr .site-header{background:#0b6e4f}.portal .site-header{background:#a4262c}
.teams .site-header{background:#464775}.sandbox .site-header{background:#57606a}
main>section{background:var(--card);border:1px solid var(--line);border-radius:8px;
padding:1rem 1.2rem;margin-bottom:1rem;overflow-wrap:anywhere;min-width:0}
.note{color:var(--muted);font-size:.92rem}
.status{display:inline-block;font-weight:600;padding:0 .5rem;border-radius:6px;
border:1px solid currentColor}
form.inline button,a.button{margin:.2rem .3rem .2rem 0}
ul.people{list-style:none;padding:0}
ul.people li{padding:.3rem 0;display:flex;flex-wrap:wrap;gap:.6rem;align-items:center}
form.join label{margin-top:0}form.join button{margin-top:.5rem}
pre{max-height:28rem;overflow:auto}
[data-testid=microsoft-sandbox-banner]{background:#8a5a00;color:#fff;padding:.5rem 1rem;
font-weight:600;text-align:center}
"""
"""The demo's accents on top of :data:`teams_ehr.theme.STYLESHEET`: one colour per surface (the
EHR, the portal, Teams, the sandbox), status chips that say their state in words."""


CSP = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; "
    f"style-src {_theme.source_hash(_theme.STYLESHEET)} {_theme.source_hash(STYLE)}; "
    "img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
"""No ``'unsafe-inline'``: the two stylesheets are allowed by hash; no ``style`` attributes."""

DEMO_JS = """
(function () {
  var panel = document.getElementById('room-panel');
  var SAY = {
    lobby: 'Update: in the lobby now; the clinician will let you in.',
    in_meeting: 'Update: you are now in the meeting.',
    left: 'Update: you left the meeting.'
  };
  var look = function () {
    var status = panel.querySelector('[data-testid=me-status]');
    return {
      state: status ? status.dataset.state : '',
      waiting: panel.querySelectorAll('[data-testid=lobby] [data-testid=admit]').length
    };
  };
  var announce = function (before, after) {
    var live = document.getElementById('announce'), text = '';
    if (!live) { return; }
    if (after.state !== before.state) { text = SAY[after.state] || ''; }
    else if (after.waiting > before.waiting) { text = 'Update: someone is waiting in the lobby.'; }
    if (text) { live.textContent = text; }
  };
  if (panel && panel.dataset.state) {
    var version = panel.dataset.version;
    setInterval(function () {
      fetch(panel.dataset.state, {cache: 'no-store'}).then(function (r) { return r.json(); })
        .then(function (s) {
          if (String(s.version) === String(version)) { return; }
          version = s.version;
          return fetch(panel.dataset.panel, {cache: 'no-store'}).then(function (r) { return r.text(); })
            .then(function (text) {
              var before = look(), active = document.activeElement;
              var focused = active && panel.contains(active) ? active.dataset.testid : null;
              panel.innerHTML = text;
              var again = focused && panel.querySelector('[data-testid="' + focused + '"]');
              if (again) { again.focus(); }  // keep the keyboard user's place (SC 2.4.3)
              else if (focused) { panel.focus(); }
              announce(before, look());
            });
        }).catch(function () {});
    }, 700);
  }
  var ROLES = {provider: 'Clinician', patient: 'Patient', other: 'Someone else'};
  var KINDS = {
    lobby_entered: 'waiting in the lobby', admitted: 'let in from the lobby',
    connected: 'connected', disconnected: 'left the call'
  };
  var roster = document.getElementById('live-roster');
  if (roster && roster.dataset.sse && window.EventSource) {
    var people = {}, call = null, count = 0;
    var render = function () {
      var list = roster.querySelector('ul');
      list.textContent = '';
      Object.keys(people).forEach(function (key) {
        var p = people[key], item = document.createElement('li');
        item.textContent = (ROLES[p.role] || 'Someone') + ': ' + (KINDS[p.kind] || 'seen') +
          ' (' + p.at.substr(11, 5) + ' UTC)';
        list.appendChild(item);
      });
      roster.querySelector('.call').textContent = call === 'call_started' ? 'The call is in progress.'
        : (call === 'call_ended' ? 'The call has ended.' : 'The call has not started yet.');
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


NAV: tuple[tuple[str, str], ...] = (
    ("/", "Start"),
    ("/ehr", "EHR schedule"),
    ("/portal", "Patient portal"),
    ("/attendance", "Attendance"),
    ("/demo/admin", "Admin"),
)
_BRANDS = {
    "ehr": "Sandbox EHR",
    "portal": "Patient portal",
    "teams": "Microsoft Teams (simulated)",
    "sandbox": "teams-ehr sandbox",
}


def layout(
    title: str,
    body: str,
    *,
    theme: str = "",
    script: bool = False,
    nav: Sequence[tuple[str, str]] = NAV,
    current: str = "",
) -> str:
    """A whole page around ``body`` (already escaped markup), in the shared visual language
    (:func:`teams_ehr.theme.page`: skip link, header landmark with ``nav``, ``main``) with the
    page's one ``<h1>`` (``title``), the surface's accent (``theme``: ehr, portal, teams,
    sandbox) and an ``aria-live`` region (``#announce``) the page script announces status
    changes in (WCAG 2.2 SC 4.1.3)."""
    inner = (
        f"<h1 data-testid='page-title'>{e(title)}</h1>{body}"
        "<div id='announce' class='note' role='status' aria-live='polite' "
        "data-testid='announce'></div>"
    )
    document = _theme.page(
        title,
        inner,
        nav=nav,
        current=current or None,
        script_urls=("/static/demo.js",) if script else (),
        home="/" if nav else None,
        product=_BRANDS.get(theme, "teams-ehr demo"),
    )
    document = document.replace("</head>", f"<style>{STYLE}</style></head>", 1)
    return document.replace("<body>", f"<body class='{e(theme)}'>", 1)


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, caption: str = "") -> str:
    """A table in a box that scrolls sideways on a narrow screen (WCAG 2.2 SC 1.4.10); cells
    are markup already (escape text cells with :func:`e`); every column needs a header."""
    cells = [[_theme.Markup(cell) for cell in row] for row in rows]
    return _theme.table(headers, cells, caption=caption or None)


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


def details(summary: str, inner: str, *, test_id: str = "") -> str:
    """``inner`` markup behind a closed ``<details>`` toggle labelled ``summary`` (text)."""
    tid = f" data-testid='{e(test_id)}'" if test_id else ""
    return f"<details class='tech'{tid}><summary>{e(summary)}</summary>{inner}</details>"


def pretty_json(data: Any) -> str:
    """``data`` as indented JSON in a ``<pre>`` that wraps long values inside its box."""
    return f"<pre>{e(json.dumps(data, indent=2, sort_keys=True, default=str))}</pre>"


def message(
    title: str, text: str, *, theme: str = "sandbox", nav: Sequence[tuple[str, str]] = NAV
) -> str:
    """A page with one paragraph (refusals, not-found)."""
    return layout(title, f"<section><p>{e(text)}</p></section>", theme=theme, nav=nav)
