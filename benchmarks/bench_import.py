"""Requirement P1: cost of ``import teams_ehr`` (goal: < 150 ms wall, msgraph not loaded).

Runs N fresh interpreters. Each one measures, in-process, the wall time of ``import teams_ehr``
(``time.perf_counter`` around the import) and the modules it added; the script also times the
whole subprocess against an empty interpreter (``python -c pass``) to show the startup share.
Prints a markdown table and writes it to ``benchmarks/results/import.md``.

    python benchmarks/bench_import.py [--runs 21]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HEAVY = ("msgraph", "kiota_http", "azure", "flask", "starlette", "fastapi", "pytest", "uvicorn")
PROBE = """
import json, sys, time
before = set(sys.modules)
start = time.perf_counter()
import MODULE
elapsed = time.perf_counter() - start
added = set(sys.modules) - before
print(json.dumps({"seconds": elapsed, "added": len(added),
                  "roots": sorted({m.split('.')[0] for m in added})}))
"""


def _wall(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True)
    return time.perf_counter() - start


def _probe(module: str) -> dict[str, object]:
    code = PROBE.replace("MODULE", module)
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    result: dict[str, object] = json.loads(out)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    runs = parser.parse_args().runs
    probes, httpx_probes = [], []
    for _ in range(runs):  # interleaved, so load on the machine hits both alike
        probes.append(_probe("teams_ehr"))
        httpx_probes.append(_probe("httpx"))
    empty = [_wall([sys.executable, "-c", "pass"]) for _ in range(runs)]
    full = [_wall([sys.executable, "-c", "import teams_ehr"]) for _ in range(runs)]
    import_ms = statistics.median(float(p["seconds"]) for p in probes) * 1000  # type: ignore[arg-type]
    httpx_ms = statistics.median(float(p["seconds"]) for p in httpx_probes) * 1000  # type: ignore[arg-type]
    roots = set(probes[0]["roots"])  # type: ignore[call-overload]
    heavy_loaded = sorted(roots & set(HEAVY))
    rows = [
        ("`import teams_ehr` (in-process, median)", f"{import_ms:.1f} ms"),
        ("`import httpx` alone, same machine (dependency floor)", f"{httpx_ms:.1f} ms"),
        ("teams_ehr on top of httpx", f"{import_ms - httpx_ms:.1f} ms"),
        (
            "interpreter + import (subprocess wall, median)",
            f"{statistics.median(full) * 1000:.1f} ms",
        ),
        (
            "empty interpreter (`python -c pass`, median)",
            f"{statistics.median(empty) * 1000:.1f} ms",
        ),
        ("modules added by the import", str(probes[0]["added"])),
        ("top-level packages loaded", ", ".join(sorted(roots))),
        (
            "heavy packages loaded (msgraph/flask/starlette/pytest…)",
            ", ".join(heavy_loaded) or "none",
        ),
        (
            "goal P1: < 150 ms and no msgraph",
            "met" if import_ms < 150 and not heavy_loaded else "NOT met",
        ),
    ]
    lines = [
        f"# P1 — import cost ({runs} fresh interpreters, Python {platform.python_version()}, "
        f"{platform.machine()})",
        "",
        "| measure | value |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in rows),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    (results / "import.md").write_text(text)


if __name__ == "__main__":
    main()
