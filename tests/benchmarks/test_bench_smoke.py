"""The benchmark scripts run (SPEC P1–P5): each one, with tiny sizes, in its own interpreter.

No timing is asserted here (performance lives in ``benchmarks/`` as ratios). The scripts run from
a copy of ``benchmarks/`` in a temporary directory (``run_all.copy_benchmarks``), so their
results files land there and the committed ``benchmarks/results`` stay untouched. The summary of ``run_all.py`` is checked against the real results
files, so a change in a script's markdown that the summary can no longer read fails here.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"


def _run_all() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_all", BENCHMARKS / "run_all.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("run_all", module)
    spec.loader.exec_module(module)
    return module


RUN_ALL = _run_all()
TINY = {script: (output, tiny) for script, output, _, tiny in RUN_ALL.SCRIPTS}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory: Path = RUN_ALL.copy_benchmarks(tmp_path_factory.mktemp("bench"))
    return directory


def test_every_script_is_listed_in_run_all() -> None:
    scripts = {path.name for path in BENCHMARKS.glob("bench_*.py")}
    assert scripts == set(TINY)


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(TINY))
def test_benchmark_runs_with_tiny_sizes(script: str, workdir: Path) -> None:
    if script == "bench_smart_launch.py":
        pytest.importorskip("fhirclient", reason="bench_smart_launch compares with fhirclient")
    output, tiny = TINY[script]
    done = subprocess.run(
        [sys.executable, str(workdir / script), *tiny],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=workdir.parent,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    markdown = (workdir / "results" / output).read_text()
    assert markdown.startswith("# ")
    assert "|---|" in markdown


@pytest.mark.parametrize("goal", ["P1", "P2", "P3", "P4", "P5"])
def test_summary_reads_every_goal_from_the_results(goal: str) -> None:
    results = BENCHMARKS / "results"
    runs = {
        script: RUN_ALL.ScriptRun(script, 1.0, 0, (results / output).read_text(), "")
        for script, (output, _) in TINY.items()
        if (results / output).exists()
    }
    if len(runs) != len(TINY):
        pytest.fail(f"missing results files: {sorted(set(TINY) - set(runs))}")
    summary = RUN_ALL.summarize(runs, 5.0, quick=False)
    lines = [line for line in summary.splitlines() if line.startswith(f"| {goal} |")]
    assert lines
    for line in lines:
        assert "n/a (not found" not in line, line
        assert line.rstrip(" |").rsplit("| ", 1)[-1] in {"PASS", "MISS", "reported"}


def test_run_all_quick_writes_a_summary_without_touching_the_results(tmp_path: Path) -> None:
    before = {p.name: p.read_bytes() for p in (BENCHMARKS / "results").glob("*.md")}
    summary = tmp_path / "README.md"
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "run_all.py"), "--quick", "--only", "bench_import.py",
         "--summary", str(summary)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    text = summary.read_text()
    assert "| P1 | `import teams_ehr`" in text
    assert "## Machine" in text
    assert "| bench_import.py | `--runs 2` |" in text
    assert {p.name: p.read_bytes() for p in (BENCHMARKS / "results").glob("*.md")} == before


def test_summary_marks_a_missing_result_instead_of_inventing_one() -> None:
    runs = {"bench_import.py": RUN_ALL.ScriptRun("bench_import.py", 1.0, 1, "", "boom")}
    summary = RUN_ALL.summarize(runs, 1.0, quick=True)
    assert "| P1 |" in summary
    assert "n/a (not found in import.md)" in summary
    assert "boom" in summary
