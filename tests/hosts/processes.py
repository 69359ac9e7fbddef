"""The example hosts as real server processes on 127.0.0.1, the way a deployer runs them.

``host_process("fastapi", settings)`` starts ``uvicorn --factory app:app_from_environment`` (access
log on, as uvicorn's command line defaults) and ``host_process("flask", settings)`` starts
``flask --app app:app_from_environment run`` (werkzeug's request log on), waits for ``/healthz``,
yields a :class:`HostProcess` and stops the process at exit. Its ``output()`` is what the server
printed, so a test can look for tracebacks and leaked secrets in the host's own logs.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
_START_DEADLINE_S = 60.0  # a loaded 2-core CI machine imports the whole stack slowly

HostKind = Literal["fastapi", "flask"]


@dataclass
class HostProcess:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_settings(folder: Path, *, app_base_url: str) -> Path:
    """A minimal settings file (SQLite store in ``folder``) and its keys inline."""
    key = base64.b64encode(os.urandom(32)).decode()
    settings = folder / "settings.toml"
    settings.write_text(
        f'app_base_url = "{app_base_url}"\n'
        f'store_url = "sqlite:///{folder / "store.sqlite3"}"\n'
        f'external_id_key = "{key}"\n'
        f'encryption_key = "{key}"\n'
        "[microsoft]\n"
        'client_id = "00000000-0000-0000-0000-000000000000"\n',
        encoding="utf-8",
    )
    return settings


def _command(kind: HostKind, port: int) -> list[str]:
    if kind == "fastapi":
        server = ["uvicorn", "--factory", "app:app_from_environment", "--host", "127.0.0.1"]
    else:
        server = ["flask", "--app", "app:app_from_environment", "run", "--host", "127.0.0.1"]
    return [sys.executable, "-m", *server, "--port", str(port)]


@contextmanager
def host_process(kind: HostKind, folder: Path) -> Iterator[HostProcess]:
    """Start the ``kind`` example on a free loopback port with settings written in ``folder``."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = write_settings(folder, app_base_url=url)
    env = {**os.environ, "TEAMS_EHR_SETTINGS": str(settings), "PYTHONUNBUFFERED": "1"}
    env.pop("TEAMS_EHR__ENCRYPTION_KEY", None)
    log_path = folder / f"{kind}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            _command(kind, port),
            cwd=EXAMPLES / f"{kind}_app",
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    host = HostProcess(url, process, log_path)
    try:
        _wait_until_healthy(host)
        yield host
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:  # pragma: no cover - a hung shutdown
            process.kill()
            process.wait()


def _wait_until_healthy(host: HostProcess) -> None:
    deadline = time.monotonic() + _START_DEADLINE_S
    while time.monotonic() < deadline:
        if host.process.poll() is not None:
            raise RuntimeError(f"the host exited with {host.process.returncode}:\n{host.output()}")
        try:
            if httpx.get(f"{host.url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(
        f"the host did not answer /healthz in {_START_DEADLINE_S} s:\n{host.output()}"
    )
