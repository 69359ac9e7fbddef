"""Developer and CI sessions (docs/design/architecture.md#tooling).

``nox -s tests core contract lint typecheck docs bench``. The full suite runs on 3.11, the
interpreter of the README's test command; ``core`` (no extras) and ``contract`` (the host, store
and attendance contract suites) also run on 3.12 and 3.13, the other versions ``pyproject.toml``
declares. ``.ci/run`` runs the README's command, then ``core`` and ``contract`` on 3.12 and 3.13.

Interpreters come from ``PATH`` or, when ``python3.X`` there does not run (pyenv's shims run only
the versions pyenv has selected), from ``$PYENV_ROOT/versions/3.X.*``. A version found in neither
place is skipped with a warning; under ``CI`` nox fails instead, so CI never passes on fewer
versions than it names. Interpreters are never downloaded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import nox
from nox.logger import logger

DEFAULT_PYTHON = "3.11"
OTHER_PYTHONS = ("3.12", "3.13")
PYTHONS = (DEFAULT_PYTHON, *OTHER_PYTHONS)

# The suites that exercise the public contracts end to end: both example hosts against one
# contract suite, the Store contract on SQLite and PostgreSQL, and attendance in (Graph
# notifications) and out (FHIR write-back, reports). A few minutes on a 2-core machine.
CONTRACT_SUITES = (
    "tests/hosts",
    "tests/examples",
    "tests/store",
    "tests/attendance_in",
    "tests/attendance_out",
)

CORE_SUITES = (
    "tests/unit",
    "tests/test_import_purity.py",
    "tests/test_exported_members.py",
)

nox.options.sessions = ["lint", "typecheck", "tests", "core"]
nox.options.default_venv_backend = "venv"
if hasattr(nox.options, "download_python"):  # nox >= 2025.5; older versions never download
    # CI reaches package registries only: a missing interpreter is reported, not fetched.
    nox.options.download_python = "never"


def _runs(interpreter: Path) -> bool:
    try:
        result = subprocess.run(  # noqa: S603 (a path we globbed, run with fixed arguments)
            [str(interpreter), "-c", "import sys"],
            capture_output=True,
            timeout=30,
            check=False,
        )
    except OSError:
        return False
    return result.returncode == 0


def _version_key(path: Path) -> tuple[int, ...]:
    """``…/versions/3.12.10/bin/python3.12`` → ``(3, 12, 10)``; pre-releases sort first."""
    parts = path.parent.parent.name.split(".")
    return tuple(int(part) if part.isdigit() else -1 for part in parts)


def _pyenv_root() -> Path:
    return Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")


def _locate_interpreter(version: str) -> Path | None:
    """A runnable ``python{version}``: from ``PATH``, else the newest pyenv build of it."""
    on_path = shutil.which(f"python{version}")
    if on_path is not None and _runs(Path(on_path)):
        return Path(on_path)
    builds = sorted(
        _pyenv_root().glob(f"versions/{version}.*/bin/python{version}"),
        key=_version_key,
        reverse=True,
    )
    return next((build for build in builds if _runs(build)), None)


def _expose_interpreters() -> None:
    """Put each located interpreter's directory first on ``PATH``, where nox looks for it."""
    for version in PYTHONS:
        interpreter = _locate_interpreter(version)
        if interpreter is None:
            logger.warning(
                "Python %s not found: python%s on PATH does not run and %s has no "
                "build of it (install one with `pyenv install %s`); its sessions %s.",
                version,
                version,
                _pyenv_root() / "versions",
                version,
                "fail because CI is set" if "CI" in os.environ else "are skipped",
            )
            continue
        if shutil.which(f"python{version}") != str(interpreter):
            logger.info("Python %s: %s", version, interpreter)
            os.environ["PATH"] = os.pathsep.join([str(interpreter.parent), os.environ["PATH"]])


_expose_interpreters()


