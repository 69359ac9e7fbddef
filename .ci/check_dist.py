"""Check the built sdist and wheel before anything is tested or published (docs/release.md).

    python .ci/check_dist.py dist/            # check dist/*.whl and dist/*.tar.gz
    python .ci/check_dist.py dist/ --rebuild  # and build the wheel again from the sdist

The wheel must carry every runtime file of ``src/teams_ehr`` byte for byte (``py.typed`` too)
plus the files ``[tool.hatch.build.targets.wheel.force-include]`` maps into it, and nothing else:
no tests, no caches. Its metadata must name the version and the SPDX license of
``pyproject.toml`` and carry the license text; its entry points must be the console script and the
``pytest11`` plugin. The sdist must hold what rebuilding the wheel and running the suite need, and
no caches, virtual environments or build output. With ``--rebuild``, the wheel built from the
unpacked sdist (``python -m build``) must have the same files with the same contents.

Each problem is printed on one line; the exit status is 1 when there is any.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "teams_ehr"
# Path parts that are never shipped: caches, environments, build output, local data.
NEVER_SHIPPED = {
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    ".hypothesis",
    ".import_linter_cache",
    ".nox",
    ".venv",
    ".ci-venv",
    ".git",
    "site",
    "dist",
    "build",
    "mutants",
    "test-artifacts",
}
NEVER_SHIPPED_SUFFIXES = (".pyc", ".pyo", ".sqlite3", ".db")
# What the sdist must hold besides the package: the build and the suite run from it.
SDIST_REQUIRED = (
    "pyproject.toml",
    "README.md",
    "LICENSE",
    "CHANGELOG.md",
    "SECURITY.md",
    "CONTRIBUTING.md",
    "tests/conftest.py",
)


def project_settings(root: Path = ROOT) -> dict[str, object]:
    return tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))


def runtime_sources(root: Path = ROOT) -> list[Path]:
    """Every file of ``src/teams_ehr`` that the package needs at run time (not caches)."""
    return [
        path
        for path in sorted((root / "src" / PACKAGE).rglob("*"))
        if path.is_file() and not _never_shipped(path.relative_to(root).as_posix())
    ]


def expected_wheel_files(root: Path = ROOT) -> dict[str, bytes]:
    """Path inside the wheel → content, for every runtime file the wheel must carry."""
    files = {
        path.relative_to(root / "src").as_posix(): path.read_bytes()
        for path in runtime_sources(root)
    }
    hatch = project_settings(root)["tool"]["hatch"]  # type: ignore[index]
    force_include = hatch["build"]["targets"]["wheel"].get("force-include", {})
    for source, target in force_include.items():
        files[target] = (root / source).read_bytes()
    return files


def _never_shipped(name: str) -> bool:
    path = PurePosixPath(name)
    return bool(NEVER_SHIPPED & set(path.parts)) or path.name.endswith(NEVER_SHIPPED_SUFFIXES)


def check_wheel(wheel: Path, root: Path = ROOT) -> list[str]:
    """Everything wrong with ``wheel``, one line each."""
    project = project_settings(root)["project"]  # type: ignore[index]
    with zipfile.ZipFile(wheel) as archive:
        contents = {name: archive.read(name) for name in archive.namelist() if name[-1:] != "/"}
    dist_info = f"{PACKAGE}-{project['version']}.dist-info"
    shipped = {name: data for name, data in contents.items() if not name.startswith(dist_info)}
    problems = [f"wheel: {name} is never shipped" for name in contents if _never_shipped(name)]
    expected = expected_wheel_files(root)
    problems += [f"wheel: missing {name}" for name in sorted(expected.keys() - shipped.keys())]
    problems += [
        f"wheel: {name} differs from the source tree"
        for name in sorted(expected.keys() & shipped.keys())
        if expected[name] != shipped[name]
    ]
    problems += [
        f"wheel: unexpected {name} (not a runtime file of src/{PACKAGE})"
        for name in sorted(shipped.keys() - expected.keys())
        if not _never_shipped(name)
    ]
    metadata_name = f"{dist_info}/METADATA"
    if metadata_name not in contents:
        return [*problems, f"wheel: no {metadata_name} (is the version {project['version']}?)"]
    problems += _check_metadata("wheel", contents[metadata_name].decode(), project)
    license_text = (root / "LICENSE").read_bytes()
    if contents.get(f"{dist_info}/licenses/LICENSE") != license_text:
        problems.append(f"wheel: {dist_info}/licenses/LICENSE is not the LICENSE file")
    problems += _check_entry_points(contents.get(f"{dist_info}/entry_points.txt", b"").decode())
    problems += _check_record(contents, f"{dist_info}/RECORD")
    return problems


def _check_metadata(artifact: str, text: str, project: dict[str, object]) -> list[str]:
    metadata = Parser().parsestr(text)
    wanted = {
        "Name": str(project["name"]),
        "Version": str(project["version"]),
        "License-Expression": str(project["license"]),
        "Requires-Python": str(project["requires-python"]),
        "Description-Content-Type": "text/markdown",
    }
    problems = [
        f"{artifact}: metadata {field} is {metadata.get(field)!r}, expected {value!r}"
        for field, value in wanted.items()
        if metadata.get(field) != value
    ]
    if "LICENSE" not in metadata.get_all("License-File", []):
        problems.append(f"{artifact}: metadata names no License-File LICENSE")
    if not str(metadata.get_payload()).strip():
        problems.append(f"{artifact}: metadata has no long description (README.md)")
    return problems


def _check_entry_points(text: str) -> list[str]:
    wanted = {
        ("console_scripts", "teams-ehr", "teams_ehr.cli:main"),
        ("pytest11", "teams_ehr", "teams_ehr.testing.plugin"),
    }
    found, section = set(), ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line.strip("[]")
        elif "=" in line:
            name, _, value = line.partition("=")
            found.add((section, name.strip(), value.strip()))
    return [f"wheel: no entry point {s}: {n} = {v}" for s, n, v in sorted(wanted - found)]


def _check_record(contents: dict[str, bytes], record_name: str) -> list[str]:
    """RECORD lists every file of the wheel with its hash (PEP 376, the wheel spec)."""
    rows = list(csv.reader(io.StringIO(contents.get(record_name, b"").decode())))
    recorded = {row[0]: row[1] for row in rows if row}
    problems = [
        f"wheel: {name} is not in RECORD" for name in sorted(contents.keys() - recorded.keys())
    ]
    for name, digest in sorted(recorded.items()):
        if name == record_name:
            continue
        if name not in contents:
            problems.append(f"wheel: RECORD lists {name}, which is not in the wheel")
        elif digest != "sha256=" + _urlsafe_sha256(contents[name]):
            problems.append(f"wheel: RECORD hash of {name} does not match its content")
    return problems


def _urlsafe_sha256(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def check_sdist(sdist: Path, root: Path = ROOT) -> list[str]:
    """Everything wrong with ``sdist``, one line each."""
    project = project_settings(root)["project"]  # type: ignore[index]
    top = f"{PACKAGE}-{project['version']}"
    with tarfile.open(sdist) as archive:
        members = {m.name: m for m in archive.getmembers() if m.isfile()}
        pkg_info = (
            archive.extractfile(members[f"{top}/PKG-INFO"])
            if f"{top}/PKG-INFO" in members
            else None
        )
        pkg_info_text = pkg_info.read().decode() if pkg_info else ""
    names = {name.removeprefix(f"{top}/") for name in members if name.startswith(f"{top}/")}
    problems = [
        f"sdist: {name} is outside {top}/" for name in members if not name.startswith(f"{top}/")
    ]
    problems += [
        f"sdist: {name} is never shipped" for name in sorted(names) if _never_shipped(name)
    ]
    hatch = project_settings(root)["tool"]["hatch"]  # type: ignore[index]
    force_include = hatch["build"]["targets"]["wheel"].get("force-include", {})
    required = [*SDIST_REQUIRED, *force_include]
    required += [path.relative_to(root).as_posix() for path in runtime_sources(root)]
    problems += [f"sdist: missing {name}" for name in required if name not in names]
    if not pkg_info_text:
        return [*problems, "sdist: no PKG-INFO"]
    return problems + _check_metadata("sdist", pkg_info_text, project)


def wheel_contents(wheel: Path) -> dict[str, str]:
    """File → sha256 of its content, for comparing two builds."""
    with zipfile.ZipFile(wheel) as archive:
        return {
            name: hashlib.sha256(archive.read(name)).hexdigest()
            for name in archive.namelist()
            if not name.endswith("/RECORD")
        }


def compare_wheels(built: Path, rebuilt: Path) -> list[str]:
    """How the wheel rebuilt from the sdist differs from the one built from the tree."""
    first, second = wheel_contents(built), wheel_contents(rebuilt)
    problems = [f"rebuild: {name} is missing" for name in sorted(first.keys() - second.keys())]
    problems += [f"rebuild: {name} is extra" for name in sorted(second.keys() - first.keys())]
    problems += [
        f"rebuild: {name} differs"
        for name in sorted(first.keys() & second.keys())
        if first[name] != second[name]
    ]
    return problems


def rebuild_from_sdist(sdist: Path, workdir: Path) -> Path:
    """Unpack ``sdist`` and build its wheel in an isolated environment; the wheel's path."""
    with tarfile.open(sdist) as archive:
        archive.extractall(workdir / "unpacked", filter="data")
        (top,) = (workdir / "unpacked").iterdir()
    subprocess.run(  # noqa: S603 (our own interpreter, fixed arguments)
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(workdir / "out"), str(top)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    (wheel,) = (workdir / "out").glob("*.whl")
    return wheel


def check_dist(dist: Path, *, rebuild: bool, root: Path = ROOT) -> list[str]:
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        return [f"{dist}: expected one wheel and one sdist, found {len(wheels)} and {len(sdists)}"]
    problems = check_wheel(wheels[0], root) + check_sdist(sdists[0], root)
    if rebuild:
        with tempfile.TemporaryDirectory() as workdir:
            problems += compare_wheels(wheels[0], rebuild_from_sdist(sdists[0], Path(workdir)))
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dist", type=Path, help="the folder holding one wheel and one sdist")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the wheel from the sdist")
    args = parser.parse_args(argv)
    problems = check_dist(args.dist, rebuild=args.rebuild)
    for problem in problems:
        print(problem)
    if not problems:
        print(
            f"{args.dist}: wheel and sdist are complete"
            + (" and rebuild the same" if args.rebuild else "")
        )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
