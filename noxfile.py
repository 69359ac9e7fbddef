"""Developer sessions: `nox -s tests core lint typecheck docs examples bench` (DESIGN.md)."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests", "core"]
nox.options.default_venv_backend = "venv"


@nox.session
def tests(session: nox.Session) -> None:
    """The whole suite with every extra, as the README's test command runs it."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def core(session: nox.Session) -> None:
    """No extras installed: proves the core is framework-free and msgraph-free."""
    session.install("-e", ".", "pytest", "hypothesis", "trio")
    session.run(
        "python",
        "-m",
        "pytest",
        "-p",
        "no:teams_ehr",
        "tests/unit",
        "tests/test_import_purity.py",
        "tests/test_exported_members.py",
        *session.posargs,
    )


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
