"""Settings for the store-backed commands: a TOML file naming a SQLite file store in tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from cli_helpers import CliEnv, write_settings

from teams_ehr.config import load_settings


@pytest.fixture
def no_env_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come only from the file: drop TEAMS_EHR__* variables of the outer environment."""
    import os

    for name in list(os.environ):
        if name.startswith("TEAMS_EHR__"):
            monkeypatch.delenv(name)


@pytest.fixture
def cli_env(tmp_path: Path, no_env_settings: None) -> CliEnv:
    config = write_settings(tmp_path / "settings.toml", tmp_path / "store.db")
    return CliEnv(config, load_settings(config, environ={}))


@pytest.fixture
def settings_file() -> Callable[..., Path]:
    """``settings_file(path, store_path, encryption_key=...)`` writes a settings TOML."""
    return write_settings
