""".ci/check_dist.py rejects an incomplete or polluted sdist or wheel (docs/release.md).

The artifacts here are laid out from the tree the way hatchling lays them out, offline: the
checker must accept them as they are and name the file in each broken copy. ``nox -s build``
runs the same checker on the real artifacts, and checks that it rejects the real wheel with
``py.typed`` removed.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
VERSION = PROJECT["version"]
DIST_INFO = f"teams_ehr-{VERSION}.dist-info"


def _load_checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_dist", ROOT / ".ci" / "check_dist.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


check_dist = _load_checker()


def metadata(**overrides: str) -> str:
    fields = {
        "Metadata-Version": "2.4",
        "Name": PROJECT["name"],
        "Version": VERSION,
        "License-Expression": PROJECT["license"],
        "License-File": "LICENSE",
        "Requires-Python": PROJECT["requires-python"],
        "Description-Content-Type": "text/markdown",
        **overrides,
    }
    head = "".join(f"{key}: {value}\n" for key, value in fields.items() if value)
    return head + "\n" + (ROOT / "README.md").read_text(encoding="utf-8")


def _hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_wheel(
    folder: Path,
    *,
    drop: tuple[str, ...] = (),
    add: dict[str, bytes] | None = None,
    meta: str | None = None,
    bad_record: bool = False,
) -> Path:
    files = {k: v for k, v in check_dist.expected_wheel_files(ROOT).items() if k not in drop}
    files.update(add or {})
    files[f"{DIST_INFO}/METADATA"] = (meta or metadata()).encode()
    files[f"{DIST_INFO}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
    files[f"{DIST_INFO}/entry_points.txt"] = (
        b"[console_scripts]\nteams-ehr = teams_ehr.cli:main\n\n"
        b"[pytest11]\nteams_ehr = teams_ehr.testing.plugin\n"
    )
    files[f"{DIST_INFO}/licenses/LICENSE"] = (ROOT / "LICENSE").read_bytes()
    record = "".join(f"{name},{_hash(data)},{len(data)}\n" for name, data in files.items())
    if bad_record:
        record = record.replace(_hash(files["teams_ehr/py.typed"]), _hash(b"other"))
    files[f"{DIST_INFO}/RECORD"] = (record + f"{DIST_INFO}/RECORD,,\n").encode()
    wheel = folder / f"teams_ehr-{VERSION}-py3-none-any.whl"
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return wheel


def make_sdist(
    folder: Path, *, drop: tuple[str, ...] = (), add: dict[str, bytes] | None = None
) -> Path:
    top = f"teams_ehr-{VERSION}"
    names = [
        *check_dist.SDIST_REQUIRED,
        "examples/fastapi_app/app.py",
        *(path.relative_to(ROOT).as_posix() for path in check_dist.runtime_sources(ROOT)),
    ]
    files = {name: (ROOT / name).read_bytes() for name in names if name not in drop}
    files.update(add or {})
    files["PKG-INFO"] = metadata().encode()
    sdist = folder / f"{top}.tar.gz"
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(sdist, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return sdist


def test_the_tree_laid_out_as_artifacts_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_wheel(tmp_path)
    make_sdist(tmp_path)
    assert check_dist.main([str(tmp_path)]) == 0
    assert "wheel and sdist are complete" in capsys.readouterr().out


@pytest.mark.parametrize(
    "runtime_file",
    ["teams_ehr/py.typed", "teams_ehr/store/migrations.py", "teams_ehr/demo/_fastapi_example.py"],
)
def test_a_wheel_missing_a_runtime_file_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], runtime_file: str
) -> None:
    make_wheel(tmp_path, drop=(runtime_file,))
    make_sdist(tmp_path)
    assert check_dist.main([str(tmp_path)]) == 1
    assert capsys.readouterr().out.splitlines() == [f"wheel: missing {runtime_file}"]


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ("teams_ehr/__pycache__/app.cpython-311.pyc", "is never shipped"),
        ("tests/test_app.py", "unexpected tests/test_app.py"),
        ("teams_ehr/conftest.py", "unexpected teams_ehr/conftest.py"),
        (".hypothesis/examples/x", "is never shipped"),
    ],
)
def test_a_wheel_shipping_tests_or_caches_fails(tmp_path: Path, extra: str, problem: str) -> None:
    wheel = make_wheel(tmp_path, add={extra: b"x"})
    problems = check_dist.check_wheel(wheel, ROOT)
    assert len(problems) == 1
    assert extra in problems[0]
    assert problem in problems[0]


def test_a_wheel_file_that_differs_from_the_tree_fails(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, add={"teams_ehr/errors.py": b"# stale\n"})
    assert check_dist.check_wheel(wheel, ROOT) == [
        "wheel: teams_ehr/errors.py differs from the source tree"
    ]


def test_wrong_license_metadata_fails(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, meta=metadata(**{"License-Expression": "MIT", "License-File": ""}))
    assert check_dist.check_wheel(wheel, ROOT) == [
        "wheel: metadata License-Expression is 'MIT', expected 'Apache-2.0'",
        "wheel: metadata names no License-File LICENSE",
    ]


def test_a_record_that_does_not_match_fails(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, bad_record=True)
    assert check_dist.check_wheel(wheel, ROOT) == [
        "wheel: RECORD hash of teams_ehr/py.typed does not match its content"
    ]


def test_an_sdist_missing_project_files_or_shipping_caches_fails(tmp_path: Path) -> None:
    sdist = make_sdist(
        tmp_path,
        drop=("CHANGELOG.md", "src/teams_ehr/py.typed"),
        add={".mypy_cache/3.11/x.json": b"{}", "tests/__pycache__/t.pyc": b""},
    )
    assert sorted(check_dist.check_sdist(sdist, ROOT)) == [
        "sdist: .mypy_cache/3.11/x.json is never shipped",
        "sdist: missing CHANGELOG.md",
        "sdist: missing src/teams_ehr/py.typed",
        "sdist: tests/__pycache__/t.pyc is never shipped",
    ]


def test_a_rebuilt_wheel_must_match(tmp_path: Path) -> None:
    built = make_wheel(tmp_path / "a")
    same = make_wheel(tmp_path / "b")
    other = make_wheel(tmp_path / "c", drop=("teams_ehr/py.typed",), add={"teams_ehr/x.py": b""})
    assert check_dist.compare_wheels(built, same) == []
    assert check_dist.compare_wheels(built, other) == [
        "rebuild: teams_ehr/py.typed is missing",
        "rebuild: teams_ehr/x.py is extra",
    ]


def test_a_dist_folder_needs_one_of_each(tmp_path: Path) -> None:
    make_wheel(tmp_path)
    assert check_dist.check_dist(tmp_path, rebuild=False, root=ROOT) == [
        f"{tmp_path}: expected one wheel and one sdist, found 1 and 0"
    ]
