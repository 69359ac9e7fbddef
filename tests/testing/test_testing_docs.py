"""docs/testing.md's examples are the suite's own tests: extracted and run as written (SPEC E1, E5).

Every ``python`` block of the page names the file it is (``# myapp.py (FastAPI)``); the test
writes those files into a fresh directory and runs them: the three integrator scenarios under
pytest on each host factory, on asyncio and trio, and the script that uses the harness without
pytest. A change that breaks the page's code breaks these tests.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[2] / "docs" / "testing.md"
STRICT = ("-p", "no:cacheprovider", "--strict-markers", "-W", "error")
_BLOCK = re.compile(r"^```python\n(?P<code>.*?)^```", re.MULTILINE | re.DOTALL)
_NAME = re.compile(r"# (?P<file>\w+\.py)(?: \((?P<variant>[^)]+)\))?\n")


def _files() -> dict[tuple[str, str | None], str]:
    """(file name, variant) → code, for every python block of the page."""
    files: dict[tuple[str, str | None], str] = {}
    for block in _BLOCK.finditer(PAGE.read_text(encoding="utf-8")):
        name = _NAME.match(block["code"])
        assert name is not None, f"unnamed python block in {PAGE.name}:\n{block['code'][:200]}"
        files[(name["file"], name["variant"])] = block["code"]
    return files


def test_every_python_block_is_a_file_this_module_runs() -> None:
    assert set(_files()) == {
        ("myapp.py", "FastAPI"),
        ("myapp.py", "Flask"),
        ("test_visits.py", None),
        ("check_visit.py", None),
    }


@pytest.mark.parametrize("variant", ["FastAPI", "Flask"])
def test_the_three_scenarios_pass_on_each_host(pytester: pytest.Pytester, variant: str) -> None:
    files = _files()
    pytester.makepyfile(
        myapp=files[("myapp.py", variant)], test_visits=files[("test_visits.py", None)]
    )
    result = pytester.runpytest(*STRICT, "-v")
    result.assert_outcomes(passed=6)  # three scenarios x (asyncio, trio)
    result.stdout.fnmatch_lines(["*test_a_launch_from_an_unknown_ehr_is_refused*trio*PASSED*"])


def test_the_harness_runs_without_pytest(pytester: pytest.Pytester) -> None:
    files = _files()
    pytester.makepyfile(
        myapp=files[("myapp.py", "FastAPI")], check_visit=files[("check_visit.py", None)]
    )
    result = pytester.runpython(pytester.path / "check_visit.py")
    assert result.ret == 0, result.stderr.str()[-2000:]
