"""Every citation in the code resolves inside this repository or names a public source.

Docstrings and comments cite requirements, design rules, threats, reliability cases and delivery
invariants by id. A maintainer with only this repository must be able to follow each one, so:

* ``requirement C1`` / ``requirements A1–A9`` → an anchor on ``docs/design/requirements.md``;
* ``design rule 3`` / ``design rules 3 and 7`` → an anchor on ``docs/design/architecture.md``;
* ``threat T26``, ``reliability case R20``, ``invariant I3`` → a row of ``docs/security.md``;
* ``docs/<page>.md#anchor`` → that page, with that anchor;
* a bare id (``(C6)``, ``T25``) must say what it is: ``requirement C6``, ``threat T25``;
* files that are not part of the product (the specification, design notes and research notes
  the project started from) are never cited: cite the public standard (RFC, SMART App Launch,
  OpenID Connect, Microsoft Graph or Epic documentation) or a page under ``docs/``.

Ids are checked in docstrings and comments; references to outside files anywhere in the file.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SCANNED = (ROOT / "src" / "teams_ehr", ROOT / "examples", ROOT / "benchmarks")

REQUIREMENTS_PAGE = "docs/design/requirements.md"
ARCHITECTURE_PAGE = "docs/design/architecture.md"
SECURITY_PAGE = "docs/security.md"

# -- what the docs pages define -------------------------------------------------------------------

_RAW_ID = re.compile(r"""<[^>]*\bid=["']([^"']+)["']""")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
_TAG = re.compile(r"<[^>]+>")
_ROW_ID = re.compile(r"^\| ([TRI]\d{1,2}) \|", re.MULTILINE)


def _slug(heading: str) -> str:
    """The anchor MkDocs (Python-Markdown ``toc``) gives a heading."""
    text = unicodedata.normalize("NFKD", _TAG.sub("", heading)).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


@cache
def anchors(page: str) -> frozenset[str]:
    """Every anchor of a docs page (``docs/…md``): explicit ``id`` attributes and heading slugs."""
    path = ROOT / page
    if not path.is_file():
        return frozenset()
    text = path.read_text(encoding="utf-8")
    found = set(_RAW_ID.findall(text))
    found.update(_slug(heading) for heading in _HEADING.findall(text))
    return frozenset(found)


@cache
def requirement_ids() -> frozenset[str]:
    return frozenset(
        anchor.upper()
        for anchor in anchors(REQUIREMENTS_PAGE)
        if re.fullmatch(r"[a-fp]\d{1,2}", anchor)
    )


@cache
def design_rules() -> frozenset[int]:
    return frozenset(
        int(anchor[5:])
        for anchor in anchors(ARCHITECTURE_PAGE)
        if re.fullmatch(r"rule-\d+", anchor)
    )


@cache
def security_ids() -> frozenset[str]:
    """Threats, reliability cases and delivery invariants: the id column of docs/security.md."""
    return frozenset(_ROW_ID.findall((ROOT / SECURITY_PAGE).read_text(encoding="utf-8")))


# -- the citation grammar -------------------------------------------------------------------------

_SEP = r"(?:\s*(?:,|/|–|-|\band\b|\bor\b)\s*)"
_KINDS = {
    "requirement": (r"(?:[A-F]\d{1,2}|P\d)", REQUIREMENTS_PAGE),
    "threat": (r"T\d{2}", SECURITY_PAGE),
    "reliability case": (r"R\d{2}", SECURITY_PAGE),
    "invariant": (r"I\d", SECURITY_PAGE),
}
_GROUPS = {
    kind: re.compile(
        r"\b" + kind.replace(" ", r"\s+") + rf"s?\s+(?P<ids>{pattern}(?:{_SEP}{pattern})*)(?!\w)",
        re.IGNORECASE,
    )
    for kind, (pattern, _) in _KINDS.items()
}
_RULES = re.compile(
    r"\bdesign\s+rules?\s+(?P<nums>\d+(?:\s*(?:,|–|-|\band\b|\bor\b)\s*\d+)*)", re.IGNORECASE
)
_BARE = re.compile(r"(?<![\w#.-])(?:[A-F]\d{1,2}|P\d|[TR]\d{2}|I\d)(?!\w)")
_DOCS_LINK = re.compile(r"(?<![\w/])docs/(?P<page>[\w/.-]+?\.md)(?:#(?P<anchor>[\w-]+))?")
_WORK_PACKAGE = re.compile(r"\bH\d{1,2}[a-z]?\b")
_DESIGN_NOTE = re.compile(r"\bdesign note\b", re.IGNORECASE)

_REQUIREMENT_FIX = "write 'requirement C1' / 'requirements A1–A9' (docs/design/requirements.md)"
_OUTSIDE = (
    (
        re.compile(r"\bSPEC\b"),
        "the product specification is not in this repository; " + _REQUIREMENT_FIX,
    ),
    (
        re.compile(r"\bDESIGN\.md\b"),
        "the design note is not in this repository; write 'design rule 3' "
        "(docs/design/architecture.md)",
    ),
    (
        re.compile(r"\.\./shared\b|(?<![\w/])seed/"),
        "not part of the product; cite the public source (e.g. "
        "learn.microsoft.com/microsoft-365/frontline/ehr-admin-epic)",
    ),
    (
        re.compile(r"(?<![\w/\"'])(?:reference/)?(?:graph|smart-epic|style-anchors)\.md"),
        "research notes are not in this repository; cite the public page they summarise "
        "(learn.microsoft.com/graph/…, fhir.epic.com/Documentation?docId=oauth2, hl7.org/fhir/…)",
    ),
    (
        re.compile(r"(?<![\w/\"'])(?:reference/)?security\.md", re.IGNORECASE),
        "ambiguous file reference; write 'threat T26', 'reliability case R20', 'invariant I3' "
        "or docs/security.md#<anchor>",
    ),
)


def _expand(ids: str) -> Iterator[str]:
    """The ids of a list such as ``A1–A4, B2`` or ``3 and 7`` (ranges expanded)."""
    for item in re.split(r"\s*(?:,|/|\band\b|\bor\b)\s*", ids):
        ends = [end.strip() for end in re.split(r"[–-]", item) if end.strip()]
        bounds = [re.fullmatch(r"([A-Z]?)(\d+)", end) for end in ends]
        if len(bounds) == 2 and bounds[0] and bounds[1] and bounds[0][1] == bounds[1][1]:
            prefix, first, last = bounds[0][1], bounds[0][2], bounds[1][2]
            width = len(first) if first.startswith("0") else 0
            yield from (f"{prefix}{n:0{width}d}" for n in range(int(first), int(last) + 1))
        else:
            yield from ends


# -- scanning -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Region:
    """A docstring or a comment: where citations by id live."""

    line: int
    text: str

    def line_of(self, offset: int) -> int:
        return self.line + self.text.count("\n", 0, offset)


def regions(source: str) -> list[Region]:
    """Docstrings (and attribute docstrings) and comments of a Python source."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return [Region(1, source)]
    found: list[Region] = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            segment = ast.get_source_segment(source, node.value)
            if segment is not None:
                found.append(Region(node.value.lineno, segment))
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.COMMENT:
                found.append(Region(token.start[0], token.string))
    except (tokenize.TokenError, SyntaxError):
        pass
    return found


