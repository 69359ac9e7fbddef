"""Settings for the store-backed commands: a TOML file naming a SQLite file store in tmp_path."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from teams_ehr.config import TeamsEhrSettings, load_settings

KEY_CANARY = base64.b64encode(b"canary-encryption-key-32-bytes!!").decode()


@dataclass(frozen=True)
class CliEnv:
    config: Path
    settings: TeamsEhrSettings
    key_canary: str = KEY_CANARY

    def args(self, *argv: str) -> list[str]:
        return [*argv, "--config", str(self.config)]


def write_settings(path: Path, store: Path, *, encryption_key: str = KEY_CANARY) -> Path:
    path.write_text(
        f'app_base_url = "https://app.example"\n'
        f'store_url = "sqlite:///{store}"\n'
        f'encryption_key = "{encryption_key}"\n'
        f'external_id_key = "{base64.b64encode(bytes(range(32))).decode()}"\n'
        "[microsoft]\n"
        'client_id = "3f2e1d0c-b9a8-4765-8432-10fedcba9876"\n',
        encoding="utf-8",
    )
    return path


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
