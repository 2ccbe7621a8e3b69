"""Issue 11, item 2 and the embedded server's password: what a 2xx promises, per Redis.

The embedded valkey runs ``appendfsync always`` unless ``STRICTGATE_REDIS_FSYNC`` says
otherwise; an external ``REDIS_URL`` is read for its persistence config at start, and a config
that can lose acknowledged writes is logged once and shown in ``/readyz``. The embedded server
only answers clients that know ``<data dir>/redis-password``, and is restarted by its
supervisor when it dies (the same from the user's side: test_redis_supervision.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from starlette.testclient import TestClient

from app import create_app
from strictgate.durability import NO_AOF, UNKNOWN, assess
from strictgate.embedded import EmbeddedServer
from strictgate.redact import redacted
from strictgate.redis_health import client_where
from strictgate.redis_target import with_password
from strictgate.settings import SettingsError, load_settings
from strictgate.supervisor import Supervisor

PASSWORD = "pw-Secret-0123456789"


def _service(data_dir: Path, **env: str) -> TestClient:
    settings = load_settings({
        "STRICTGATE_DATA_DIR": str(data_dir), "STRICTGATE_ADMIN_TOKEN": "t" * 32,
        "STRICTGATE_JWT_SECRET": "j" * 40, "STRICTGATE_RUN_WORKER": "0", **env,
    })
    return TestClient(create_app(settings))


def _embedded_client(data_dir: Path) -> redis.Redis:
    """A client on the embedded server of the service on ``data_dir``, as the CLI finds it."""
    url = (data_dir / "redis.url").read_text().strip()
    password = (data_dir / "redis-password").read_text().strip()
    return redis.Redis.from_url(with_password(url, password))


def _durability_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "strictgate.durability"]


# --- the setting ------------------------------------------------------------------------


def test_fsync_setting_defaults_to_always_and_refuses_other_values() -> None:
    assert load_settings({}).redis_fsync == "always"
    for value in ("always", "everysec", "no"):
        assert load_settings({"STRICTGATE_REDIS_FSYNC": value}).redis_fsync == value
    with pytest.raises(SettingsError, match="STRICTGATE_REDIS_FSYNC must be one of "
                                            "always/everysec/no, got 'sometimes'"):
        load_settings({"STRICTGATE_REDIS_FSYNC": "sometimes"})


@pytest.mark.parametrize("env, expected", [({}, "always"),
                                           ({"STRICTGATE_REDIS_FSYNC": "everysec"}, "everysec")])
def test_embedded_server_of_a_started_service_runs_the_configured_fsync(
    data_dir: Path, env: dict[str, str], expected: str, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    with _service(data_dir, **env) as client, _embedded_client(data_dir) as r:
        assert r.config_get("appendonly") == {"appendonly": "yes"}
        assert r.config_get("appendfsync") == {"appendfsync": expected}
        body = client.get("/readyz").json()
    assert body["status"] == "ready"
    assert body["durability"]["redis"] == expected
    if expected == "always":
        assert "warning" not in body["durability"]
        assert _durability_lines(caplog) == []
    else:
        assert "STRICTGATE_REDIS_FSYNC=always" in body["durability"]["warning"]
        assert _durability_lines(caplog) == ["durability: " + body["durability"]["warning"]]


# --- the embedded server's password ------------------------------------------------------


def test_embedded_server_refuses_clients_without_the_password(data_dir: Path) -> None:
    with _service(data_dir) as client:
        assert client.get("/readyz").status_code == 200
        url = (data_dir / "redis.url").read_text().strip()
        assert "@" not in url  # the URL file holds no secret
        with redis.Redis.from_url(url) as anonymous, pytest.raises(redis.AuthenticationError):
            anonymous.set("quota:limit:u1", 10**9)
        with redis.Redis.from_url(with_password(url, "wrong")) as guess, \
                pytest.raises(redis.AuthenticationError):
            guess.ping()
        with _embedded_client(data_dir) as r:
            assert r.ping()
    mode = stat.S_IMODE((data_dir / "redis-password").stat().st_mode)
    assert mode == 0o600
    assert stat.S_IMODE((data_dir / "redis").stat().st_mode) == 0o700


def test_password_is_not_on_the_command_line(tmp_path: Path) -> None:
    # argv is readable by every local user (/proc/<pid>/cmdline) until valkey rewrites its
    # process title: the password goes to the server's stdin instead
    server = EmbeddedServer.for_service(tmp_path)
    assert server.password is not None and len(server.password) >= 40
    assert not any(server.password in arg for arg in server.command())
    assert server.command()[-1] == "-"


def test_password_is_generated_once_and_reused(data_dir: Path) -> None:
    with _service(data_dir):
        first = (data_dir / "redis-password").read_text()
    with _service(data_dir), _embedded_client(data_dir) as r:
        assert r.ping()
    assert (data_dir / "redis-password").read_text() == first


# --- an external Redis --------------------------------------------------------------------


@pytest.fixture
def external(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EmbeddedServer]:
    """A server started with the extra args of the test's parameter, and a password."""
    args: tuple[str, ...] = request.param
    server = EmbeddedServer(tmp_path / "ext", persist=False, password=PASSWORD,
                            extra_args=args).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("external, mode, says", [
    (("--appendonly", "no"), NO_AOF, "runs without AOF (appendonly no, no snapshots)"),
    (("--appendonly", "no", "--save", "900 1"), NO_AOF, "snapshots: save '900 1'"),
    (("--appendonly", "yes", "--appendfsync", "everysec"), "everysec",
     "runs appendfsync everysec"),
    (("--appendonly", "yes", "--appendfsync", "no"), "no", "runs appendfsync no"),
    (("--rename-command", "CONFIG", '""'), UNKNOWN, "could not read the persistence config"),
], indirect=["external"])
def test_external_redis_that_can_lose_writes_is_warned_once_and_shown_in_readyz(
    external: EmbeddedServer, data_dir: Path, caplog: pytest.LogCaptureFixture,
    mode: str, says: str,
) -> None:
    caplog.set_level(logging.WARNING)
    with _service(data_dir, REDIS_URL=external.auth_url) as client:
        r = client.get("/readyz")
        # ready: just not power-loss safe
        assert r.status_code == 200
        durability = r.json()["durability"]
    assert durability["redis"] == mode
    warning = durability["warning"]
    assert says in warning and f"127.0.0.1:{external.port}" in warning
    assert PASSWORD not in caplog.text and PASSWORD not in r.text
    assert _durability_lines(caplog) == [f"durability: {warning}"]


