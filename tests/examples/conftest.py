"""The example apps start from a settings file plus secrets in the environment (SPEC E2)."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest


@pytest.fixture
def settings_from_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point ``$TEAMS_EHR_SETTINGS`` at a minimal TOML file; the encryption key comes from the
    environment. Returns the SQLite store path the settings name."""
    key = base64.b64encode(os.urandom(32)).decode()
    store = tmp_path / "store.sqlite3"
    settings = tmp_path / "settings.toml"
    settings.write_text(
        'app_base_url = "https://visits.example.org"\n'
        f'store_url = "sqlite:///{store}"\n'
        f'external_id_key = "{key}"\n'
        "[microsoft]\n"
        'client_id = "00000000-0000-0000-0000-000000000000"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("TEAMS_EHR_SETTINGS", str(settings))
    monkeypatch.setenv("TEAMS_EHR__ENCRYPTION_KEY", key)  # secrets from the environment
    return store
