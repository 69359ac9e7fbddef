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


@nox.session(python=DEFAULT_PYTHON, reuse_venv=True)
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
    sets mutmut's ``--max-children``: the machines are shared. ``MUTANTS_REPORT`` names another
    report file (one per module group, so parallel runs don't overwrite each other); with module
    arguments the report covers only their groups.
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
                "smart/discovery.py",
                "smart/flows.py",
            ),
            ("tests/smart_launch", "tests/smart_tokens", "tests/epic_link", "tests/boundaries"),
        ),
        "teams": (
            ("teams/lobby.py", "teams/meetings.py"),
            ("tests/teams", "tests/readback"),
        ),
        "attendance_in": (
            (
                "attendance/webhook.py",
                "attendance/handshake.py",
                "attendance/validation_tokens.py",
                "attendance/notification_crypto.py",
            ),
            ("tests/attendance_in", "tests/boundaries"),
        ),
        "attendance_out": (
            (
                "attendance/outbox.py",
                "attendance/writers/fhir_http.py",
                "attendance/writers/base.py",
                "attendance/writers/encounter.py",
                "attendance/writers/epic_telehealth.py",
                "attendance/writers/audit_event.py",
                "attendance/writers/clinical_note.py",
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
        "edges": (
            # T29 address pinning, T13 our signing keys, T14/T17 the clinician identity binding.
            ("transport.py", "keys.py", "visits/binding.py"),
            (
                "tests/security",
                "tests/visits",
                "tests/entra",
                "tests/smart_tokens",
                "tests/cli/test_keys_cmd.py",
            ),
        ),
    }
    wanted = {arg.removeprefix("src/teams_ehr/") for arg in session.posargs}
    known = {module for modules, _ in groups.values() for module in modules}
    if unknown := sorted(wanted - known):
        session.error(
            f"not a mutation target: {', '.join(unknown)}. Known: {', '.join(sorted(known))}"
        )
    # One environment for every run (several groups may run at once from separate shells): it is
    # built once and kept; the package is installed editable, so source edits need no reinstall.
    if not (Path(session.virtualenv.location) / "bin" / "mutmut").exists():
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
            # mutmut runs the tests inside mutants/: the docs tests need the pages there too.
            "also_copy": [*base.get("also_copy", []), "docs", "mkdocs.yml", "README.md"],
        }
        text = (work / "pyproject.toml").read_text("utf-8")
        text = re.sub(r"(?ms)^\[tool\.mutmut\]\n.*?(?=^\[|\Z)", "", text)
        text += "\n[tool.mutmut]\n" + "".join(
            f"{k} = {json.dumps(v)}\n" for k, v in settings.items()
        )
        (work / "pyproject.toml").write_text(text, "utf-8")
        # mutmut keeps its coverage map (which tests reach which function) in mutants/ and only
        # extends it for new tests: a module added to the selection would be mapped to no test.
        # A changed selection therefore starts this group's mutants/ afresh.
        selection_file = work / "selection.json"
        if selection_file.exists() and json.loads(selection_file.read_text("utf-8")) != selected:
            shutil.rmtree(work / "mutants", ignore_errors=True)
        selection_file.write_text(json.dumps(selected), "utf-8")
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

    # The report covers every group (or every group asked for) that has run in this .nox folder.
    rows, details = [], []
    totals: dict[str, int] = {}
    reported = [g for g, (mods, _) in groups.items() if not wanted or wanted & set(mods)]
    for group in reported:
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
    report_path = root / os.environ.get("MUTANTS_REPORT", "tests/mutation-report.md")
    report_path.write_text(report.rstrip() + "\n", "utf-8")
    session.log(f"mutants: {totals}; report in {report_path}")


# -- release: the artifact is what is tested (docs/release.md) ---------------------------------
# Run in this order (as .ci/run does): build, wheel-tests, then sbom and audit, which read what
# wheel-tests left; each fails with a message naming the session to run first. min-versions
# stands alone.

DIST = Path("dist")
# The environment the installed-wheel suites ran in, pinned: the SBOM and the audit read it.
TEST_LOCK = DIST / "test-environment.lock.txt"
# Against the installed wheel: the core, contract and example-host suites, the pytest11 plugin
# and the console script (both entry points come from the wheel's metadata), and the release
# tests themselves.
WHEEL_SUITES = (*CORE_SUITES, *CONTRACT_SUITES, "tests/plugin", "tests/cli", "tests/release")
# Two tests assume the source checkout's layout, not the wheel's: they find
# examples/fastapi_app/app.py through teams_ehr.demo.example.EXAMPLE_PATH (derived from the
# package's own location), and expect that path to be consulted, while a wheel ships the example
# as teams_ehr.demo._fastapi_example. The wheel's demo app is tested by
# test_fastapi_example_passes_the_host_contract, which runs here.
SOURCE_TREE_ONLY = (
    "tests/examples/test_fastapi_example.py::test_fastapi_example_runs_from_a_settings_file",
    "tests/examples/test_fastapi_example.py::test_missing_example_is_a_clear_error",
)
# Test tools of the floors session, beside the core dependencies (their floors are in [test]).
FLOOR_TOOLS = ("pytest", "hypothesis", "trio")
# On the floors: the core suites, and the SMART token suite, which drives every core dependency
# (httpx clients, pydantic models, PyJWT and cryptography keys, anyio) with no extra installed.
FLOOR_SUITES = (*CORE_SUITES, "tests/smart_tokens")