def _problem(name: str, line: int, text: str, fix: str) -> str:
    return f"{name}:{line}: {text!r}: {fix}"


def check_source(source: str, name: str) -> list[str]:
    """Every unresolvable citation of one Python source, as ``file:line: 'text': fix``."""
    problems: list[str] = []
    for number, line in enumerate(source.splitlines(), start=1):
        for pattern, fix in _OUTSIDE:
            for match in pattern.finditer(line):
                problems.append(_problem(name, number, match.group(), fix))
    for region in regions(source):
        problems.extend(_check_region(region, name))
    return sorted(set(problems), key=lambda problem: (int(problem.split(":")[1]), problem))


def _check_region(region: Region, name: str) -> Iterator[str]:
    text = region.text
    covered: list[tuple[int, int]] = []
    known = {
        kind: requirement_ids() if page == REQUIREMENTS_PAGE else security_ids()
        for kind, (_, page) in _KINDS.items()
    }
    for kind, group in _GROUPS.items():
        page = _KINDS[kind][1]
        for match in group.finditer(text):
            covered.append(match.span("ids"))
            for cited in _expand(match["ids"]):
                if cited not in known[kind]:
                    yield _problem(
                        name,
                        region.line_of(match.start()),
                        f"{kind} {cited}",
                        f"no such {kind} on {page}; cite one that is there, or add it",
                    )
    for match in _RULES.finditer(text):
        for cited in _expand(match["nums"]):
            if int(cited) not in design_rules():
                yield _problem(
                    name,
                    region.line_of(match.start()),
                    f"design rule {cited}",
                    f"no such rule on {ARCHITECTURE_PAGE}",
                )
    for match in _BARE.finditer(text):
        if not any(start <= match.start() < end for start, end in covered):
            cited = match.group()
            kind = next(
                kind for kind, (pattern, _) in _KINDS.items() if re.fullmatch(pattern, cited)
            )
            yield _problem(
                name,
                region.line_of(match.start()),
                cited,
                f"say what the id is: write '{kind} {cited}' ({_KINDS[kind][1]})",
            )
    for match in _DOCS_LINK.finditer(text):
        page = f"docs/{match['page']}"
        if not (ROOT / page).is_file():
            yield _problem(name, region.line_of(match.start()), match.group(), "no such docs page")
        elif match["anchor"] and match["anchor"] not in anchors(page):
            yield _problem(
                name, region.line_of(match.start()), match.group(), f"no such anchor on {page}"
            )
    for pattern, fix in (
        (_WORK_PACKAGE, "an internal work-package id; name the module or class instead"),
        (_DESIGN_NOTE, "cite a design rule (docs/design/architecture.md) or a docs/ page"),
    ):
        for match in pattern.finditer(text):
            yield _problem(name, region.line_of(match.start()), match.group(), fix)


