"""Redaction for logs and error texts (SPEC E6, security.md T08).

URLs lose their query string, fragment and userinfo; a logging filter applies this to every
record of httpx, httpcore and teams_ehr, including ``httpx.URL`` arguments (httpx logs the URL
object, not a string, so a filter that checks only ``str`` misses it).
"""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit, urlunsplit

_SECRET_WORDS = re.compile(
    r"(?i)\b(access_token|refresh_token|id_token|client_assertion|client_secret|code|state|"
    r"launch|code_verifier|password|token|joinweburl)=([^&\s\"']+)"
)
_BEARER = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+")
_URL = re.compile(r"https?://[^\s\"'<>]+")
_JOIN_PATH = re.compile(r"(/j/)[A-Za-z0-9_-]{8,}")  # patient join links in access-log paths

REDACTED = "[redacted]"


def redact_url(url: object) -> str:
    """``scheme://host[:port]/path`` of ``url``: no userinfo, query or fragment."""
    parts = urlsplit(str(url))
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def redact_text(text: str) -> str:
    """Strip queries from URLs, bearer tokens and ``secret=value`` pairs out of free text."""
    text = _URL.sub(lambda m: redact_url(m.group(0)), text)
    text = _BEARER.sub(f"Bearer {REDACTED}", text)
    text = _JOIN_PATH.sub(lambda m: m.group(1) + REDACTED, text)
    return _SECRET_WORDS.sub(lambda m: f"{m.group(1)}={REDACTED}", text)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts the message and every argument of a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.args = tuple(_redact_arg(a) for a in args)
        if isinstance(record.msg, str):
            record.msg = redact_text(record.msg)
        return True


def _redact_arg(arg: object) -> object:
    if type(arg).__module__.startswith("httpx") and type(arg).__name__ == "URL":
        return redact_url(arg)  # checked by name: importing httpx here would slow the import
    if isinstance(arg, str):
        return redact_text(arg)
    if isinstance(arg, bytes):
        return REDACTED
    return arg


_FILTER = RedactingFilter()
# Logger filters are not inherited by child loggers, so every logger that emits is named here.
THIRD_PARTY_LOGGERS = (
    "httpx",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "kiota_http.middleware",
    "msgraph",
    "azure.identity",
    "azure.core.pipeline.policies.http_logging_policy",
    # hosts' access logs record request paths, and /j/<token> is a patient's join link
    "uvicorn.access",
    "werkzeug",
    "gunicorn.access",
)


def get_logger(name: str) -> logging.Logger:
    """The logger for a teams_ehr module, with redaction attached (use instead of getLogger)."""
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger


def install_redaction() -> None:
    """Attach :class:`RedactingFilter` to the third-party loggers that may see secrets."""
    for name in THIRD_PARTY_LOGGERS:
        get_logger(name)