def _outside_tree(name: str) -> Path:
    """A folder for ``name`` outside the source tree, one per checkout (so two checkouts on one
    machine never share it): nothing under it can shadow or be shadowed by ``src/``."""
    import hashlib
    import tempfile

    checkout = hashlib.sha256(str(Path.cwd().resolve()).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"teams-ehr-{checkout}" / name


def _wheel_venv() -> Path:
    return _outside_tree("wheel-venv")


def _venv_python(venv: Path) -> str:
    return str(venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python"))


def _one(session: nox.Session, pattern: str) -> Path:
    found = sorted(DIST.glob(pattern))
    if len(found) != 1:
        session.error(f"expected one {DIST / pattern}, found {len(found)}: run `nox -s build`")
    return found[0]


@nox.session(python=DEFAULT_PYTHON)
def build(session: nox.Session) -> None:
    """Build the sdist and the wheel into ``dist/`` and check them (.ci/check_dist.py).

    The wheel is built from the tree, then again from the unpacked sdist, and the two must
    match; ``twine check --strict`` renders the metadata as the package index will. Last, the
    checker must reject the real wheel with ``py.typed`` removed: a check that cannot fail
    proves nothing.
    """
    import zipfile

    session.install("build>=1.2", "twine>=6")
    shutil.rmtree(DIST, ignore_errors=True)
    session.run("python", "-m", "build", "--sdist", "--wheel", "--outdir", str(DIST))
    session.run("python", ".ci/check_dist.py", str(DIST), "--rebuild")
    session.run(
        "twine", "check", "--strict", str(_one(session, "*.whl")), str(_one(session, "*.tar.gz"))
    )

    broken = Path(session.create_tmp()) / "broken-dist"
    shutil.rmtree(broken, ignore_errors=True)
    broken.mkdir()
    shutil.copy2(_one(session, "*.tar.gz"), broken)
    wheel = _one(session, "*.whl")
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(broken / wheel.name, "w") as target:
        for item in source.infolist():
            if item.filename != "teams_ehr/py.typed":
                target.writestr(item, source.read(item))
    output = session.run("python", ".ci/check_dist.py", str(broken), silent=True, success_codes=[1])
    if "wheel: missing teams_ehr/py.typed" not in str(output):
        session.error(f"the checker did not report the missing py.typed:\n{output}")
    session.log("negative control: the checker rejects the wheel without py.typed")


@nox.session(name="wheel-tests", python=DEFAULT_PYTHON)
def wheel_tests(session: nox.Session) -> None:
    """Install the built wheel into a fresh virtual environment outside the source tree and
    run the suites against it.

    ``TEAMS_EHR_EXPECT_INSTALLED`` turns on tests/release/installed_guard.py, which fails the
    run unless every ``teams_ehr`` module the tests load comes from that environment (never
    from ``src/``). The environment's pins go to ``dist/test-environment.lock.txt`` for the
    ``sbom`` and ``audit`` sessions; the environment stays until the next run.
    """
    venv = _wheel_venv()
    shutil.rmtree(venv.parent, ignore_errors=True)
    session.run("python", "-m", "venv", str(venv))
    python = _venv_python(venv)
    session.run(python, "-m", "pip", "install", "-q", "--upgrade", "pip", external=True)
    wheel = _one(session, "*.whl").resolve()
    session.run(python, "-m", "pip", "install", "-q", f"{wheel}[test]", external=True)
    lock = session.run(
        python, "-m", "pip", "freeze", "--exclude", "teams-ehr", external=True, silent=True
    )
    TEST_LOCK.write_text(str(lock), encoding="utf-8")
    session.run(
        python,
        "-m",
        "pytest",
        "-p",
        "installed_guard",
        *WHEEL_SUITES,
        *(f"--deselect={test}" for test in SOURCE_TREE_ONLY),
        *session.posargs,
        env={
            "TEAMS_EHR_EXPECT_INSTALLED": str(venv),
            "PYTHONPATH": str(Path("tests/release").resolve()),
        },
        external=True,
    )


@nox.session(name="min-versions", python=DEFAULT_PYTHON)
def min_versions(session: nox.Session) -> None:
    """The core and SMART token suites on the lowest versions ``pyproject.toml`` allows (every
    ``>=`` floor of the core dependencies, and of the test tools): a floor nobody tests is a guess.
    """
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads(Path("pyproject.toml").read_text("utf-8"))["project"]
    tools = [
        Requirement(text)
        for text in project["optional-dependencies"]["test"]
        if Requirement(text).name in FLOOR_TOOLS
    ]
    pins = []
    for requirement in [*map(Requirement, project["dependencies"]), *tools]:
        floors = [spec.version for spec in requirement.specifier if spec.operator == ">="]
        if len(floors) != 1:
            session.error(f"{requirement} declares no single >= floor to test")
        pins.append(f"{requirement.name}=={floors[0]}")
    constraints = Path(session.create_tmp()) / "floors.txt"
    constraints.write_text("\n".join(pins) + "\n", encoding="utf-8")
    session.log("floors: " + ", ".join(pins))
    session.install("-c", str(constraints), "-e", ".", *FLOOR_TOOLS)
    session.run("python", "-m", "pip", "freeze", "--exclude-editable")
    session.run("python", "-m", "pytest", "-p", "no:teams_ehr", *FLOOR_SUITES, *session.posargs)


@nox.session(python=DEFAULT_PYTHON)
def sbom(session: nox.Session) -> None:
    """A CycloneDX SBOM (JSON, validated against the schema) of the environment the wheel's
    suites passed in: ``dist/teams-ehr-<version>.cdx.json``."""
    session.install("cyclonedx-bom>=7.5")
    python = _venv_python(_wheel_venv())
    if not Path(python).exists():
        session.error(f"no tested environment at {python}: run `nox -s wheel-tests` first")
    name = _one(session, "*.whl").name.split("-")[1]
    session.run(
        "cyclonedx-py",
        "environment",
        "--pyproject",
        "pyproject.toml",
        "--mc-type",
        "library",
        "--output-reproducible",
        "--output-format",
        "JSON",
        "--output-file",
        str(DIST / f"teams-ehr-{name}.cdx.json"),
        python,
    )


@nox.session(python=DEFAULT_PYTHON)
def audit(session: nox.Session) -> None:
    """Known vulnerabilities in every pinned package of the tested environment, which resolves
    every declared dependency and extra: pip-audit with PyPI's advisory data.

    A package pip-audit could not audit (a mirror without the per-release JSON it reads) is
    audited by .ci/audit_pins.py from the project JSON, which covers the latest release; a pin
    neither can audit fails the session. So does any known vulnerability, and, with its own
    message, advisory data that could not be fetched: an audit that did not run never passes.
    """
    import json
    import re

    session.install("pip-audit>=2.10")
    if not TEST_LOCK.exists():
        session.error(f"no {TEST_LOCK}: run `nox -s wheel-tests` first")
    tmp = Path(session.create_tmp())
    report = tmp / "audit.json"
    report.unlink(missing_ok=True)
    session.run(
        "pip-audit",
        "--no-deps",
        "--disable-pip",
        "--progress-spinner",
        "off",
        "--requirement",
        str(TEST_LOCK),
        "--format",
        "json",
        "--output",
        str(report),
        success_codes=[0, 1],
    )
    try:
        results = json.loads(report.read_text(encoding="utf-8"))["dependencies"]
    except (OSError, ValueError, KeyError):
        session.error(
            "pip-audit wrote no report: it failed before auditing (see its output above). The "
            "audit did not run, so this session fails."
        )
    found = [
        f"{dep['name']} {dep['version']}: {vuln['id']} "
        f"(fixed in {', '.join(vuln['fix_versions']) or 'no release'})"
        for dep in results
        for vuln in dep.get("vulns", [])
    ]
    if found:
        session.error("known vulnerabilities:\n" + "\n".join(found))

    def canonical(name: str) -> str:  # PEP 503 normalized: PyJWT, fhir.resources, typing_extensions
        return re.sub(r"[-_.]+", "-", name).lower()

    skipped = {canonical(dep["name"]) for dep in results if "skip_reason" in dep}
    audited = len(results) - len(skipped)
    session.log(f"pip-audit: {audited} packages audited, {len(skipped)} it could not audit")
    if skipped:
        pins = [
            line
            for line in TEST_LOCK.read_text(encoding="utf-8").splitlines()
            if canonical(line.partition("==")[0].strip()) in skipped
        ]
        rest = tmp / "not-audited.txt"
        rest.write_text("\n".join(pins) + "\n", encoding="utf-8")
        session.log("auditing those from the project JSON: .ci/audit_pins.py")
        session.run("python", ".ci/audit_pins.py", str(rest))
