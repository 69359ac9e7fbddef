"""One canonical form for FHIR base URLs, used at approval time *and* at launch (requirement A1).

Threat T02 (ASVS 1.5.3, RFC 9700 §2.1 exact string matching): a lookalike ``iss`` must never
map to an approved organization, and an approved organization must always be able to launch. So
there is exactly one routine, :func:`canonical_fhir_base`, and callers compare its output with
``==`` (never a prefix or ``in`` test).

Rules, in order:

* at most 2,048 characters; no control characters, whitespace, backslash or non-ASCII outside the
  host; no percent-encoding at all (``%2e%2e`` and friends create parser disagreements and a FHIR
  base never needs escapes);
* scheme ``https`` (``http`` only with ``allow_http=True``, for loopback tests);
* no userinfo, query or fragment (not even an empty ``?`` or ``#``);
* host lower-cased and converted to its IDNA 2008 A-label (a Cyrillic ``е`` becomes another
  ``xn--`` host, so it cannot match); no trailing dot; IP literals and ``localhost`` only with
  ``allow_http=True`` and only for loopback addresses (threat T01: internal hosts are refused); a
  host whose last label is a number (``0x7f.1``, ``0x7f000001``) is an IPv4 address to resolvers
  (WHATWG URL "ends in a number") and is refused like one;
* the default port (443, or 80 for http) dropped; other ports kept;
* path case preserved; no ``.``/``..`` or empty segments; one trailing slash trimmed.

The result is idempotent: ``canonical_fhir_base(canonical_fhir_base(x)) == canonical_fhir_base(x)``.
"""

from __future__ import annotations

import functools
import ipaddress
import re

import idna

from teams_ehr.errors import LaunchParameterError

__all__ = ["MAX_URL_LENGTH", "canonical_fhir_base"]

MAX_URL_LENGTH = 2048

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_PATH_CHARS = re.compile(r"^[A-Za-z0-9._~!$&'()*+,;=:@/-]*$")
_PORT = re.compile(r"^[0-9]{1,5}$")
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")
_DEFAULT_PORTS = {"https": 443, "http": 80}


def _refuse(detail: str) -> LaunchParameterError:
    # The detail names the rule only; the URL itself is attacker input and stays out of messages.
    return LaunchParameterError(f"FHIR base URL refused: {detail}", reason="bad_fhir_base")


def _check_characters(url: str) -> None:
    if not url:
        raise _refuse("empty")
    if len(url) > MAX_URL_LENGTH:
        raise _refuse("too long")
    for char in url:
        if char.isspace() or ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F:
            raise _refuse("whitespace or control character")
        if char in "\\%":
            raise _refuse("backslash or percent-encoding")


def _canonical_host(raw_host: str, *, allow_http: bool) -> str:
    if not raw_host:
        raise _refuse("no host")
    if raw_host.startswith("["):
        return _canonical_ip(raw_host, allow_http=allow_http)
    host = raw_host.lower()
    if host.endswith("."):
        raise _refuse("trailing dot in host")
    if re.fullmatch(r"[0-9.]+", host):
        return _canonical_ip(host, allow_http=allow_http)
    if _NUMERIC_LABEL.fullmatch(host.rsplit(".", 1)[-1]):
        # WHATWG URL "ends in a number": resolvers (inet_aton) read 0x7f.1 or 0x7f000001 as an
        # IPv4 address, so such a host is an IP literal in disguise (threats T01, T29)
        raise _refuse("IP literal host")
    try:
        a_label = idna.encode(host).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        raise _refuse("host is not a valid IDNA name") from None
    if (a_label == "localhost" or a_label.endswith(".localhost")) and not allow_http:
        raise _refuse("internal host")
    return a_label


def _canonical_ip(host: str, *, allow_http: bool) -> str:
    literal = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        address = ipaddress.ip_address(literal)
    except ValueError:
        raise _refuse("invalid IP literal") from None
    if not (allow_http and address.is_loopback):
        raise _refuse("IP literal host")
    return f"[{address.compressed}]" if address.version == 6 else address.compressed


def _split_authority(authority: str) -> tuple[str, str | None]:
    if "@" in authority:
        raise _refuse("userinfo")
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise _refuse("invalid IP literal")
        host, rest = authority[: end + 1], authority[end + 1 :]
        if rest and not rest.startswith(":"):
            raise _refuse("invalid authority")
        return host, (rest[1:] if rest else None)
    if ":" in authority:
        host, port = authority.split(":", 1)
        return host, port
    return authority, None


def _canonical_port(port: str | None, scheme: str) -> str:
    if port is None:
        return ""
    if not _PORT.match(port) or not 0 < int(port) <= 65535:
        raise _refuse("invalid port")
    number = int(port)
    return "" if number == _DEFAULT_PORTS[scheme] else f":{number}"


def _canonical_path(path: str) -> str:
    if not path:
        return ""
    if not _PATH_CHARS.match(path):
        raise _refuse("forbidden character in path")
    trimmed = path[:-1] if path.endswith("/") else path
    segments = trimmed.split("/")[1:]
    for segment in segments:
        if segment in ("", ".", ".."):
            raise _refuse("empty or dot segment in path")
    return trimmed


def canonical_fhir_base(url: str, *, allow_http: bool = False) -> str:
    """The canonical form of a FHIR base URL, or :class:`LaunchParameterError`.

    Use the result for every comparison, storage key and the ``aud`` parameter (SMART
    app-launch: ``aud`` is the FHIR base; threats T01/T02). Results are memoized (bounded LRU;
    refusals are not cached), since every launch canonicalizes the same few bases several times.
    """
    if not isinstance(url, str):
        raise _refuse("not a string")
    return _canonical(url, allow_http)


@functools.lru_cache(maxsize=512)
def _canonical(url: str, allow_http: bool) -> str:
    _check_characters(url)
    match = _SCHEME.match(url)
    if match is None:
        raise _refuse("not an absolute URL")
    scheme = match.group(1).lower()
    if scheme != "https" and not (scheme == "http" and allow_http):
        raise _refuse("scheme not allowed")
    rest = url[match.end() :]
    if "?" in rest or "#" in rest:
        raise _refuse("query or fragment")
    slash = rest.find("/")
    authority, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
    if any(ord(char) > 0x7E for char in path):
        raise _refuse("non-ASCII path")
    raw_host, port = _split_authority(authority)
    host = _canonical_host(raw_host, allow_http=allow_http)
    return f"{scheme}://{host}{_canonical_port(port, scheme)}{_canonical_path(path)}"
