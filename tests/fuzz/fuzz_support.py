"""Shared pieces of the parser totality properties (tests/fuzz/).

The contract every parser of outside input keeps: it returns, or it raises a
:class:`~teams_ehr.errors.TeamsEhrError` — never a ``KeyError``, ``RecursionError``,
``OverflowError``, pydantic ``ValidationError`` … (docs/errors.md). :func:`assert_total` checks
one call; :func:`run_flow` drives a sans-IO flow (docs/primitives/sansio.md) with answers a
strategy made up; the strategies below make hostile wire data: arbitrary JSON, JSON shaped like
the document a parser expects with every value arbitrary, raw bytes, and the classic parser
killers (deep nesting, ``NaN``, huge numbers, lone surrogates, odd Unicode digits).

Every property is a plain synchronous ``@given`` test, so the fuzz harnesses in ``fuzz/`` at the
repository root can drive the same test through ``test.hypothesis.fuzz_one_input``.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import anyio
import httpx
from hypothesis import strategies as st

from teams_ehr.errors import TeamsEhrError

T = TypeVar("T")

NOW = datetime(2030, 5, 1, 15, 0, tzinfo=UTC)


class NotTotalError(AssertionError):
    """A parser let an exception other than a ``TeamsEhrError`` escape."""


def assert_total(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` (awaiting it when it is a coroutine function); return its result or the
    ``TeamsEhrError`` it raised. Any other exception fails with :class:`NotTotalError`."""
    try:
        result = fn(*args, **kwargs)
        if inspect.isawaitable(result):
            result = anyio.run(_awaited, result)
    except TeamsEhrError as exc:
        return exc
    except Exception as exc:
        name = getattr(fn, "__qualname__", repr(fn))
        raise NotTotalError(f"{name} raised {type(exc).__name__}: {exc!r:.300}") from exc
    return result


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable


Responder = Callable[[httpx.Request], httpx.Response]


def run_flow(flow: Generator[httpx.Request, httpx.Response, T], respond: Responder) -> T:
    """Drive a sans-IO flow to its end, answering each request with ``respond(request)``."""
    try:
        request = next(flow)
        for _ in range(50):
            request = flow.send(respond(request))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    raise AssertionError("the flow sent more than 50 requests")


def answers(responses: Sequence[httpx.Response]) -> Responder:
    """A responder that answers with ``responses`` in turn, repeating the last one."""
    queue = list(responses)

    def respond(request: httpx.Request) -> httpx.Response:
        template = queue.pop(0) if len(queue) > 1 else queue[0]
        return httpx.Response(
            template.status_code,
            headers=template.headers.raw,
            content=template.content,
            request=request,
        )

    return respond


# -- strategies -----------------------------------------------------------------------------------

ODD_TEXT = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "\ud800",  # a lone surrogate: valid in JSON text and Python str, not encodable as UTF-8
        "²",  # str.isdigit() is True, int() refuses it
        "٣",  # an Arabic-Indic digit: int() accepts it
        "9" * 30,
        "-1",
        "1e400",
        "NaN",
        "https://[",
        "https://h:99999/",
        "%",
        "%ZZ",
        "%ED%A0%80",
        "a" * 300,
        "\r\n",
        "null",
    ]
)
TEXT = st.one_of(st.text(max_size=40), ODD_TEXT)
PLAIN_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
"""Text a peer can encode as UTF-8 (no lone surrogates)."""

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([10**30, -(10**30), 2**63, 10**400]),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(TEXT, children, max_size=4)
    ),
    max_leaves=12,
)


def shaped(
    keys: Sequence[str], values: st.SearchStrategy[Any] = JSON_VALUES
) -> st.SearchStrategy[dict[str, Any]]:
    """A JSON object with any subset of ``keys`` (the ones a parser reads), each any value."""
    return st.fixed_dictionaries({}, optional=dict.fromkeys(keys, values))


def _deep(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


KILLER_BODIES = st.sampled_from(
    [
        b"",
        b"[" * 100_000,
        b'{"a":' * 50_000,
        _deep(40),
        b"NaN",
        b'{"x": NaN, "y": Infinity}',
        b"1" * 5000,
        b'"\\ud800"',
        b"\xff\xfe\x00",
        b"null",
        b"[]",
        b"{}",
    ]
)


def json_bodies(document: st.SearchStrategy[Any] = JSON_VALUES) -> st.SearchStrategy[bytes]:
    """A response or request body: ``document`` as JSON, raw bytes, or a known parser killer."""
    encoded = document.map(lambda doc: json.dumps(doc).encode("utf-8", "surrogatepass"))
    return st.one_of(encoded, KILLER_BODIES, st.binary(max_size=64))


HEADER_VALUES = st.one_of(
    st.text(
        st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
        max_size=30,
    ),
    st.sampled_from(
        [
            "9" * 40,
            "²",
            "-5",
            "0",
            "max-age=" + "9" * 40,
            "max-age=²",
            "no-store",
            "Wed, 21 Oct 2015 07:28:00 GMT",
            "Mon, 01 Jan 0001 00:00:00 -2359",
            "Fri, 31 Dec 9999 23:59:59 +2359",
            "Fri, 31 Dec 9999 23:59:59 GMT",
            "1" * 20,
        ]
    ),
)


def headers_for(names: Sequence[str]) -> st.SearchStrategy[list[tuple[str, str]]]:
    """Response headers: any subset of ``names`` with odd values (latin-1, no CR/LF)."""
    return st.lists(st.tuples(st.sampled_from(list(names)), HEADER_VALUES), max_size=3)


STATUSES = st.one_of(
    st.sampled_from([200, 201, 204, 301, 400, 401, 403, 404, 409, 412, 429, 500, 503]),
    st.integers(100, 599),
)


def responses(
    body: st.SearchStrategy[bytes],
    *,
    status: st.SearchStrategy[int] = STATUSES,
    header_names: Sequence[str] = ("retry-after", "content-type", "location"),
) -> st.SearchStrategy[httpx.Response]:
    """An ``httpx.Response`` with a fuzzed status, headers and body."""
    return st.builds(
        lambda code, headers, content: httpx.Response(
            code, headers=[(k, v.encode("latin-1")) for k, v in headers], content=content
        ),
        status,
        headers_for(header_names),
        body,
    )


def form_params(keys: Sequence[str]) -> st.SearchStrategy[Mapping[str, str]]:
    """A decoded query or form: any subset of ``keys`` (and a stray one) with odd text values."""
    return st.fixed_dictionaries({}, optional=dict.fromkeys((*keys, "zz"), TEXT))


class MemoryNonces:
    """An in-memory ``NonceStore``: ``remember_once`` is true once per key; hits are counted."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, str]] = set()
        self.hits: dict[str, int] = {}

    async def remember_once(self, namespace: str, key: str, *, expires_at: datetime) -> bool:
        if (namespace, key) in self.seen:
            return False
        self.seen.add((namespace, key))
        return True

    async def count_hit(self, bucket: str, *, window_start: datetime) -> int:
        slot = f"{bucket}@{window_start.isoformat()}"
        self.hits[slot] = self.hits.get(slot, 0) + 1
        return self.hits[slot]
