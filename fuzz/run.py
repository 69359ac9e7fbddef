"""Coverage-guided fuzzing of the parser totality properties in tests/fuzz/.

``python fuzz/run.py --budget 600 [target ...]`` (what ``nox -s fuzz -- 600`` runs). A target is
one property, ``test_fuzz_webhook::test_notification_bodies_are_total``; the default is every
property of tests/fuzz. Each property asserts that a parser of outside input returns or raises a
``TeamsEhrError`` (tests/fuzz/fuzz_support.py ``assert_total``).

With atheris (libFuzzer for Python) installed, each target runs in its own process for its share
of the budget: atheris instruments ``teams_ehr`` and feeds coverage-guided bytes to the
property's ``hypothesis.fuzz_one_input``, so the fuzzer explores the same strategies and
assertions the suite runs. A failing input is saved under ``fuzz/findings/`` (libFuzzer's
artifact) and Hypothesis' example database, and the run fails. Without atheris (no wheel for the
interpreter) the properties run under pytest with the ``nightly`` Hypothesis profile (5000
examples each), a new seed per round, until the budget is spent.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PROPERTIES = ROOT / "tests" / "fuzz"
FINDINGS = ROOT / "fuzz" / "findings"


def _import_paths() -> None:
    for folder in (ROOT / "tests", PROPERTIES):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))


def _property(target: str) -> Callable[[bytes], Any]:
    module_name, _, function_name = target.partition("::")
    test = getattr(importlib.import_module(module_name), function_name)
    return test.hypothesis.fuzz_one_input  # type: ignore[no-any-return]


def discover() -> list[str]:
    """Every ``@given`` property of tests/fuzz, as ``module::function``."""
    _import_paths()
    targets = []
    for path in sorted(PROPERTIES.glob("test_fuzz_*.py")):
        module = importlib.import_module(path.stem)
        for name in sorted(vars(module)):
            if name.startswith("test_") and hasattr(getattr(module, name), "hypothesis"):
                targets.append(f"{path.stem}::{name}")
    return targets


def _has_atheris() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


def fuzz_one(target: str, seconds: int) -> None:
    """Child process: run atheris on one property for ``seconds`` (libFuzzer exits the process)."""
    import atheris

    logging.disable(logging.CRITICAL)  # security_event lines on every refused input
    _import_paths()
    with atheris.instrument_imports(include=["teams_ehr"]):
        fuzz_input = _property(target)
    FINDINGS.mkdir(exist_ok=True)
    prefix = FINDINGS / (target.replace("::", "-") + "-")
    atheris.Setup(
        [
            sys.argv[0],
            f"-max_total_time={seconds}",
            f"-artifact_prefix={prefix}",
            "-rss_limit_mb=4096",
        ],
        fuzz_input,
    )
    atheris.Fuzz()


def with_atheris(targets: list[str], budget: int) -> int:
    share = max(10, budget // len(targets))
    failed = []
    for target in targets:
        print(f"==> {target}: {share} s (atheris)", flush=True)
        command = [sys.executable, __file__, "--one", target, "--budget", str(share)]
        if subprocess.run(command, cwd=ROOT, check=False).returncode != 0:  # noqa: S603
            failed.append(target)
    return _report(failed)


def with_hypothesis(targets: list[str], budget: int) -> int:
    deadline = time.monotonic() + budget
    selection = [f"tests/fuzz/{target.replace('::', '.py::', 1)}" for target in targets]
    seed = 0
    failed: list[str] = []
    while time.monotonic() < deadline and not failed:
        seed += 1
        print(f"==> round {seed}: {len(selection)} properties, nightly profile (Hypothesis)")
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "--hypothesis-profile=nightly",
            f"--hypothesis-seed={seed}",
            *selection,
        ]
        if subprocess.run(command, cwd=ROOT, check=False).returncode != 0:  # noqa: S603
            failed.append(f"round {seed}")
    return _report(failed)


def _report(failed: list[str]) -> int:
    if failed:
        print("findings:", *failed, sep="\n  ")
        return 1
    print("no findings")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", help="module::function (default: all of tests/fuzz)")
    parser.add_argument("--budget", type=int, default=600, help="seconds in total (default 600)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument(
        "--hypothesis", action="store_true", help="use Hypothesis even when atheris is installed"
    )
    args = parser.parse_args(argv)
    if args.one:
        fuzz_one(args.one, args.budget)
        return 0
    targets = args.targets or discover()
    if _has_atheris() and not args.hypothesis:
        return with_atheris(targets, args.budget)
    print("atheris is not installed: fuzzing with Hypothesis alone")
    return with_hypothesis(targets, args.budget)


if __name__ == "__main__":
    sys.exit(main())
