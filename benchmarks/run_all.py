"""Run every benchmark in sequence and summarize the performance goals, requirements P1–P5.

Each script runs in its own interpreter with modest sizes (the whole suite is sized to finish in
under ten minutes on two cores) and writes its markdown; this runner reads it back and writes
``benchmarks/results/README.md``: one table with each goal, the measured value, the baseline
measured in the same run, the ratio and PASS/MISS, then the machine facts, the date, each
script's duration and each script's full markdown.

By default the scripts run from a copy of ``benchmarks/`` in a temporary directory, so the
per-script results files (the full-size runs, ``benchmarks/results/<name>.md``) stay as they are
and only the summary is written; ``--in-place`` refreshes them too.

    python benchmarks/run_all.py            # modest sizes
    python benchmarks/run_all.py --quick    # tiny sizes: proves every script runs
    python benchmarks/run_all.py --only bench_import.py bench_clinic_burst.py
    python benchmarks/run_all.py --in-place  # also rewrite benchmarks/results/<name>.md
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent

# script, output markdown, modest arguments, tiny arguments
SCRIPTS: list[tuple[str, str, list[str], list[str]]] = [
    ("bench_import.py", "import.md", ["--runs", "11"], ["--runs", "2"]),
    ("bench_smart_launch.py", "smart.md",
     ["--launches", "60", "--warmup", "6"],
     ["--launches", "3", "--warmup", "1", "--capability-resources", "3"]),
    ("bench_graph.py", "graph.md", ["--calls", "50", "--burst", "200"],
     ["--calls", "3", "--burst", "5"]),
    ("bench_clinic_burst.py", "clinic_burst.md",
     ["--launches", "1000", "--sequential", "100", "--stores", "sqlite", "postgres"],
     ["--quick", "--stores", "sqlite"]),
    ("bench_attendance.py", "attendance.md",
     ["--facts", "500", "--visits", "2000", "--warmup", "500", "--notifications", "1000"],
     ["--facts", "20", "--visits", "30", "--warmup", "10", "--notifications", "20"]),
]  # fmt: skip

# B/visit: requirement P5 "no growth" = less than one small object per visit
HEAP_GROWTH_LIMIT = 16.0


@dataclass
class Row:
    goal: str
    measure: str
    value: str
    baseline: str
    ratio: str
    status: str  # PASS, MISS, reported, or n/a (with why)


@dataclass
class ScriptRun:
    script: str
    seconds: float
    returncode: int
    markdown: str
    error: str


def _num(text: str) -> float:
    return float(text.replace(",", ""))


def _find(pattern: str, text: str) -> re.Match[str] | None:
    return re.search(pattern, text, re.MULTILINE)


def _missing(goal: str, measure: str, source: str) -> Row:
    return Row(goal, measure, "—", "—", "—", f"n/a (not found in {source})")


def p1_rows(md: str) -> list[Row]:
    ours = _find(r"`import teams_ehr` \(in-process, median\) \| ([\d.]+) ms", md)
    floor = _find(r"`import httpx` alone[^|]*\| ([\d.]+) ms", md)
    heavy = _find(r"heavy packages loaded[^|]*\| ([^|]*) \|", md)
    if ours is None or floor is None or heavy is None:
        return [_missing("P1", "import teams_ehr < 150 ms, msgraph not loaded", "import.md")]
    value, base = _num(ours[1]), _num(floor[1])
    loaded = heavy[1].strip()
    ok = value < 150 and loaded == "none"
    return [
        Row("P1", "`import teams_ehr` (heavy packages loaded: " + loaded + ")",
            f"{value:.1f} ms", f"{base:.1f} ms (`import httpx` alone)",
            f"{value / base:.2f}", "PASS" if ok else "MISS"),
    ]  # fmt: skip


def p2_rows(smart: str, graph: str) -> list[Row]:
    rows: list[Row] = []
    ours = _find(r"^\| \(a\) teams-ehr \| ([\d.]+) \|", smart)
    hand = _find(r"^\| \(b\) hand-written httpx \| ([\d.]+) \|", smart)
    fhirclient = _find(r"^\| \(c\) python fhirclient \| ([\d.]+) \|", smart)
    big = _find(r"^\| \(d\) python fhirclient, production-sized /metadata \| ([\d.]+) \|", smart)
    if ours and hand:
        ratio = _num(ours[1]) / _num(hand[1])
        rows.append(Row("P2", "SMART launch on loopback, median ms (≤ 1.15 × hand-written)",
                        f"{ours[1]} ms", f"{hand[1]} ms (hand-written httpx)", f"{ratio:.2f}",
                        "PASS" if ratio <= 1.15 else "MISS"))  # fmt: skip
    else:
        rows.append(_missing("P2", "SMART launch vs hand-written httpx", "smart.md"))
    if ours and fhirclient:
        for label, other in (("minimal", fhirclient), ("production-sized /metadata", big)):
            if other is None:
                continue
            speedup = _num(other[1]) / _num(ours[1])
            rows.append(Row("P2", f"speed-up over python fhirclient ({label}) (≥ 3×)",
                            f"{ours[1]} ms", f"{other[1]} ms (fhirclient)", f"{speedup:.2f}",
                            "PASS" if speedup >= 3 else "MISS"))  # fmt: skip
    wall = _find(r"GraphMeetingFactory / raw httpx \(distinct appointments\) = ([\d.]+)×", graph)
    cpu = _find(r"^\| teams_ehr GraphClient \| \d+ \| ([\d.]+) \| ([\d.]+)×", graph)
    raw_cpu = _find(r"^\| raw httpx \| \d+ \| ([\d.]+) \|", graph)
    if wall:
        rows.append(Row("P2", "Graph meeting burst wall time (≤ 1.15 × raw httpx)", f"{wall[1]}×",
                        "raw httpx, same exchanges", wall[1],
                        "PASS" if _num(wall[1]) <= 1.15 else "MISS"))  # fmt: skip
    if cpu and raw_cpu:
        rows.append(Row("P2", "Graph client CPU per createOrGet (≤ 1.15 × raw httpx)",
                        f"{cpu[1]} ms", f"{raw_cpu[1]} ms (raw httpx)", cpu[2],
                        "PASS" if _num(cpu[2]) <= 1.15 else "MISS"))  # fmt: skip
    if not (wall or cpu):
        rows.append(_missing("P2", "Graph part (B2)", "graph.md"))
    return rows


def p3_rows(md: str) -> list[Row]:
    goal = _find(r"goal P3[^*]*\*\*(met|NOT met)\*\*", md)
    pattern = (
        r"^\| (.+?), burst \| (\d+) \| (yes|NO) \| (\d+) \| (\d+) \| (\d+) \| (\d+) "
        r"\(p50 [\d.]+ ms\) \| ([\d.]+) \| [\d.]+ \| (\d+) \| (\d+) \|"
    )
    rows = []
    for m in re.finditer(pattern, md, re.MULTILINE):
        ok = m[3] == "yes" and m[9] == "1" and m[10] == "1"
        rows.append(Row("P3", f"{m[2]} concurrent launches, {m[1]}: all succeeded {m[3]}, "
                        f"p50 {m[4]} ms / p99 {m[5]} ms; discovery ×{m[9]}, JWKS ×{m[10]}",
                        f"{m[6]} launches/s", f"{m[7]} launches/s (sequential)", m[8],
                        "PASS" if ok else "MISS"))  # fmt: skip
    if not rows or goal is None:
        return [_missing("P3", "clinic-opening burst", "clinic_burst.md")]
    return rows


def p4_p5_rows(md: str) -> list[Row]:
    rows: list[Row] = []
    inbox = [
        (m[1], m[2].strip(), _num(m[3]))
        for m in re.finditer(
            r"^\| P4 notifications → SQLite inbox \(([^)]*)\), ([^|]*)\| ([\d,]+)/s", md, re.M
        )
    ]
    if inbox:
        best = max(inbox, key=lambda item: item[2])
        worst = min(inbox, key=lambda item: item[2])
        for label, (medium, mode, rate) in (("best", best), ("worst", worst)):
            rows.append(Row("P4", f"notifications → SQLite inbox, {label} mode ({medium}, {mode})",
                            f"{rate:,.0f}/s", "goal 2,000/s", f"{rate / 2000:.2f}",
                            "PASS" if rate >= 2000 else "MISS"))  # fmt: skip
    else:
        rows.append(_missing("P4", "notifications into the SQLite inbox", "attendance.md"))
    base = _find(r"^\| FHIR delivery, bare httpx POST loop \(baseline[^|]*\| ([\d,]+) facts/s", md)
    worker = _find(r"^\| FHIR delivery, outbox worker, SQLite on disk[^|]*\| ([\d,]+) facts/s", md)
    if base and worker:
        ratio = _num(worker[1]) / _num(base[1])
        rows.append(Row("P4", "FHIR delivery throughput, outbox worker + SQLite (reported)",
                        f"{worker[1]} facts/s", f"{base[1]} facts/s (bare httpx loop)",
                        f"{ratio:.2f}", "reported"))  # fmt: skip
    heap = _find(r"^\| P5 heap growth per visit after warm-up \| (-?[\d.]+) B/visit", md)
    visits = _find(r"^\| P5 ([\d,]+) visits", md)
    rss = _find(r"^\| P5 RSS after warm-up / at the end \| ([\d,]+) KiB / ([\d,]+) KiB", md)
    if heap and visits:
        growth = _num(heap[1])
        rss_text = f"RSS {rss[1]} → {rss[2]} KiB" if rss else "RSS n/a"
        rows.append(Row("P5", f"heap growth per visit over {visits[1]} visits ({rss_text})",
                        f"{growth:.1f} B/visit", f"limit {HEAP_GROWTH_LIMIT:.0f} B/visit", "—",
                        "PASS" if growth <= HEAP_GROWTH_LIMIT else "MISS"))  # fmt: skip
    else:
        rows.append(_missing("P5", "memory over many visits", "attendance.md"))
    return rows


def copy_benchmarks(root: Path) -> Path:
    """``root/benchmarks`` (scripts only, empty ``results``) with ``root/tests`` linked to the
    repository's tests (one script reuses a test helper); returns the copied directory."""
    target = root / "benchmarks"
    shutil.copytree(HERE, target, ignore=shutil.ignore_patterns("results", "__pycache__"))
    (target / "results").mkdir()
    (root / "tests").symlink_to(HERE.parent / "tests", target_is_directory=True)
    return target


