"""Totality of the link parsers: Epic context-aware links (Epic "FDI" context tokens, AES-CBC,
docs/guides/ehr-analyst.md) and patient join tokens (the ``/j/<token>`` path, docs/security.md
T20)."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode

from fuzz_support import NOW, PLAIN_TEXT, TEXT, MemoryNonces, assert_total
from hypothesis import example, given
from hypothesis import strategies as st

from teams_ehr.smart.epic_context_link import (
    ContextLinkFormat,
    ContextLinkKey,
    EpicContextLink,
    decrypt_context_link,
    encrypt_context_link,
)
from teams_ehr.store.protocol import JoinLinkRow
from teams_ehr.visits.joinlinks import JoinLinkService, token_hash

KEY = ContextLinkKey(bytes(range(32)))
FORMATS = st.builds(
    ContextLinkFormat,
    iv_mode=st.sampled_from(["prefixed", "zero"]),
    require_timestamp=st.booleans(),
)
FIELD_NAMES = [
    "sessionId",
    "csn",
    "conferenceId",
    "departmentId",
    "department",
    "patient",
    "encounter",
    "appointment",
    "timestamp",
    "epicTimestamp",
    "TIMESTAMP",
]
FIELD_VALUES = st.one_of(
    PLAIN_TEXT,
    st.sampled_from(
        [
            "99991231235959",
            "00010101000000",
            "20300501150000",
            "9999999999",
            "0000000000",
            "1904659200",
            str(int(NOW.timestamp())),
            "abc-123",
        ]
    ),
)
PLAINTEXTS = st.one_of(
    PLAIN_TEXT,
    st.dictionaries(st.sampled_from(FIELD_NAMES) | PLAIN_TEXT, FIELD_VALUES, max_size=5).map(
        urlencode
    ),
    st.lists(st.tuples(st.sampled_from(FIELD_NAMES), FIELD_VALUES), max_size=4).map(
        lambda pairs: "&".join(f"{k}={v}" for k, v in pairs)
    ),
)


@given(FORMATS, PLAINTEXTS, st.booleans())
def test_decrypted_context_links_are_total(
    link_format: ContextLinkFormat, plaintext: str, urlsafe: bool
) -> None:
    encrypted = encrypt_context_link(
        plaintext,
        KEY,
        iv_mode=link_format.iv_mode,
        urlsafe=urlsafe,
    )
    result = assert_total(
        decrypt_context_link,
        encrypted,
        KEY,
        now=NOW,
        max_age=timedelta(minutes=5),
        nonces=MemoryNonces(),
        link_format=link_format,
    )
    assert not isinstance(result, EpicContextLink) or result.session_id


@given(FORMATS, TEXT | st.binary(max_size=80).map(lambda b: b.hex()))
def test_raw_context_link_values_are_total(link_format: ContextLinkFormat, value: str) -> None:
    assert_total(
        decrypt_context_link,
        value,
        KEY,
        now=NOW,
        max_age=timedelta(minutes=5),
        nonces=MemoryNonces(),
        link_format=link_format,
    )


class _OneLink:
    """A join-link store holding one valid link."""

    def __init__(self, token: str) -> None:
        self.row = JoinLinkRow(
            token_hash(token),
            "org-a",
            "ext-1",
            NOW - timedelta(minutes=5),
            NOW + timedelta(hours=1),
        )

    async def get_join_link(self, digest: str) -> JoinLinkRow | None:
        return self.row if digest == self.row.token_hash else None


VALID_TOKEN = "A" * 43
TOKENS = st.one_of(
    TEXT,
    st.just(VALID_TOKEN),
    st.text(st.sampled_from("Aa0_-.~=+/%\x00é\ud800"), min_size=40, max_size=46),
)


@given(TOKENS, TEXT)
@example(VALID_TOKEN, "\ud800")
def test_join_tokens_are_total(token: str, client_key: str) -> None:
    service = JoinLinkService(_OneLink(VALID_TOKEN), MemoryNonces(), clock=lambda: NOW)  # type: ignore[arg-type]
    assert_total(service.resolve, token, client_key=client_key)
