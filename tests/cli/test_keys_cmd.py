"""`teams-ehr keys new` and `teams-ehr jwks` (SPEC A9, E4)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from teams_ehr.cli import main
from teams_ehr.keys import LocalSigner, jwk_thumbprint


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_keys_new_then_jwks(tmp_path: Path, capsys: pytest.CaptureFixture[str], alg: str) -> None:
    pem = tmp_path / "keys" / "test.pem"
    assert main(["keys", "new", "--alg", alg, "--out", str(pem)]) == 0
    out = capsys.readouterr().out
    assert "PRIVATE" not in out
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    kid = LocalSigner.from_pem(pem.read_bytes(), alg).kid
    assert f"kid: {kid}" in out

    assert main(["jwks", "--alg", alg, str(pem)]) == 0
    jwks = json.loads(capsys.readouterr().out)
    (key,) = jwks["keys"]
    assert key["kid"] == kid == jwk_thumbprint(key)
    assert key["alg"] == alg
    assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)


def test_keys_new_refuses_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pem = tmp_path / "k.pem"
    pem.write_text("keep me")
    assert main(["keys", "new", "--out", str(pem)]) == 2
    assert "file_exists" in capsys.readouterr().err
    assert pem.read_text() == "keep me"


def test_jwks_of_unreadable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["jwks", str(tmp_path / "missing.pem")]) == 2
    assert "cannot read" in capsys.readouterr().err
    (tmp_path / "bad.pem").write_text("not a key")
    assert main(["jwks", str(tmp_path / "bad.pem")]) == 2
    assert "bad_key" in capsys.readouterr().err
