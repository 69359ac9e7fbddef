"""A Flask host ends: ``flask routes`` and a script that builds the bridge exit on their own.

Issue 9, finding 6: a script that built :class:`FlaskTeamsEhr` never ended. At interpreter exit
the bridge's portal was torn down by garbage collection, calling into an event-loop thread that
no longer ran. The bridge now closes the runtime and stops its portal at exit (or when
``close()`` is called, or its ``with`` block ends).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from flask import Flask

from hosts.processes import EXAMPLES, write_settings
from teams_ehr.app import TeamsEhr
from teams_ehr.config import load_settings
from teams_ehr.errors import ConfigurationError
from teams_ehr.integrations.flask import FlaskTeamsEhr

pytestmark = pytest.mark.slow

_EXIT_DEADLINE_S = 60.0

SCRIPT = """
import sys
from pathlib import Path
from flask import Flask
from teams_ehr.app import TeamsEhr
from teams_ehr.config import load_settings
from teams_ehr.integrations.flask import FlaskTeamsEhr

app = Flask("script")
FlaskTeamsEhr(TeamsEhr(load_settings(Path(sys.argv[1])))).init_app(app)
print("routes:", len(app.url_map._rules))
"""


def _run(argv: list[str], *, cwd: Path, settings: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TEAMS_EHR_SETTINGS": str(settings)}
    env.pop("TEAMS_EHR__ENCRYPTION_KEY", None)
    try:
        return subprocess.run(
            argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=_EXIT_DEADLINE_S
        )
    except subprocess.TimeoutExpired:  # before the fix: the process never ended
        pytest.fail(f"{argv[2:]} did not exit within {_EXIT_DEADLINE_S} s")


def test_a_script_that_builds_the_bridge_exits(tmp_path: Path) -> None:
    settings = write_settings(tmp_path, app_base_url="http://127.0.0.1:8000")
    script = tmp_path / "build.py"
    script.write_text(SCRIPT, encoding="utf-8")
    done = _run([sys.executable, str(script), str(settings)], cwd=tmp_path, settings=settings)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("routes: ")
    assert "Traceback" not in done.stderr


def test_flask_routes_on_the_example_exits(tmp_path: Path) -> None:
    settings = write_settings(tmp_path, app_base_url="http://127.0.0.1:8000")
    argv = [sys.executable, "-m", "flask", "--app", "app:app_from_environment", "routes"]
    done = _run(argv, cwd=EXAMPLES / "flask_app", settings=settings)
    assert done.returncode == 0, done.stderr
    assert "/launch/<org_id>/<environment>" in done.stdout


def test_the_bridge_closes_the_runtime_at_the_end_of_its_block(tmp_path: Path) -> None:
    settings = write_settings(tmp_path, app_base_url="http://127.0.0.1:8000")
    runtime = TeamsEhr(load_settings(settings))
    with FlaskTeamsEhr(runtime) as bridge:
        bridge.init_app(Flask("block"))
        assert runtime.store is not None
    with pytest.raises(ConfigurationError) as closed:
        runtime.store  # noqa: B018 - the property raises once the runtime is closed
    assert closed.value.reason == "not_open"
    bridge.close()  # closing again is harmless