@pytest.mark.parametrize("external", [("--appendonly", "yes", "--appendfsync", "always")],
                         indirect=True)
def test_external_redis_with_fsync_always_has_no_warning(
    external: EmbeddedServer, data_dir: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    with _service(data_dir, REDIS_URL=external.auth_url) as client:
        r = client.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "durability": {"redis": "always"}}
    assert _durability_lines(caplog) == []


def test_assess_reads_each_config() -> None:
    assert assess("h:1", "yes", "always", "", embedded=False).warning is None
    lossy = assess("h:1", "yes", "everysec", "", embedded=False)
    assert lossy.redis == "everysec"
    assert lossy.warning is not None and "set appendonly yes and appendfsync always" in (
        lossy.warning)
    assert assess("h:1", "no", "always", "", embedded=False).redis == NO_AOF


def test_urls_are_named_without_their_password() -> None:
    url = "redis://user:s3cr%40t@db.example:6380/2"
    assert client_where(aioredis.Redis.from_url(url)) == "db.example:6380"
    assert redacted(url) == "redis://***@db.example:6380/2"
    assert redacted("redis://:p@ss@h:1/0") == "redis://***@h:1/0"  # an unescaped "@"
    assert client_where(aioredis.Redis.from_url("redis://localhost/0")) == "localhost:6379"
    assert client_where(aioredis.Redis.from_url("unix:///run/redis.sock")) == "/run/redis.sock"
    assert redacted("redis://h:1/0") == "redis://h:1/0"
    assert with_password("redis://h:1/0", "a/b") == "redis://:a%2Fb@h:1/0"


def test_invalid_fsync_setting_is_one_line_and_exit_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("STRICTGATE_") and k != "REDIS_URL"}
    env.update(STRICTGATE_DATA_DIR=str(tmp_path / "var"), STRICTGATE_REDIS_FSYNC="sometimes")
    done = subprocess.run([sys.executable, "-m", "strictgate.cli", "serve"], env=env,
                          cwd=Path(__file__).resolve().parent.parent, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "strictgate: STRICTGATE_REDIS_FSYNC must be one of always/everysec/no, "
        "got 'sometimes'"]
    assert not (tmp_path / "var" / "redis").exists()  # nothing started


# --- the supervisor, in-process --------------------------------------------------------


async def test_supervisor_restarts_with_backoff_and_logs_each_event_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="strictgate.embedded")
    server = EmbeddedServer(tmp_path / "sup", password=PASSWORD).start()
    stop = asyncio.Event()
    supervisor = Supervisor(server)
    task = asyncio.create_task(supervisor.run(stop))
    try:
        with server.client() as r:
            r.set("acknowledged", "yes")
        first_pid = server.process.pid if server.process else 0
        server.kill()
        # the port is taken before the supervisor's next look: its restarts fail until freed
        # (nothing runs on the event loop between these two lines)
        blocker = socket.create_server(("127.0.0.1", server.port))
        await asyncio.sleep(1.0)
        assert supervisor.restarts == 0
        blocker.close()
        deadline = asyncio.get_running_loop().time() + 20
        while supervisor.restarts == 0 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
        assert supervisor.restarts == 1
        with server.client() as r:  # same port, same password, same data
            assert r.get("acknowledged") == b"yes"
    finally:
        stop.set()
        await task
        server.stop()
    lines = [r.getMessage() for r in caplog.records if r.name == "strictgate.embedded"]
    assert [line for line in lines if "killed by SIGKILL" in line] == [
        f"embedded valkey (pid {first_pid}, 127.0.0.1:{server.port}) killed by SIGKILL; "
        f"restarting it on {server.data_dir}"]
    failed = [line for line in lines if "did not restart" in line]
    assert len(failed) == 1 and "exited with status 1" in failed[0], lines
    assert len([line for line in lines if "embedded valkey restarted" in line]) == 1
    assert PASSWORD not in caplog.text
