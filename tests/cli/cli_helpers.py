"""Settings for the store-backed commands: a TOML file naming a SQLite file store in tmp_path."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

from teams_ehr.config import TeamsEhrSettings

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
