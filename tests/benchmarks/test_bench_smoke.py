"""The benchmark scripts run (SPEC P1–P5): each one, with tiny sizes, in its own interpreter.

No timing is asserted here (performance lives in ``benchmarks/`` as ratios). The scripts run from
a copy of ``benchmarks/`` in a temporary directory (``run_all.copy_benchmarks``), so their
results files land there and the committed ``benchmarks/results`` stay untouched. The summary of
``run_all.py`` is checked against the real results files, so a change in a script's markdown that
the summary can no longer read fails here; and against hand-written results, so a burst with a
visit left without its subscription can never read as met.
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
        assert line.rstrip(" |").rsplit("| ", 1)[-1] in {"met", "NOT met", "reported"}


def test_run_all_quick_writes_a_summary_without_touching_the_results(tmp_path: Path) -> None:
    before = {p.name: p.read_bytes() for p in (BENCHMARKS / "results").glob("*.md")}
    summary = tmp_path / "README.md"
    done = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "run_all.py"),
            "--quick",
            "--only",
            "bench_import.py",
            "--summary",
            str(summary),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = summary.read_text()
    assert "| P1 | `import teams_ehr.app` + the Starlette integration" in text
    assert "## Machine" in text
    assert "| bench_import.py | `--runs 1` |" in text
    assert {p.name: p.read_bytes() for p in (BENCHMARKS / "results").glob("*.md")} == before


def test_summary_marks_a_missing_result_instead_of_inventing_one() -> None:
    runs = {"bench_import.py": RUN_ALL.ScriptRun("bench_import.py", 1.0, 1, "", "boom")}
    summary = RUN_ALL.summarize(runs, 1.0, quick=True)
    assert "| P1 |" in summary
    assert "n/a (not found in import.md)" in summary
    assert "boom" in summary


def _clinic_burst() -> ModuleType:
    if "bench_clinic_burst" in sys.modules:
        return sys.modules["bench_clinic_burst"]
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))  # it imports bench_floor as a sibling script
    spec = importlib.util.spec_from_file_location(
        "bench_clinic_burst", BENCHMARKS / "bench_clinic_burst.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_clinic_burst"] = module  # dataclasses resolve annotations through it
    spec.loader.exec_module(module)
    return module


BURST_HEADER = (
    "| fakes | store | launches | meetings | subscriptions | failures | all succeeded | launches/s "
    "| p50 ms | p99 ms | s until last subscription | CPU ms / launch (process) | of which fakes "
    "| host CPU ms / launch | floor ms | host / floor | discovery fetches | JWKS fetches |\n"
    + "|---" * 18
    + "|\n"
)


def test_a_burst_with_a_visit_left_without_subscription_is_not_met() -> None:
    md = BURST_HEADER + (
        "| peers | sqlite | 1000 | 1000 | 998 | 2 | NO | 200 | 1 | 2 | 3.0 | 5.0 | 0.1 | 4.9 "
        "| 4.00 | 1.22 | 1 | 1 |\n"
    )
    rows = RUN_ALL.p3_rows(md)
    counted = [r for r in rows if "meetings / subscriptions / failures" in r.measure]
    assert [(r.value, r.status) for r in counted] == [("1000 / 998 / 2", "NOT met")]
    cpu = [r for r in rows if "library CPU" in r.measure]
    assert [(r.ratio, r.status) for r in cpu] == [("1.22", "met")]


def test_the_burst_counts_a_meeting_without_subscription_as_a_failure() -> None:
    burst = _clinic_burst()
    run = burst.Run(transport="peers", store="sqlite", launches=3, meetings=3, subscribed=2)
    assert run.failed == 1
    assert not run.all_succeeded
    run.subscribed = 3
    assert run.all_succeeded
    run.failures["TimeoutError"] += 1
    assert run.failed == 1
    assert not run.all_succeeded


def test_the_ledger_charges_fakes_only_their_own_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nested steps: a fake calling back into host code is charged its own time only."""
    burst = _clinic_burst()
    clock = iter(range(100))
    monkeypatch.setattr(burst.time, "process_time", lambda: float(next(clock)))
    ledger = burst.Ledger()

    def host() -> str:
        next(clock)  # host code spends 1 tick (plus its own enter/leave reads)
        return "host"

    def fake() -> str:
        return ledger.call(False, host)

    assert ledger.call(True, fake) == "host"
    # fake: enter@0, host enter@1, tick 2, host leave@3 (elapsed 2), fake leave@4 (elapsed 4)
    assert ledger.fake == 2.0


def test_the_ledger_times_a_coroutine_step_by_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each resumption is timed; the time between resumptions (other tasks) is not."""
    import anyio

    burst = _clinic_burst()
    ledger = burst.Ledger()
    clock = iter(range(0, 1000, 10))
    monkeypatch.setattr(burst.time, "process_time", lambda: float(next(clock)))

    async def fake() -> int:
        await anyio.sleep(0)  # two steps, 10 ticks each
        return 7

    async def main() -> int:
        value: int = await ledger.run(True, fake())
        return value

    assert anyio.run(main) == 7
    assert ledger.fake == 20.0


def test_subscribed_matches_meetings_by_their_call_events_resource() -> None:
    burst = _clinic_burst()
    join = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_a%40thread.v2/0"
    other = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_b%40thread.v2/0"
    resource = burst.meeting_call_events_resource(join)
    assert burst.subscribed([join, other], [("/" + resource, True)]) == 1
    assert burst.subscribed([join, other], [(resource, False)]) == 0
