"""Settings, secrets, the embedded server and the bare app."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import redis
from starlette.testclient import TestClient

from app import create_app
from strictgate.secrets import constant_time_equals, load_or_create_secret
from strictgate.settings import SettingsError, load_settings


def test_settings_defaults_match_the_contract() -> None:
    s = load_settings({})
    assert (s.host, s.port, s.redis_url, s.data_dir) == ("127.0.0.1", 8080, None, Path("./var"))
    assert s.default_monthly_quota == -1
    assert s.max_body_bytes == 10_000_000 and s.max_records == 10_000


def test_settings_reject_unknown_and_malformed_keys() -> None:
    with pytest.raises(SettingsError, match="STRICTGATE_PROT"):
        load_settings({"STRICTGATE_PROT": "9000"})
    with pytest.raises(SettingsError, match="integer"):
        load_settings({"STRICTGATE_PORT": "eighty"})
    with pytest.raises(SettingsError):
        load_settings({"STRICTGATE_DEFAULT_MONTHLY_QUOTA": "-2"})


def test_settings_accept_the_valid_forms_of_the_checked_values() -> None:
    s = load_settings({"STRICTGATE_LOG_LEVEL": "WARNING", "STRICTGATE_HOST": "localhost",
                       "REDIS_URL": "rediss://:pw@cache.example:6380/2",
                       "STRICTGATE_HEADER_TIMEOUT_S": "2.5", "STRICTGATE_MAX_CONNECTIONS": "50"})
    assert (s.log_level, s.host, s.header_timeout_s, s.max_connections) == (
        "warning", "localhost", 2.5, 50)
    assert s.redis_url == "rediss://:pw@cache.example:6380/2"
    for host in ("0.0.0.0", "::", "::1", "127.0.0.1"):
        assert load_settings({"STRICTGATE_HOST": host}).host == host
    for url in ("redis://127.0.0.1", "redis://localhost:6379/0", "unix:///tmp/v.sock?db=1"):
        assert load_settings({"REDIS_URL": url}).redis_url == url
    d = load_settings({})
    assert (d.header_timeout_s, d.keepalive_timeout_s, d.max_connections) == (10.0, 5.0, None)


def test_settings_never_quote_a_redis_password() -> None:
    for url in ("redis://:s3cret@host:bad/0", "s3cret@host:6379", "redis://u:s3cret@/0"):
        with pytest.raises(SettingsError) as info:
            load_settings({"REDIS_URL": url})
        assert "s3cret" not in str(info.value) and "***@" in str(info.value)


def test_settings_never_quote_a_lake_catalog_password() -> None:
    for catalog in ("mysql:host=h password=s3cret", "mysql://u:s3cret@h/lake"):
        with pytest.raises(SettingsError) as info:
            load_settings({"STRICTGATE_LAKE_CATALOG": catalog})
        assert "s3cret" not in str(info.value) and "***" in str(info.value)


def test_secret_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "d" / "admin-token"
    first, created = load_or_create_secret(path)
    assert created and len(first) >= 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again, created_again = load_or_create_secret(path)
    assert (again, created_again) == (first, False)


def test_constant_time_equals_handles_odd_bytes() -> None:
    assert constant_time_equals("abc", "abc")
    assert not constant_time_equals("abç\udc80", "abc")


def test_app_serves_healthz_with_generated_admin_token(data_dir: Path, redis_url: str) -> None:
    settings = load_settings({"STRICTGATE_DATA_DIR": str(data_dir), "REDIS_URL": redis_url})
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
    token_file = data_dir / "admin-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600


def test_app_starts_embedded_redis_when_no_url(data_dir: Path) -> None:
    settings = load_settings({"STRICTGATE_DATA_DIR": str(data_dir)})
    app = create_app(settings)
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        assert (data_dir / "redis" / "valkey.log").exists()
    # the embedded server persists its data under the data dir
    assert any((data_dir / "redis").iterdir())


def test_real_redis_is_reachable(sync_redis: redis.Redis) -> None:
    assert sync_redis.ping()
