"""Requirement P1: what a host imports — ``teams_ehr.app`` plus its Starlette integration.

Goal (requirement P1): the CPU time of ``import teams_ehr.app`` and
``from teams_ehr.integrations.starlette import teams_ehr_routes`` in a fresh interpreter is at
most 1.3 × the CPU time of importing the dependencies alone (httpx, pydantic, pyjwt,
cryptography, starlette), measured in the same run; msgraph is not loaded.

Each run starts fresh interpreters, alternating the variants (so load on the machine hits them
alike), and measures ``time.process_time`` around the import statements only (interpreter
start-up is the same for every variant and is reported once, separately). Also reported, for
context: the lazy shell ``import teams_ehr``, a baseline of every non-teams_ehr module the host
surface actually loads (so "own code" = host − that), and the 15 own modules with the largest
self import time from ``python -X importtime`` (wall clock: the minimum over the runs, the one
least disturbed by other load).

Prints a markdown table and writes it to ``benchmarks/results/import.md``.

    python benchmarks/bench_import.py [--runs 11]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

TARGET = 1.3
HOST = "import teams_ehr.app\nfrom teams_ehr.integrations.starlette import teams_ehr_routes"
DEPENDENCIES = "import httpx, pydantic, jwt, cryptography, starlette"
SHELL = "import teams_ehr"
HEAVY = ("msgraph", "kiota_http", "azure", "flask", "fastapi", "pytest", "uvicorn")
PROBE = """
import json, sys, time
before = set(sys.modules)
cpu, wall = time.process_time(), time.perf_counter()
exec(compile(CODE, "<probe>", "exec"))
cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
added = [m for m in sys.modules if m not in before]
print(json.dumps({"cpu": cpu, "wall": wall, "added": added}))
"""
# imports every non-teams_ehr module the host surface loaded, in load order (a generous baseline:
# the stdlib and dependency submodules the library really uses)
THIRD_PARTY = """
import importlib
for name in NAMES:
    try:
        importlib.import_module(name)
    except Exception:
        pass
"""


def probe(code: str) -> dict[str, object]:
    source = PROBE.replace("CODE", repr(code))
    out = subprocess.run(
        [sys.executable, "-c", source], check=True, capture_output=True, text=True
    ).stdout
    result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return result


def _cpu(p: dict[str, object]) -> float:
    value = p["cpu"]
    assert isinstance(value, float)
    return value * 1000


def _added(p: dict[str, object]) -> list[str]:
    value = p["added"]
    assert isinstance(value, list)
    return [str(v) for v in value]


def importtime(code: str) -> dict[str, int]:
    """Self import time in µs per module, from ``-X importtime`` (stderr)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        check=True,
        capture_output=True,
        text=True,
    )
    selves: dict[str, int] = {}
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        fields = line[len("import time:") :].split("|")
        if len(fields) != 3:
            continue
        selves[fields[2].strip()] = int(fields[0].strip())
    return selves


def startup_ms(runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11)
    runs = max(1, parser.parse_args().runs)
    first = probe(HOST)
    host_added = _added(first)
    third_party = [m for m in host_added if m.split(".")[0] != "teams_ehr"]
    all_third = THIRD_PARTY.replace("NAMES", repr(third_party))
    samples: dict[str, list[dict[str, object]]] = defaultdict(list)
    variants = {"host": HOST, "deps": DEPENDENCIES, "third": all_third, "shell": SHELL}
    for index in range(runs):  # interleaved, rotating the order
        names = list(variants)
        names = names[index % len(names) :] + names[: index % len(names)]
        for name in names:
            samples[name].append(probe(variants[name]))
    cpu = {name: statistics.median(_cpu(p) for p in ps) for name, ps in samples.items()}
    spread = {
        name: (min(_cpu(p) for p in ps), max(_cpu(p) for p in ps)) for name, ps in samples.items()
    }
    ratio = cpu["host"] / cpu["deps"]
    own_selves: dict[str, list[int]] = defaultdict(list)
    for _ in range(min(runs, 5)):
        for module, micros in importtime(HOST).items():
            if module.split(".")[0] == "teams_ehr":
                own_selves[module].append(micros)
    own = sorted(((min(v), m) for m, v in own_selves.items()), reverse=True)
    own_total = sum(v for v, _ in own) / 1000
    roots = sorted({m.split(".")[0] for m in host_added})
    heavy = sorted(set(roots) & set(HEAVY))
    own_modules = sum(1 for m in host_added if m.split(".")[0] == "teams_ehr")
    met = ratio <= TARGET and not heavy

    def row(name: str, label: str) -> str:
        low, high = spread[name]
        return (
            f"| {label} | {cpu[name]:.1f} | {low:.1f}–{high:.1f} | {cpu[name] / cpu['deps']:.2f} |"
        )

    try:
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover - not on every platform
        load = "n/a"
    lines = [
        f"# P1 — host import cost ({runs} fresh interpreters per variant, interleaved; "
        f"Python {platform.python_version()}, {platform.machine()})",
        "",
        "| variant (CPU time of the import statements, fresh interpreter) | median ms | "
        "min–max ms | ratio to dependencies alone |",
        "|---|---|---|---|",
        row(
            "host",
            "host surface: `import teams_ehr.app` + "
            "`from teams_ehr.integrations.starlette import teams_ehr_routes`",
        ),
        row("deps", f"dependencies alone: `{DEPENDENCIES}`"),
        row(
            "third",
            f"every module the host surface loads except its own ({len(third_party)}: stdlib "
            "and dependencies), in load order",
        ),
        row("shell", "`import teams_ehr` (the lazy package shell)"),
        "",
        f"- **P1 host surface / dependencies alone = {ratio:.2f}** (target ≤ {TARGET}): "
        f"**{'met' if met else 'NOT met'}**.",
        f"- own code on top of the stdlib and dependency modules it loads (host − row 3): "
        f"{cpu['host'] - cpu['third']:.1f} ms; modules added by the host import: "
        f"{len(host_added)} ({own_modules} of them teams_ehr).",
        f"- heavy packages loaded (msgraph/flask/fastapi/uvicorn/pytest…): "
        f"{', '.join(heavy) or 'none'}.",
        f"- empty interpreter start-up (`python -c pass`, wall, median): {startup_ms(runs):.1f} ms "
        "(not included above).",
        f"- load average at the end: {load}.",
        "",
        f"Top 15 own modules by self import time (`python -X importtime`, wall µs, the least "
        "disturbed (minimum) of "
        f"{min(runs, 5)}; all teams_ehr modules together: {own_total:.1f} ms):",
        "",
        "| module | self µs |",
        "|---|---|",
        *(f"| {module} | {micros:.0f} |" for micros, module in own[:15]),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    (results / "import.md").write_text(text)


if __name__ == "__main__":
    main()