def run_script(directory: Path, script: str, args: list[str], timeout: float) -> ScriptRun:
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, str(directory / script), *args],
            capture_output=True, text=True, timeout=timeout, check=False, cwd=directory.parent,
        )  # fmt: skip
        code, error = done.returncode, done.stderr[-2000:] if done.returncode else ""
    except subprocess.TimeoutExpired:
        code, error = -1, f"timed out after {timeout:.0f} s"
    return ScriptRun(script, time.perf_counter() - start, code, "", error)


def machine_facts() -> list[str]:
    def read(path: str, key: str) -> str:
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return "n/a"

    try:
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover - not on every platform
        load = "n/a"
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE,
        check=False,
    ).stdout.strip() or "n/a"  # fmt: skip
    return [
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; git commit {commit}",
        f"- machine: {platform.platform()}; {os.cpu_count()} CPUs "
        f"({read('/proc/cpuinfo', 'model name')}); memory {read('/proc/meminfo', 'MemTotal')}",
        f"- Python {platform.python_version()} ({platform.python_implementation()})",
        f"- load average at the end: {load} (other work on the machine slows wall times; every "
        "ratio compares runs made in the same script, interleaved or back to back)",
    ]


def summarize(runs: dict[str, ScriptRun], total: float, quick: bool) -> str:
    md = {name: run.markdown for name, run in runs.items()}
    builders: list[Callable[[], list[Row]]] = [
        lambda: p1_rows(md.get("bench_import.py", "")),
        lambda: p2_rows(md.get("bench_smart_launch.py", ""), md.get("bench_graph.py", "")),
        lambda: p3_rows(md.get("bench_clinic_burst.py", "")),
        lambda: p4_p5_rows(md.get("bench_attendance.py", "")),
    ]
    rows = [row for build in builders for row in build()]
    lines = [
        "# Performance goals P1–P5 — one run of `benchmarks/run_all.py`"
        + (" (--quick: tiny sizes, numbers are not meaningful)" if quick else ""),
        "",
        "| goal | measure | measured | baseline (same run) | ratio | result |",
        "|---|---|---|---|---|---|",
        *(
            f"| {r.goal} | {r.measure} | {r.value} | {r.baseline} | {r.ratio} | {r.status} |"
            for r in rows
        ),
        "",
        f"P5 criterion: heap growth per visit after warm-up ≤ {HEAP_GROWTH_LIMIT:.0f} B/visit. "
        "P4 lists the best and the worst acknowledgement mode measured.",
        "",
        "## Machine",
        "",
        *machine_facts(),
        "",
        "## Scripts",
        "",
        "| script | arguments | seconds | exit |",
        "|---|---|---|---|",
        *(
            f"| {name} | `{' '.join(args)}` | {runs[name].seconds:.1f} | {runs[name].returncode} |"
            for name, _, args in _selected_args(runs, quick)
        ),
        f"| **total** | | **{total:.1f}** | |",
        "",
    ]
    for name, run in runs.items():
        lines += [f"## {name}", ""]
        if run.returncode != 0:
            lines += ["```", run.error.strip(), "```", ""]
        lines += [run.markdown.strip(), ""]
    return "\n".join(lines)


