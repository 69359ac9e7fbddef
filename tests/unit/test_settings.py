"""Settings fail at construction, with one typed error naming each bad field and its fix.

``TeamsEhrSettings`` (and its sections) built in Python, validated from a mapping or JSON, or
loaded with ``load_settings`` either return frozen settings or raise one ``ConfigurationError``
(reason ``invalid_settings``); pydantic's ``ValidationError`` never reaches the integrator, and no
message carries a secret value (docs/quickstart.md#settings).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from teams_ehr.config import (
    AttendanceSettings,
    MicrosoftSettings,
    SmartSettings,
    TeamsEhrSettings,
    load_settings,
)
from teams_ehr.errors import ConfigurationError

KEY = base64.b64encode(bytes(range(32))).decode()
OTHER_KEY = base64.urlsafe_b64encode(bytes(range(100, 132))).decode().rstrip("=")
CANARY = "Canary-Secret-Value-7f3a"


def _minimal(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "app_base_url": "https://visits.example.org",
        "encryption_key": KEY,
        "external_id_key": OTHER_KEY,
        "microsoft": {"client_id": "3f2e1d0c-b9a8-4765-8432-10fedcba9876"},
    }
    data.update(overrides)
    return data


def _refused(data: dict[str, Any]) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as caught:
        TeamsEhrSettings.model_validate(data)
    assert caught.value.reason == "invalid_settings"
    return caught.value


# -- secrets are SecretStr, whoever builds the settings -------------------------------------------


def test_plain_strings_become_secrets_when_built_in_python() -> None:
    participant = base64.b64encode(b"p" * 40).decode()
    built = TeamsEhrSettings(
        app_base_url="https://visits.example.org/",
        encryption_key=KEY,  # plain strings: pydantic wraps them in SecretStr
        external_id_key=OTHER_KEY,
        microsoft=MicrosoftSettings(client_id="app", client_secret=CANARY),
        attendance=AttendanceSettings(participant_key=participant),
    )
    secrets = (
        built.encryption_key,
        built.external_id_key,
        built.microsoft.client_secret,
        built.attendance.participant_key,
    )
    assert all(isinstance(secret, SecretStr) for secret in secrets)
    assert built.encryption_key_bytes() == bytes(range(32))
    assert built.external_id_key_bytes() == bytes(range(100, 132))
    assert built.app_base_url == "https://visits.example.org"
    for text in (repr(built), str(built), built.model_dump_json()):
        assert CANARY not in text
        assert KEY not in text


def test_every_secret_field_is_a_secret_str() -> None:
    secret_like = ("key", "secret", "password", "token")
    models = (TeamsEhrSettings, SmartSettings, MicrosoftSettings, AttendanceSettings)
    for model in models:
        for name, field in model.model_fields.items():
            if any(word in name for word in secret_like) and not name.endswith("_path"):
                assert "SecretStr" in str(field.annotation), f"{model.__name__}.{name}"


# -- one ConfigurationError listing every bad field with its fix ---------------------------------


def test_every_bad_field_is_listed_with_its_fix_and_no_secret(tmp_path: Path) -> None:
    data = _minimal(
        app_base_url="visits.example.org",
        encryption_key=CANARY + "!!",
        external_id_key=base64.b64encode(CANARY.encode()).decode(),
        microsoft={
            "client_id": "app",
            "client_secret": CANARY,
            "authority_host": "https://login.microsoftonline.com/common",
        },
        smart={"test_key_path": str(tmp_path / "missing.pem")},
    )
    error = _refused(data)
    message = str(error)
    assert message.startswith(
        "invalid settings: app_base_url, encryption_key, external_id_key, "
        "microsoft.authority_host, smart.test_key_path\n"
    )
    lines = dict(line.strip().split(": ", 1) for line in message.splitlines()[1:])
    assert "absolute http(s) URL" in lines["app_base_url"]
    assert "https://login.microsoftonline.com" in lines["microsoft.authority_host"]
    assert "no path" in lines["microsoft.authority_host"]
    assert "not base64" in lines["encryption_key"]
    assert "os.urandom(32)" in lines["encryption_key"]  # how to make a good one
    assert "at least 32 bytes" in lines["external_id_key"]
    assert "missing.pem" in lines["smart.test_key_path"]
    assert "teams-ehr keys new" in lines["smart.test_key_path"]
    for text in (message, repr(error)):
        assert CANARY not in text
    assert error.__cause__ is None
    assert error.__suppress_context__


@pytest.mark.parametrize(
    ("overrides", "field", "fix"),
    [
        ({"app_base_url": "ftp://visits.example.org"}, "app_base_url", "absolute http(s) URL"),
        ({"app_base_url": "https://"}, "app_base_url", "absolute http(s) URL"),
        ({"app_base_url": "https://v.example.org/?a=1"}, "app_base_url", "no query"),
        ({"app_base_url": "https://u:p@v.example.org"}, "app_base_url", "user info"),
        ({"app_base_url": "https://v.example.org:99999"}, "app_base_url", "absolute http(s)"),
        ({"store_url": "mysql://db/x"}, "store_url", "postgresql://"),
        ({"store_url": "sqlite://relative.db"}, "store_url", "sqlite:///relative.db"),
        ({"encryption_key": base64.b64encode(b"k" * 16).decode()}, "encryption_key", "32"),
        ({"encryption_key": base64.b64encode(b"k" * 33).decode()}, "encryption_key", "32"),
        ({"encryption_key": "REPLACE-WITH-BASE64-32-BYTES"}, "encryption_key", "32"),
        ({"encryption_key": "a" * 43 + "é"}, "encryption_key", "not base64"),
        ({"encryption_key": "a" * 45}, "encryption_key", "not base64"),
        ({"external_id_key": ""}, "external_id_key", "at least 32 bytes"),
        ({"allow_http": "sometimes"}, "allow_http", "boolean"),
        ({"admin": {"session_ttl": 0}}, "admin.session_ttl", "greater than"),
        ({"attendance": {"reconcile_delay": -1}}, "attendance.reconcile_delay", "greater than"),
        (
            {"attendance": {"participant_key": base64.b64encode(b"p" * 31).decode()}},
            "attendance.participant_key",
            "at least 32 bytes",
        ),
        ({"smart": {"signing_alg": "HS256"}}, "smart.signing_alg", "'RS384' or 'ES384'"),
        ({"microsoft": {"client_id": ""}}, "microsoft.client_id", "at least 1 character"),
        ({"microsoft": {}}, "microsoft.client_id", "required"),
        (
            {"microsoft": {"client_id": "a", "authority_host": "http://login.microsoftonline.com"}},
            "microsoft.authority_host",
            "https",
        ),
        (
            {"microsoft": {"client_id": "a", "authority_host": "https://login.example.org"}},
            "microsoft.authority_host",
            "login.microsoftonline.us",
        ),
        (
            {"microsoft": {"client_id": "a", "graph_base_url": "graph.microsoft.com"}},
            "microsoft.graph_base_url",
            "absolute http(s) URL",
        ),
        ({"surprise": 1}, "surprise", "unknown setting"),
        ({"smart": {"scopes": ["openid"]}}, "smart.scopes", "provider_scopes"),
    ],
)
def test_each_bad_setting_is_refused_at_construction(
    overrides: dict[str, Any], field: str, fix: str
) -> None:
    data = _minimal()
    for name, value in overrides.items():
        nested = isinstance(value, dict) and value and isinstance(data.get(name), dict)
        data[name] = {**data[name], **value} if nested else value
    error = _refused(data)
    line = next(line for line in str(error).splitlines() if line.strip().startswith(field + ":"))
    assert fix in line


def test_paired_files_and_missing_files_are_refused(tmp_path: Path) -> None:
    pem = tmp_path / "a.pem"
    pem.write_text("-----BEGIN-----", encoding="utf-8")
    error = _refused(
        _minimal(
            microsoft={"client_id": "a", "certificate_path": str(pem)},
            attendance={"certificate_key_path": str(pem)},
            smart={"production_key_path": str(tmp_path)},  # a folder is not a key file
        )
    )
    lines = str(error).splitlines()
    assert lines[0] == "invalid settings: attendance, microsoft, smart.production_key_path"
    assert any("microsoft: set both certificate_path and private_key_path" in x for x in lines)
    assert any("attendance: set both certificate_path and certificate_key_path" in x for x in lines)
    ok = TeamsEhrSettings.model_validate(
        _minimal(
            microsoft={"client_id": "a", "certificate_path": str(pem), "private_key_path": pem},
            smart={"production_key_path": str(pem)},
        )
    )
    assert ok.microsoft.certificate() == (pem.read_bytes(), pem.read_bytes())


def test_good_variants_are_accepted_and_normalized() -> None:
    padded = base64.b64encode(bytes(32)).decode()
    built = TeamsEhrSettings.model_validate(
        _minimal(
            app_base_url="http://127.0.0.1:8000/visits/",
            store_url="sqlite://:memory:",
            encryption_key=f"  {padded}\n",
            external_id_key=base64.urlsafe_b64encode(b"\xfb" * 48).decode(),
            microsoft={"client_id": "a", "authority_host": "https://login.microsoftonline.us/"},
        )
    )
    assert built.app_base_url == "http://127.0.0.1:8000/visits"
    assert built.microsoft.authority_host == "https://login.microsoftonline.us"
    assert built.encryption_key_bytes() == bytes(32)
    assert built.external_id_key_bytes() == b"\xfb" * 48
    postgres = _minimal(store_url="postgresql://teams_ehr@db.internal/teams_ehr")
    assert TeamsEhrSettings.model_validate(postgres).store_url.startswith("postgresql://")


def test_every_constructor_raises_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="client_id") as caught:
        MicrosoftSettings(client_id="")
    assert caught.value.reason == "invalid_settings"
    with pytest.raises(ConfigurationError, match="signing_alg"):
        SmartSettings.model_validate({"signing_alg": "none"})
    with pytest.raises(ConfigurationError, match="poll_interval"):
        AttendanceSettings.model_validate({"poll_interval": 0})
    with pytest.raises(ConfigurationError, match="encryption_key"):
        TeamsEhrSettings.model_validate_json(json.dumps(_minimal(encryption_key="x")))
    with pytest.raises(ConfigurationError, match="TeamsEhrSettings"):
        TeamsEhrSettings.model_validate(["not", "a", "mapping"])
    with pytest.raises(ConfigurationError, match="app_base_url: required"):
        TeamsEhrSettings(  # type: ignore[call-arg]
            encryption_key=SecretStr(KEY),
            external_id_key=SecretStr(KEY),
            microsoft=MicrosoftSettings(client_id="a"),
        )


# -- load_settings: str paths, relative paths, the environment -----------------------------------


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_load_settings_takes_a_str_path_and_resolves_relative_paths_against_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "etc"
    for name in ("test.pem", "cert.pem", "key.pem", "n-cert.pem", "n-key.pem"):
        _write(folder / "keys" / name, "-----BEGIN-----")
    config = _write(
        folder / "settings.toml",
        'app_base_url = "https://visits.example.org"\n'
        'store_url = "sqlite:///data/teams-ehr.sqlite3"\n'
        f'encryption_key = "{KEY}"\n'
        f'external_id_key = "{KEY}"\n'
        "[smart]\n"
        'test_key_path = "keys/test.pem"\n'
        "[microsoft]\n"
        'client_id = "app"\n'
        'certificate_path = "keys/cert.pem"\n'
        'private_key_path = "./keys/key.pem"\n'
        "[attendance]\n"
        'certificate_path = "keys/n-cert.pem"\n'
        f'certificate_key_path = "{folder / "keys" / "n-key.pem"}"\n',
    )
    monkeypatch.chdir(tmp_path)  # the working directory is not the file's folder
    loaded = load_settings("etc/settings.toml", environ={})
    assert loaded.store_url == f"sqlite:///{folder / 'data' / 'teams-ehr.sqlite3'}"
    assert loaded.smart.test_key_path == folder / "keys" / "test.pem"
    assert loaded.microsoft.certificate_path == folder / "keys" / "cert.pem"
    assert loaded.microsoft.private_key_path == folder / "keys" / "key.pem"
    assert loaded.attendance.certificate_path == folder / "keys" / "n-cert.pem"
    assert loaded.attendance.certificate_key_path == folder / "keys" / "n-key.pem"
    assert load_settings(config, environ={}) == loaded  # Path and str alike

    # Values from the environment (and the defaults) are relative to the working directory.
    environ = {"TEAMS_EHR__STORE_URL": "sqlite:///here.db"}
    assert load_settings(config, environ=environ).store_url == "sqlite:///here.db"
    _write(tmp_path / "keys" / "test.pem", "-----BEGIN-----")
    environ = {"TEAMS_EHR__SMART__TEST_KEY_PATH": "keys/test.pem"}
    assert load_settings(config, environ=environ).smart.test_key_path == Path("keys/test.pem")
    environ = {
        "TEAMS_EHR__APP_BASE_URL": "https://visits.example.org",
        "TEAMS_EHR__ENCRYPTION_KEY": KEY,
        "TEAMS_EHR__EXTERNAL_ID_KEY": KEY,
        "TEAMS_EHR__MICROSOFT__CLIENT_ID": "app",
    }
    assert load_settings(environ=environ).store_url == "sqlite:///teams-ehr.sqlite3"


def test_a_missing_relative_file_names_the_resolved_path(tmp_path: Path) -> None:
    config = _write(
        tmp_path / "settings.toml",
        'app_base_url = "https://visits.example.org"\n'
        f'encryption_key = "{KEY}"\n'
        f'external_id_key = "{KEY}"\n'
        "[smart]\n"
        'test_key_path = "keys/test.pem"\n'
        "[microsoft]\n"
        'client_id = "app"\n',
    )
    with pytest.raises(ConfigurationError) as caught:
        load_settings(config, environ={})
    assert str(tmp_path / "keys" / "test.pem") in str(caught.value)


def test_unreadable_settings_files_are_configuration_errors(tmp_path: Path) -> None:
    cases = {
        "missing.toml": None,
        "broken.toml": b"app_base_url = \n",
        "latin1.toml": 'app_base_url = "https://visits.example.org/\xe9"\n'.encode("latin-1"),
    }
    for name, content in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
        with pytest.raises(ConfigurationError) as caught:
            load_settings(str(tmp_path / name), environ={})
        assert caught.value.reason == "invalid_settings"
        assert name in str(caught.value)
    with pytest.raises(ConfigurationError, match="settings file"):
        load_settings(tmp_path, environ={})  # a folder


def test_a_section_set_as_a_value_and_as_a_section_is_refused() -> None:
    environ = {
        "TEAMS_EHR__SMART__SIGNING_ALG": "ES384",
        "TEAMS_EHR__SMART": "RS384",
        "TEAMS_EHR__MICROSOFT__CLIENT_ID": "app",
    }
    with pytest.raises(ConfigurationError) as caught:
        load_settings(environ=environ)
    assert caught.value.reason == "invalid_settings"
    assert "TEAMS_EHR__SMART" in str(caught.value)
    assert "TEAMS_EHR__SMART__SIGNING_ALG" in str(caught.value)


def test_environment_secrets_are_never_echoed() -> None:
    environ = {
        "TEAMS_EHR__APP_BASE_URL": "https://visits.example.org",
        "TEAMS_EHR__ENCRYPTION_KEY": CANARY,
        "TEAMS_EHR__EXTERNAL_ID_KEY": CANARY + "=",
        "TEAMS_EHR__MICROSOFT__CLIENT_ID": "app",
        "TEAMS_EHR__MICROSOFT__CLIENT_SECRET": CANARY,
        "TEAMS_EHR__ATTENDANCE__PARTICIPANT_KEY": CANARY,
    }
    with pytest.raises(ConfigurationError) as caught:
        load_settings(environ=environ)
    assert "encryption_key" in str(caught.value)
    assert "attendance.participant_key" in str(caught.value)
    assert CANARY not in str(caught.value)


# -- nothing but settings or a TeamsEhrError, whatever the input --------------------------------

_NAMES = st.sampled_from(
    [
        "app_base_url",
        "store_url",
        "encryption_key",
        "external_id_key",
        "smart",
        "microsoft",
        "attendance",
        "admin",
        "allow_http",
        "client_id",
        "client_secret",
        "authority_host",
        "graph_base_url",
        "certificate_path",
        "private_key_path",
        "test_key_path",
        "signing_alg",
        "participant_key",
        "administrators",
        "session_ttl",
        "reconcile_delay",
        "extra_join_hosts",
    ]
)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.sampled_from(["https://a.example", "sqlite:///x.db", KEY, "/", "\x00", "P1D", "-1"])
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_NAMES | st.text(), inner),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.dictionaries(_NAMES | st.text(), _VALUES, max_size=8),
        st.builds(lambda extra: {**_minimal(), **extra}, st.dictionaries(_NAMES, _VALUES)),
        _VALUES,
    )
)
def test_any_mapping_gives_settings_or_a_teams_ehr_error(data: Any) -> None:
    assert _outcome(TeamsEhrSettings.model_validate, data) in ("settings", "invalid_settings")


def _outcome(build: Callable[[Any], TeamsEhrSettings], data: Any) -> str:
    """``"settings"``, or the reason of the ConfigurationError; anything else propagates."""
    try:
        built = build(data)
    except ConfigurationError as exc:
        return exc.reason
    return "settings" if isinstance(built, TeamsEhrSettings) else repr(built)


_PARTS = st.lists(_NAMES.map(str.upper) | st.text(max_size=6), min_size=0, max_size=3)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(_PARTS.map(lambda parts: "TEAMS_EHR__" + "__".join(parts)), st.text()))
def test_any_environment_gives_settings_or_a_teams_ehr_error(environ: dict[str, str]) -> None:
    base = {
        "TEAMS_EHR__APP_BASE_URL": "https://visits.example.org",
        "TEAMS_EHR__ENCRYPTION_KEY": KEY,
        "TEAMS_EHR__EXTERNAL_ID_KEY": KEY,
        "TEAMS_EHR__MICROSOFT__CLIENT_ID": "app",
    }
    for candidate in (environ, {**base, **environ}):
        outcome = _outcome(lambda env: load_settings(environ=env), candidate)
        assert outcome in ("settings", "invalid_settings")
