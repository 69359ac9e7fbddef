"""Redaction for logs and error texts (requirement E6, threat T08).

URLs lose their query string, fragment and userinfo, including ``httpx.URL`` arguments (httpx logs
the URL object, not a string, so a filter that checks only ``str`` misses it).

Scope: importing ``teams_ehr`` changes no global logging state. Our own loggers carry the filter
from :func:`get_logger`. The records of the libraries we drive (httpx, httpcore, msgraph, azure,
msal) and of the hosts' access logs are redacted once :func:`install_redaction` has run: opening a
:class:`~teams_ehr.app.TeamsEhr` runtime and mounting its routes call it, and an integrator using
a primitive alone calls it once at start-up.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

_SECRET_WORDS = re.compile(
    r"(?i)\b(access_token|refresh_token|id_token|client_assertion|client_secret|code|state|"
    r"launch|code_verifier|password|token|joinweburl)=([^&\s\"']+)"
)
_BEARER = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+")
_URL = re.compile(r"https?://[^\s\"'<>]+")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_JOIN_PATH = re.compile(r"(/j/)[A-Za-z0-9_-]{8,}")  # patient join links in access-log paths

REDACTED = "[redacted]"


def redact_url(url: object) -> str:
    """``scheme://host[:port]/path`` of ``url``: no userinfo, query or fragment.

    Total: a URL that ``urllib`` cannot parse (a bracketed host that is no IPv6 address, a port
    out of range: RFC 3986 §3.2.2–3.2.3) keeps only its scheme, so redaction never raises.
    """
    text = str(url)
    try:
        parts = urlsplit(text)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        scheme = text.partition(":")[0] if _SCHEME.match(text) else ""
        return f"{scheme}://{REDACTED}" if scheme else REDACTED
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def redact_text(text: str) -> str:
    """Strip queries from URLs, bearer tokens and ``secret=value`` pairs out of free text."""
    text = _URL.sub(lambda m: redact_url(m.group(0)), text)
    text = _BEARER.sub(f"Bearer {REDACTED}", text)
    text = _JOIN_PATH.sub(lambda m: m.group(1) + REDACTED, text)
    return _SECRET_WORDS.sub(lambda m: f"{m.group(1)}={REDACTED}", text)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts every argument of a record, then the formatted message.

    Arguments are redacted one by one (``httpx.URL`` objects, ``/j/<token>`` paths); if the
    formatted message still changes under :func:`redact_text` (``"token=%s"`` with a bare
    secret), the record carries the redacted text from then on. Access loggers keep their
    argument tuple, which their formatters unpack.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, Mapping):
            record.args = {key: _redact_arg(value) for key, value in args.items()}
        elif isinstance(args, tuple) and args:
            record.args = tuple(_redact_arg(a) for a in args)
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed record: logging reports it later
            return True
        redacted = redact_text(message)
        if redacted != message and record.name not in ACCESS_LOGGERS:
            record.msg, record.args = redacted, None
        return True


def _redact_arg(arg: object) -> object:
    if type(arg).__module__.startswith("httpx") and type(arg).__name__ == "URL":
        return redact_url(arg)  # checked by name: importing httpx here would slow the import
    if isinstance(arg, str):
        return redact_text(arg)
    if isinstance(arg, bytes):
        return REDACTED
    return arg


ACCESS_LOGGERS = frozenset({"uvicorn.access", "gunicorn.access"})
_FILTER = RedactingFilter()
# Logger filters are not inherited by child loggers, so records are redacted when they are made:
# every record of these loggers and their children (``azure.identity._internal.…``) included.
REDACTED_LOGGERS = (
    "teams_ehr",
    "httpx",
    "httpcore",
    "kiota_http",
    "kiota_abstractions",
    "msgraph",
    "msgraph_core",
    "azure",
    "msal",
    # hosts' access logs record request paths, and /j/<token> is a patient's join link
    "uvicorn.access",
    "werkzeug",
    "gunicorn.access",
)


def _covered(name: str) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in REDACTED_LOGGERS)


def get_logger(name: str) -> logging.Logger:
    """The logger for a teams_ehr module, with redaction attached (use instead of getLogger)."""
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger


def install_redaction() -> None:
    """Redact every record of :data:`REDACTED_LOGGERS` and their children when it is made.

    An explicit, process-wide step (never run on import): the runtime's open and the route mount
    call it. Chains the current ``logging`` record factory (another library's factory keeps
    working) and is idempotent; records of other loggers are left alone. Logger filters would not
    do: a filter on ``httpcore`` never sees the records of ``httpcore.connection``.
    """
    previous = logging.getLogRecordFactory()
    if getattr(previous, "teams_ehr_redacting", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if _covered(record.name):
            _FILTER.filter(record)
        return record

    factory.teams_ehr_redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