def _selected_args(runs: dict[str, ScriptRun], quick: bool) -> list[tuple[str, str, list[str]]]:
    return [(s, out, tiny if quick else modest) for s, out, modest, tiny in SCRIPTS if s in runs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes for every script")
    parser.add_argument("--only", nargs="+", choices=[s for s, *_ in SCRIPTS])
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per script")
    parser.add_argument("--summary", type=Path, default=HERE / "results" / "README.md")
    parser.add_argument("--in-place", action="store_true", help="refresh results/<name>.md too")
    args = parser.parse_args()
    runs: dict[str, ScriptRun] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="teams-ehr-bench-") as scratch:
        directory = HERE if args.in_place else copy_benchmarks(Path(scratch))
        for script, output, modest, tiny in SCRIPTS:
            if args.only and script not in args.only:
                continue
            print(f"running {script} …", flush=True)
            began = time.time()
            run = run_script(directory, script, tiny if args.quick else modest, args.timeout)
            result = directory / "results" / output
            fresh = result.exists() and result.stat().st_mtime >= began - 1
            run.markdown = result.read_text() if run.returncode == 0 and fresh else ""
            runs[script] = run
            print(f"  {script}: exit {run.returncode} in {run.seconds:.1f} s", flush=True)
    total = time.perf_counter() - started
    text = summarize(runs, total, args.quick)
    args.summary.parent.mkdir(parents=True, exist_ok=True)
    args.summary.write_text(text)
    print(text.split("## Machine")[0])
    print(f"total {total:.1f} s; summary in {args.summary}")
    if any(run.returncode != 0 for run in runs.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