@nox.session(python=DEFAULT_PYTHON)
def tests(session: nox.Session) -> None:
    """The whole suite with every extra, as the README's test command runs it."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(python=PYTHONS)
def core(session: nox.Session) -> None:
    """No extras installed: proves the core is framework-free and msgraph-free."""
    session.install("-e", ".", "pytest", "hypothesis", "trio")
    session.run("python", "-m", "pytest", "-p", "no:teams_ehr", *CORE_SUITES, *session.posargs)


@nox.session(python=OTHER_PYTHONS)
def contract(session: nox.Session) -> None:
    """The host, store and attendance contract suites with every extra (the README's install)."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *CONTRACT_SUITES, *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[test]", "mypy>=1.11")
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    session.install("-e", ".[docs]")
    session.run("mkdocs", "build", "--strict", "--site-dir", "site")


@nox.session
def bench(session: nox.Session) -> None:
    """Every benchmark in one command; writes benchmarks/results/*.md."""
    session.install("-e", ".[dev]")
    session.run("python", "benchmarks/run_all.py")


@nox.session(python=DEFAULT_PYTHON)
def fuzz(session: nox.Session) -> None:
    """Coverage-guided fuzzing of the parser properties (tests/fuzz) with atheris, for a budget.

    ``nox -s fuzz -- 600`` spends 600 seconds in total (default 600); further arguments name
    properties (``test_fuzz_webhook::test_notification_bodies_are_total``). Where atheris has no
    wheel for the interpreter, fuzz/run.py falls back to Hypothesis' ``nightly`` profile. CI runs
    the same properties at the suite's profile, as part of the README's test command.
    """
    session.install("-e", ".[test]")
    session.run("python", "-m", "pip", "install", "atheris", success_codes=[0, 1])
    budget, *targets = session.posargs or ["600"]
    session.run("python", "fuzz/run.py", "--budget", budget, *targets)


@nox.session(python=DEFAULT_PYTHON)
def mutants(session: nox.Session) -> None:
    """Mutation testing (mutmut 3) of the security- and correctness-critical modules.

    ``nox -s mutants`` runs every module below; ``nox -s mutants -- smart/canonical.py
    teams/lobby.py`` only those (paths under ``src/teams_ehr``). Each group of modules is mutated
    in its own copy of the checkout under ``.nox/mutants/tmp/`` (mutmut writes a ``mutants/``
    tree beside ``pyproject.toml``; the copy keeps it out of the work tree and keeps results for
    the next, incremental run) and each mutant runs only the tests that cover the mutated function,
    drawn from that group's test selection. Shared settings are ``[tool.mutmut]`` in
    ``pyproject.toml``; the counts and every survivor's diff go to ``tests/mutation-report.md``
    (docs/security.md "Mutation testing" explains each survivor). ``MUTANTS_CHILDREN`` (default 1)
    sets mutmut's ``--max-children``: the machines are shared.
    """
    import json
    import re
    import tomllib

    groups: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
        # group: (modules under src/teams_ehr, tests whose coverage picks each mutant's tests)
        "smart": (
            (
                "smart/canonical.py",
                "smart/callback.py",
                "smart/launch.py",
                "smart/jwt_verify.py",
                "smart/authorize.py",
                "smart/context.py",
                "smart/scopes.py",
                "smart/pkce.py",
                "smart/client_auth.py",
                "smart/tokens.py",
                "smart/jwks.py",
                "smart/epic_context_link.py",
            ),
            ("tests/smart_launch", "tests/smart_tokens", "tests/epic_link", "tests/boundaries"),
        ),
        "teams": (
            ("teams/lobby.py", "teams/meetings.py"),
            ("tests/teams", "tests/readback"),
        ),
        "attendance_in": (
            ("attendance/webhook.py", "attendance/handshake.py", "attendance/validation_tokens.py"),
            ("tests/attendance_in", "tests/boundaries"),
        ),
        "attendance_out": (
            (
                "attendance/outbox.py",
                "attendance/writers/fhir_http.py",
                "attendance/writers/base.py",
                "attendance/writers/encounter.py",
                "attendance/writers/epic_telehealth.py",
            ),
            ("tests/attendance_out", "tests/readback"),
        ),
        "joinlinks": (
            ("visits/joinlinks.py",),
            ("tests/joinlinks", "tests/boundaries"),
        ),
        "orgs": (
            (
                "orgs/approval.py",
                "orgs/registry.py",
                "orgs/models.py",
                "orgs/console.py",
                "orgs/console_sessions.py",
                "orgs/approval_signin.py",
            ),
            ("tests/orgs", "tests/admin", "tests/readback"),
        ),
        "core": (
            ("_redact.py", "store/crypto.py"),
            ("tests/unit", "tests/store/test_store_crypto.py"),
        ),
    }
    wanted = {arg.removeprefix("src/teams_ehr/") for arg in session.posargs}
    known = {module for modules, _ in groups.values() for module in modules}
    if unknown := sorted(wanted - known):
        session.error(
            f"not a mutation target: {', '.join(unknown)}. Known: {', '.join(sorted(known))}"
        )
    session.install("-e", ".[test]", "mutmut>=3.8,<4")

    root = Path.cwd()
    base = tomllib.loads((root / "pyproject.toml").read_text("utf-8"))["tool"]["mutmut"]
    work_root = Path(session.create_tmp())
    children = os.environ.get("MUTANTS_CHILDREN", "1")
    for group, (modules, test_paths) in groups.items():
        selected = [m for m in modules if not wanted or m in wanted]
        if not selected:
            continue
        work = work_root / group
        for name in ("src", "tests", "docs", "examples", "benchmarks"):
            shutil.copytree(root / name, work / name, dirs_exist_ok=True)
        for name in ("pyproject.toml", "mkdocs.yml", "README.md"):
            shutil.copy2(root / name, work / name)
        settings = {
            **base,
            "only_mutate": [f"src/teams_ehr/{m}" for m in selected],
            "pytest_add_cli_args_test_selection": list(test_paths),
        }
        text = (work / "pyproject.toml").read_text("utf-8")
        text = re.sub(r"(?ms)^\[tool\.mutmut\]\n.*?(?=^\[|\Z)", "", text)
        text += "\n[tool.mutmut]\n" + "".join(
            f"{k} = {json.dumps(v)}\n" for k, v in settings.items()
        )
        (work / "pyproject.toml").write_text(text, "utf-8")
        with session.chdir(work):
            session.run("mutmut", "run", "--max-children", children, success_codes=[0, 1])
            listing = session.run("mutmut", "results", "--all", "true", silent=True) or ""
            statuses = dict(
                line.strip().rsplit(": ", 1) for line in str(listing).splitlines() if ": " in line
            )
            survivors = {
                name: str(session.run("mutmut", "show", name, silent=True) or "")
                for name, status in statuses.items()
                if status == "survived"
            }
        (work / "summary.json").write_text(
            json.dumps({"modules": selected, "statuses": statuses, "survivors": survivors}), "utf-8"
        )

    # The report covers every group that has ever run in this .nox folder.
    rows, details = [], []
    totals: dict[str, int] = {}
    for group in groups:
        summary_file = work_root / group / "summary.json"
        if not summary_file.exists():
            continue
        summary = json.loads(summary_file.read_text("utf-8"))
        for module in summary["modules"]:
            prefix = "teams_ehr." + module.removesuffix(".py").replace("/", ".") + "."
            counts: dict[str, int] = {}
            for name, status in summary["statuses"].items():
                if name.startswith(prefix):
                    counts[status] = counts.get(status, 0) + 1
                    totals[status] = totals.get(status, 0) + 1
            cells = [str(counts.get(s, 0)) for s in ("killed", "timeout", "survived", "no tests")]
            rows.append(f"| `{module}` | {sum(counts.values())} | {' | '.join(cells)} |")
        details += [
            f"### `{name}`\n\n```diff\n{diff.strip()}\n```\n"
            for name, diff in summary["survivors"].items()
        ]
    header = [
        "# Mutation report",
        "",
        "Written by `nox -s mutants` (mutmut 3); what each survivor means is in",
        "docs/security.md, section Mutation testing.",
        "",
        "| module | mutants | killed | timeout | survived | no tests |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    total = sum(totals.values())
    rows.append(
        f"| **all** | {total} | "
        + " | ".join(str(totals.get(s, 0)) for s in ("killed", "timeout", "survived", "no tests"))
        + " |"
    )
    report = "\n".join([*header, *rows, "", "## Survivors", "", *details])
    (root / "tests" / "mutation-report.md").write_text(report.rstrip() + "\n", "utf-8")
    session.log(f"mutants: {totals}; report in tests/mutation-report.md")
