"""The one visual language of every server-rendered page: stylesheet, layout, helpers, CSP.

No build step and no CDN: the stylesheet is one ``<style>`` element allowed by its hash
(CSP Level 3 §8.3 "hash-source"), so pages work offline under a strict policy with no
``'unsafe-inline'`` and no ``style=`` attributes. System fonts; usable at 360 px wide; text and
controls meet WCAG 2.2 AA contrast (SC 1.4.3, 1.4.11); focus is always visible (SC 2.4.7); every
page has a skip link (SC 2.4.1), a ``<header>`` and a ``<main>`` landmark (SC 1.3.1).

How a page module uses it::

    from teams_ehr import theme
    from teams_ehr.theme import Markup, e

    body = theme.section("Visit", theme.definition_list([("State", theme.label("active"))]))
    document = theme.page("Visit", body, nav=[("/admin", "Organizations")], current="/admin")
    headers = {"Content-Security-Policy": theme.csp()}

* Text is escaped by every helper unless it is :class:`Markup` (what :func:`e` and the helpers
  return), so only already-built markup passes through unchanged.
* :func:`label` turns a state or enum (``pending_approval``) into plain words; :func:`value`
  renders any configuration value (lists, mappings, booleans) without a Python ``repr``.
* JSON is shown only inside :func:`technical_details` (a closed ``<details>`` toggle).
* A page that needs a script passes its source in ``scripts=`` to :func:`page` and the same
  sources to :func:`csp`, which allows them by hash; :data:`COPY_SCRIPT` powers :func:`copy_field`.
* Every key element carries a ``data-testid`` for the browser walk.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

__all__ = [
    "COPY_SCRIPT",
    "PRODUCT_NAME",
    "STATE_LABELS",
    "STYLESHEET",
    "Markup",
    "button_link",
    "copy_field",
    "csp",
    "definition_list",
    "e",
    "label",
    "notice",
    "page",
    "section",
    "source_hash",
    "steps",
    "table",
    "technical_details",
    "value",
    "when",
]

PRODUCT_NAME = "teams-ehr"
_CURRENT = " aria-current='page'"


class Markup(str):
    """A string that is already safe markup; helpers pass it through unescaped."""

    __slots__ = ()


def e(text: object) -> Markup:
    """``text`` escaped for HTML text and quoted attributes (a :class:`Markup` unchanged)."""
    if isinstance(text, Markup):
        return text
    return Markup(html.escape(str(text), quote=True))


def _join(parts: Iterable[str]) -> Markup:
    return Markup("".join(parts))


def _tid(test_id: str | None) -> str:
    return f" data-testid='{e(test_id)}'" if test_id else ""


STYLESHEET = """
:root{--ink:#1f2328;--muted:#57606a;--bg:#f6f8fa;--card:#fff;--line:#d0d7de;--brand:#464775;
--accent:#4f52b2;--ok:#1a7f37;--warn:#8a5a00;--bad:#b42318;--focus:#0b57d0}
*,*::before,*::after{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
margin:0;color:var(--ink);background:var(--bg);line-height:1.5;font-size:1rem}
a{color:var(--accent)}a:hover{text-decoration-thickness:2px}
:focus-visible{outline:3px solid var(--focus);outline-offset:2px}
.skip{position:absolute;left:.5rem;top:-3rem;background:#fff;color:var(--ink);padding:.5rem .8rem;
border:2px solid var(--focus);border-radius:6px;z-index:10}
.skip:focus{top:.5rem}
.site-header{background:var(--brand);color:#fff;padding:.6rem 1rem;display:flex;flex-wrap:wrap;
gap:.4rem 1rem;align-items:center}
.site-header .brand{font-weight:700;font-size:1.1rem;color:#fff;text-decoration:none;
margin-right:auto}
.site-header nav ul{list-style:none;display:flex;flex-wrap:wrap;gap:.2rem .9rem;margin:0;padding:0}
.site-header nav a{color:#fff;text-decoration:none;font-weight:600;padding:.2rem 0;
display:inline-block}
.site-header nav a:hover,.site-header nav a[aria-current]{text-decoration:underline;
text-underline-offset:.3em;text-decoration-thickness:2px}
.site-header :focus-visible{outline-color:#fff}
main{display:block;max-width:60rem;margin:1.2rem auto;padding:0 1rem;overflow-wrap:break-word}
code{word-break:break-all}
h1{font-size:1.6rem;line-height:1.25;margin:.2rem 0 1rem}h2{font-size:1.2rem;margin:.2rem 0 .7rem}
section.card{background:var(--card);border:1px solid var(--line);border-radius:8px;
padding:1rem 1.2rem;margin-bottom:1rem}
.notice{border-left:6px solid var(--accent);background:#fff;padding:.7rem 1rem;margin:0 0 1rem;
border-radius:4px;border-top:1px solid var(--line);border-right:1px solid var(--line);
border-bottom:1px solid var(--line)}
.notice-ok{border-left-color:var(--ok)}.notice-warn{border-left-color:var(--warn)}
.notice-error{border-left-color:var(--bad)}
.notice p{margin:.3rem 0}
.table-wrap{overflow-x:auto}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.45rem .5rem;border-bottom:1px solid #e4e8ec;vertical-align:top}
th{font-weight:600}caption{text-align:left;font-weight:600;padding:.3rem 0}
@media (max-width:40rem){table.stack thead{position:absolute;width:1px;height:1px;
overflow:hidden;clip:rect(0 0 0 0)}table.stack,table.stack tbody,table.stack tr,
table.stack td{display:block;width:100%}table.stack tr{border-bottom:1px solid var(--line);
padding:.4rem 0}table.stack td{border:0;padding:.15rem 0}
table.stack td::before{content:attr(data-label);display:block;font-weight:600;
color:var(--muted);font-size:.85rem}}
dl.facts{display:grid;grid-template-columns:minmax(8rem,max-content) 1fr;gap:.35rem 1rem;margin:0}
dl.facts dt{font-weight:600;color:var(--muted)}dl.facts dd{margin:0;overflow-wrap:anywhere}
@media (max-width:30rem){dl.facts{grid-template-columns:1fr}dl.facts dd{margin-bottom:.4rem}}
ul.plain{margin:0;padding-left:1.2rem}
.button,button{background:#4f52b2;color:#fff;border:2px solid #4f52b2;border-radius:6px;
padding:.45rem .9rem;font:inherit;font-size:.95rem;cursor:pointer;text-decoration:none;
display:inline-block;line-height:1.3}
.button.secondary,button.secondary{background:#fff;color:#4f52b2}
.button.danger,button.danger{background:var(--bad);border-color:var(--bad)}
button:disabled{background:#8c959f;border-color:#8c959f;cursor:not-allowed}
.actions{display:flex;flex-wrap:wrap;gap:.6rem;align-items:center;margin:.8rem 0}
form.inline{display:inline}
label{display:block;font-weight:600;margin:.8rem 0 .2rem}
.hint{display:block;color:var(--muted);font-weight:400;font-size:.9rem}
input[type=text],input[type=url],input:not([type]),select,textarea{font:inherit;width:100%;
max-width:40rem;padding:.45rem .5rem;border:1px solid #6e7781;border-radius:6px;background:#fff;
color:var(--ink)}
input[readonly]{background:var(--bg)}
input[type=checkbox]{width:1.2rem;height:1.2rem;vertical-align:middle}
.field-error{display:block;color:var(--bad);font-weight:600;margin:.2rem 0}
.field-error::before{content:"Error: "}
[aria-invalid=true]{border-color:var(--bad);border-width:2px}
.copy{display:flex;flex-wrap:wrap;gap:.4rem;align-items:center}.copy input{flex:1 1 14rem}
.muted{color:var(--muted)}.ok{color:var(--ok);font-weight:600}.warn{color:var(--warn);font-weight:600}
ol.steps{list-style:none;counter-reset:step;padding:0;margin:0 0 1rem;display:flex;flex-wrap:wrap;
gap:.4rem}
ol.steps li{counter-increment:step;border:1px solid var(--line);border-radius:999px;
padding:.25rem .8rem;background:#fff;color:var(--muted)}
ol.steps li::before{content:counter(step) ". "}
ol.steps li.done{color:var(--ok)}ol.steps li.done::after{content:" \\2713"}
ol.steps li[aria-current]{background:var(--brand);color:#fff;border-color:var(--brand);
font-weight:700}
details.edit summary{cursor:pointer}details.edit summary h2{display:inline;margin:0}
details.tech{margin:.8rem 0}details.tech summary{cursor:pointer;color:var(--accent);font-weight:600}
pre{background:var(--bg);border:1px solid var(--line);border-radius:6px;padding:.6rem;
font-size:.8rem;white-space:pre-wrap;overflow-wrap:anywhere;word-break:break-all;max-width:100%}
.sandbox-banner{background:#8a5a00;color:#fff;padding:.5rem 1rem;font-weight:600;text-align:center}
footer.site-footer{max-width:60rem;margin:2rem auto 1rem;padding:0 1rem;color:var(--muted);
font-size:.85rem}
"""

COPY_SCRIPT = (
    "document.addEventListener('click',function(ev){var b=ev.target.closest('[data-copy]');"
    "if(!b)return;var f=document.getElementById(b.getAttribute('data-copy'));if(!f)return;"
    "f.select();var done=function(){var s=document.getElementById(b.getAttribute('data-copy')"
    "+'-status');if(s)s.textContent='Copied';};"
    "if(navigator.clipboard){navigator.clipboard.writeText(f.value).then(done,function(){});}"
    "else{document.execCommand('copy');done();}});"
    "document.addEventListener('focusin',function(ev){var t=ev.target;"
    "if(t.matches&&t.matches('input[readonly][data-select]'))t.select();});"
)


def source_hash(source: str) -> str:
    """The CSP hash-source (``'sha256-…'``) of an inline ``<style>`` or ``<script>`` body."""
    digest = hashlib.sha256(source.encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode('ascii')}'"


def csp(
    *,
    scripts: Sequence[str] = (),
    script_src: Sequence[str] = (),
    connect_src: Sequence[str] = (),
    form_action: str = "https: http:",
) -> str:
    """The ``Content-Security-Policy`` for a :func:`page`: the stylesheet by hash, inline
    ``scripts`` by hash, extra ``script_src`` / ``connect_src`` sources (e.g. ``'self'``)."""
    script_sources = [*script_src, *(source_hash(s) for s in scripts)]
    parts = [
        "default-src 'none'",
        f"style-src {source_hash(STYLESHEET)}",
        "img-src data:",
    ]
    if script_sources:
        parts.append("script-src " + " ".join(script_sources))
    if connect_src:
        parts.append("connect-src " + " ".join(connect_src))
    parts += [f"form-action {form_action}", "base-uri 'none'", "frame-ancestors 'none'"]
    return "; ".join(parts)


def page(
    title: str,
    body_html: str,
    *,
    nav: Sequence[tuple[str, ...]] = (),
    current: str | None = None,
    status: str | None = None,
    lang: str = "en",
    scripts: Sequence[str] = (),
    script_urls: Sequence[str] = (),
    home: str | None = None,
    product: str = PRODUCT_NAME,
) -> str:
    """A whole HTML document: skip link, header (product name + ``nav`` of ``(href, text)``
    or ``(href, text, test_id)``; the entry whose href is ``current`` is marked
    ``aria-current="page"``), an optional
    ``status`` line announced politely (``role="status"``, WCAG 2.2 SC 4.1.3), then ``<main>``
    holding ``body_html`` (markup, escaped by the caller). ``scripts`` are inline sources that
    :func:`csp` must allow with the same list; ``script_urls`` are same-origin deferred scripts.
    """
    links = _join(
        f"<li><a href='{e(item[0])}'{_CURRENT if item[0] == current else ''}"
        f" data-testid='nav-{e(item[2] if len(item) > 2 else _slug(item[1]))}'>"
        f"{e(item[1])}</a></li>"
        for item in nav
    )
    nav_html = f"<nav aria-label='Main'><ul>{links}</ul></nav>" if nav else ""
    brand = (
        f"<a class='brand' href='{e(home)}' data-testid='brand'>{e(product)}</a>"
        if home
        else f"<span class='brand' data-testid='brand'>{e(product)}</span>"
    )
    status_html = (
        f"<p class='notice notice-ok' role='status' data-testid='page-status'>{e(status)}</p>"
        if status
        else ""
    )
    inline = "".join(f"<script>{source}</script>" for source in scripts)
    external = "".join(f"<script src='{e(url)}' defer></script>" for url in script_urls)
    return (
        f"<!doctype html><html lang='{e(lang)}'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{e(title)} · {e(product)}</title><link rel='icon' href='data:,'>"
        f"<style>{STYLESHEET}</style>{external}</head>"
        "<body><a class='skip' href='#main' data-testid='skip-link'>Skip to main content</a>"
        f"<header class='site-header' data-testid='site-header'>{brand}{nav_html}</header>"
        f"<main id='main' tabindex='-1' data-testid='main'>{status_html}{body_html}</main>"
        f"{inline}</body></html>"
    )


def _slug(text: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


STATE_LABELS: Mapping[str, str] = {
    "draft": "Draft — not submitted",
    "pending_approval": "Waiting for approval",
    "active": "Approved and active",
    "suspended": "Suspended",
    "test": "Test",
    "production": "Production",
    "submit": "Submitted for approval",
    "approve": "Approved",
    "edit": "Edited",
    "suspend": "Suspended",
    "resume": "Resumed",
    "withdraw": "Withdrawn",
}


def label(state: object) -> str:
    """Plain words for a state or enum value: ``pending_approval`` → "Waiting for approval";
    an unknown ``snake_case`` value → "Snake case"."""
    text = str(state)
    known = STATE_LABELS.get(text)
    if known is not None:
        return known
    words = text.replace("_", " ").replace(".", " ").strip()
    return words[:1].upper() + words[1:] if words else "—"


def value(item: object) -> Markup:
    """Markup for a configuration value with no Python ``repr``: ``None`` → "—", booleans →
    Yes/No, sequences → a list, mappings → a definition list, anything else escaped text."""
    if isinstance(item, Markup):
        return item
    if item is None or item == "":
        return Markup("<span class='muted'>—</span>")
    if isinstance(item, bool):
        return Markup("Yes" if item else "No")
    if isinstance(item, Mapping):
        return definition_list((label(k), value(v)) for k, v in item.items())
    if isinstance(item, list | tuple | set | frozenset):
        if not item:
            return Markup("<span class='muted'>None</span>")
        return _join(["<ul class='plain'>", *(f"<li>{value(v)}</li>" for v in item), "</ul>"])
    if isinstance(item, datetime):
        return e(when(item))
    if isinstance(item, timedelta):
        return e(_duration(item))
    return e(item)


def definition_list(pairs: Iterable[tuple[str, object]], *, test_id: str | None = None) -> Markup:
    """A ``<dl>`` of (term, value) pairs; values go through :func:`value`."""
    rows = _join(f"<dt>{e(term)}</dt><dd>{value(v)}</dd>" for term, v in pairs)
    return Markup(f"<dl class='facts'{_tid(test_id)}>{rows}</dl>")


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    caption: str | None = None,
    test_id: str | None = None,
    empty: str = "Nothing here yet.",
) -> Markup:
    """A table with header cells (``scope=col``); cells go through :func:`value`. Below
    40 rem wide each row stacks, every cell under its header's words (WCAG 2.2 SC 1.4.10)."""
    labels = [f" data-label='{e(h)}'" for h in headers]
    body = []
    for row in rows:
        cells = (
            f"<td{labels[i] if i < len(labels) else ''}>{value(c)}</td>" for i, c in enumerate(row)
        )
        body.append("<tr>" + "".join(cells) + "</tr>")
    if not body:
        return Markup(f"<p class='muted'{_tid(test_id)}>{e(empty)}</p>")
    head = "".join(f"<th scope='col'>{e(h)}</th>" for h in headers)
    cap = f"<caption>{e(caption)}</caption>" if caption else ""
    return Markup(
        f"<div class='table-wrap'><table class='stack'{_tid(test_id)}>{cap}"
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )


def technical_details(
    data: Any, *, summary: str = "Technical details", test_id: str = "technical-details"
) -> Markup:
    """``data`` as indented JSON inside a closed ``<details>`` toggle (wraps long values)."""
    text = json.dumps(data, indent=2, sort_keys=True, default=str, ensure_ascii=False)
    return Markup(
        f"<details class='tech'{_tid(test_id)}><summary>{e(summary)}</summary>"
        f"<pre>{e(text)}</pre></details>"
    )


def section(heading: str | None, body_html: str, *, test_id: str | None = None) -> Markup:
    """A card with an optional ``<h2>``."""
    head = f"<h2>{e(heading)}</h2>" if heading else ""
    return Markup(f"<section class='card'{_tid(test_id)}>{head}{body_html}</section>")


def notice(
    heading: str | None,
    lines: Sequence[str] | str,
    *,
    kind: str = "info",
    test_id: str | None = None,
) -> Markup:
    """A message box (``kind``: info, ok, warn, error); lines are text paragraphs."""
    paras = [lines] if isinstance(lines, str) else list(lines)
    head = f"<h2>{e(heading)}</h2>" if heading else ""
    body = "".join(f"<p>{e(p)}</p>" for p in paras)
    return Markup(f"<div class='notice notice-{e(kind)}'{_tid(test_id)}>{head}{body}</div>")


def button_link(
    href: str, text: str, *, secondary: bool = False, test_id: str | None = None
) -> Markup:
    """A link styled as a button."""
    css = "button secondary" if secondary else "button"
    return Markup(f"<a class='{css}' href='{e(href)}'{_tid(test_id)}>{e(text)}</a>")


def copy_field(field_id: str, field_label: str, text: str, *, hint: str | None = None) -> Markup:
    """A labelled read-only field with a Copy button (needs :data:`COPY_SCRIPT` on the page;
    without script the text is still selectable). The result is announced (SC 4.1.3)."""
    hint_html = f"<span class='hint'>{e(hint)}</span>" if hint else ""
    fid = e(field_id)
    return Markup(
        f"<label for='{fid}'>{e(field_label)}{hint_html}</label><div class='copy'>"
        f"<input type='text' id='{fid}' value='{e(text)}' readonly data-select "
        f"data-testid='{fid}'>"
        f"<button type='button' class='secondary' data-copy='{fid}' data-testid='{fid}-copy'>"
        "Copy</button>"
        f"<span id='{fid}-status' role='status' class='ok'></span></div>"
    )


def steps(names: Sequence[str], current: int, *, test_id: str = "journey-steps") -> Markup:
    """An ordered list of journey steps; those before ``current`` are done, ``current`` is
    marked "you are here" (``aria-current="step"``, in text too: WCAG 2.2 SC 1.4.1)."""
    items = []
    for index, name in enumerate(names):
        if index < current:
            items.append(f"<li class='done'>{e(name)}<span class='muted'> (done)</span></li>")
        elif index == current:
            items.append(
                f"<li aria-current='step' data-testid='{e(test_id)}-current'>{e(name)}"
                " (you are here)</li>"
            )
        else:
            items.append(f"<li>{e(name)}</li>")
    return Markup(f"<ol class='steps' aria-label='Progress'{_tid(test_id)}>{''.join(items)}</ol>")


def when(moment: datetime, zone: tzinfo | None = None) -> str:
    """``moment`` to the minute in words, e.g. "4 Dec 2026, 18:05 UTC" (``zone``: the visit's
    time zone; naive times are taken as UTC)."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    local = aware.astimezone(zone or UTC)
    name = local.tzname() or "UTC"
    return f"{local.day} {local:%b %Y, %H:%M} {name}"


def _duration(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    for unit, size in (("hour", 3600), ("minute", 60)):
        if seconds and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"