def python_files(roots: Iterable[Path]) -> Iterator[Path]:
    for root in roots:
        yield from sorted(path for path in root.rglob("*.py") if "__pycache__" not in path.parts)


def scan(roots: Iterable[Path], relative_to: Path = ROOT) -> list[str]:
    """The problems of every ``.py`` file under ``roots``, named relative to ``relative_to``."""
    problems: list[str] = []
    for path in python_files(roots):
        name = (
            path.relative_to(relative_to).as_posix()
            if path.is_relative_to(relative_to)
            else str(path)
        )
        problems.extend(check_source(path.read_text(encoding="utf-8"), name))
    return problems


# -- tests ----------------------------------------------------------------------------------------


def test_the_design_pages_define_every_requirement_and_rule() -> None:
    expected = {
        f"{letter}{number}"
        for letter, count in {"A": 10, "B": 6, "C": 6, "D": 7, "E": 6, "F": 8, "P": 5}.items()
        for number in range(1, count + 1)
    }
    assert requirement_ids() == expected, sorted(expected ^ requirement_ids())
    assert design_rules() == set(range(1, 13))
    assert "data-flow" in anchors(ARCHITECTURE_PAGE)
    expected_security = {f"T{n:02d}" for n in range(1, 35)} | {f"R{n:02d}" for n in range(1, 26)}
    expected_security |= {f"I{n}" for n in range(1, 8)}
    assert security_ids() == expected_security, sorted(expected_security ^ security_ids())
    assert {"delivery-invariants", "attendance-pipeline"} <= anchors(SECURITY_PAGE)


def test_every_citation_in_the_code_resolves() -> None:
    problems = scan(SCANNED)
    assert not problems, f"{len(problems)} citations do not resolve:\n" + "\n".join(problems)


def test_the_checker_accepts_the_resolving_forms() -> None:
    source = '''"""Launch (requirements A1–A9, C3; requirement B2 "start/end"; threat T26; threats T22–T24, T34).

Reliability cases R01/R02 and invariants I3 and I7; design rules 3 and 7; design rule 12;
docs/security.md#attendance-pipeline, docs/design/requirements.md#c4, RFC 9700 §4.4; ES384,
RS384, A128GCM, 2030-05-01T15:00:00Z, FHIR R4, H(report | record).
"""

X = "P1 C6 T25 results/graph.md"  # Invariant I1: durable before the 202 (reliability case R07).
'''
    assert check_source(source, "ok.py") == []


def test_the_checker_names_each_unresolvable_citation_and_its_fix() -> None:
    source = '''"""Launch (SPEC C1; DESIGN.md rule 3; security.md T26; smart-epic.md §2.1).

Requirement F9 and threat T35, design rule 13, reliability case R99, docs/nowhere.md,
docs/security.md#nowhere; graph.md §1.4; ../shared/SPEC.md; over H3's client.
"""


def f() -> None:
    """Roster (D3, C6; T25) and the outbox (I6)."""  # requirement A7, T11
'''
    problems = check_source(source, "bad.py")
    expected = [
        ("bad.py:1: 'SPEC'", "requirement C1"),
        ("bad.py:1: 'DESIGN.md'", "design rule 3"),
        ("bad.py:1: 'security.md'", "threat T26"),
        ("bad.py:1: 'smart-epic.md'", "fhir.epic.com"),
        ("bad.py:1: 'C1'", "write 'requirement C1'"),
        ("bad.py:1: 'T26'", "write 'threat T26'"),
        ("bad.py:3: 'requirement F9'", "no such requirement on docs/design/requirements.md"),
        ("bad.py:3: 'threat T35'", "no such threat on docs/security.md"),
        ("bad.py:3: 'design rule 13'", "no such rule"),
        ("bad.py:3: 'reliability case R99'", "no such reliability case"),
        ("bad.py:3: 'docs/nowhere.md'", "no such docs page"),
        ("bad.py:4: 'docs/security.md#nowhere'", "no such anchor"),
        ("bad.py:4: 'graph.md'", "learn.microsoft.com/graph"),
        ("bad.py:4: '../shared'", "not part of the product"),
        ("bad.py:4: 'SPEC'", "requirement C1"),
        ("bad.py:4: 'H3'", "work-package"),
        ("bad.py:9: 'D3'", "write 'requirement D3'"),
        ("bad.py:9: 'C6'", "write 'requirement C6'"),
        ("bad.py:9: 'T25'", "write 'threat T25'"),
        ("bad.py:9: 'I6'", "write 'invariant I6'"),
        ("bad.py:9: 'T11'", "write 'threat T11'"),
    ]
    for where, fix in expected:
        assert any(problem.startswith(where) and fix in problem for problem in problems), (
            where,
            fix,
            problems,
        )
    assert len(problems) == len(expected), problems
