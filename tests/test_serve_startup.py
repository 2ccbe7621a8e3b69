"""What ``strictgate serve`` checks before it starts anything: every
setting, with a one-line error and exit 2; the open-file limit raised to the hard one."""

from __future__ import annotations

import resource
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from strictgate.embedded import free_port
from tests.serve_proc import ROOT, STRICTGATE, clean_env, run_cli, valkeys_on

HARD_NOFILE = resource.getrlimit(resource.RLIMIT_NOFILE)[1]

BAD_SETTINGS = [
    ({"STRICTGATE_LOG_LEVEL": "loud"},
     "STRICTGATE_LOG_LEVEL must be one of critical/error/warning/info/debug, got 'loud'"),
    ({"STRICTGATE_HOST": "not..a..host"},
     "STRICTGATE_HOST must be an IP address or a host name, got 'not..a..host'"),
    ({"STRICTGATE_HOST": "no-such-host.invalid"},
     "STRICTGATE_HOST 'no-such-host.invalid' does not resolve: "),
    ({"REDIS_URL": "localhost:6379"},
     "REDIS_URL must be a redis://, rediss:// or unix:// URL, got 'localhost:6379'"),
    ({"REDIS_URL": "redis://:hunter2@localhost:63x9/0"},
     "REDIS_URL has an invalid port: 'redis://***@localhost:63x9/0'"),
    ({"REDIS_URL": "redis:///0"},
     "REDIS_URL must name a host (redis://host:port/db), got 'redis:///0'"),
    ({"REDIS_URL": "redis://localhost:6379/zero"},
     "REDIS_URL database must be a number (redis://host:port/0), "
     "got 'redis://localhost:6379/zero'"),
    ({"REDIS_URL": "unix://"},
     "REDIS_URL must name a socket path (unix:///path), got 'unix://'"),
    ({"STRICTGATE_HEADER_TIMEOUT_S": "0"},
     "STRICTGATE_HEADER_TIMEOUT_S must be > 0 and <= 3600, got '0'"),
    ({"STRICTGATE_KEEPALIVE_TIMEOUT_S": "soon"},
     "STRICTGATE_KEEPALIVE_TIMEOUT_S must be a number, got 'soon'"),
    ({"STRICTGATE_COMMIT_INTERVAL_S": "0"},
     "STRICTGATE_COMMIT_INTERVAL_S must be > 0 and <= 10, got '0'"),
    ({"STRICTGATE_MAX_CONNECTIONS": "0"}, "STRICTGATE_MAX_CONNECTIONS must be >= 1, got 0"),
    ({"STRICTGATE_MAX_CONNECTIONS": str(HARD_NOFILE)},
     f"STRICTGATE_MAX_CONNECTIONS must be <= {HARD_NOFILE - 256} (the open-file limit "
     f"{HARD_NOFILE} less 256), got {HARD_NOFILE}"),
]


@pytest.mark.parametrize(("settings", "message"), BAD_SETTINGS,
                         ids=[next(iter(s)) + "=" + next(iter(s.values()))
                              for s, _ in BAD_SETTINGS])
def test_a_bad_setting_is_one_line_exit_2_and_nothing_started(
    tmp_path: Path, settings: dict[str, str], message: str
) -> None:
    data_dir = tmp_path / "var"
    env = clean_env(STRICTGATE_DATA_DIR=str(data_dir), STRICTGATE_PORT=str(free_port()),
                    **settings)
    done = run_cli(env, "serve")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"strictgate: {message}")
    assert done.stderr.count("\n") == 1 and done.stdout == ""
    assert "hunter2" not in done.stderr
    # nothing started, nothing written: no data dir at all, no valkey in it
    assert not data_dir.exists() and valkeys_on(tmp_path) == []


def test_worker_checks_its_settings_too(tmp_path: Path) -> None:
    env = clean_env(STRICTGATE_DATA_DIR=str(tmp_path / "var"), REDIS_URL="localhost:6379")
    done = run_cli(env, "worker")
    assert (done.returncode, done.stderr) == (2, "strictgate: REDIS_URL must be a redis://, "
                                                 "rediss:// or unix:// URL, got 'localhost:6379'\n")


@pytest.mark.slow
@pytest.mark.skipif(HARD_NOFILE == resource.RLIM_INFINITY or HARD_NOFILE < 2048,
                    reason="needs a finite hard open-file limit above 2048")
def test_serve_raises_the_soft_file_limit_to_the_hard_one(tmp_path: Path) -> None:
    def low_soft_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, HARD_NOFILE))

    port = free_port()
    env = clean_env(STRICTGATE_DATA_DIR=str(tmp_path / "var"), STRICTGATE_PORT=str(port))
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen([str(STRICTGATE), "serve"], env=env, cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT, preexec_fn=low_soft_limit)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None and time.monotonic() < deadline
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        limits = Path(f"/proc/{proc.pid}/limits").read_text().splitlines()
        soft, hard = next(line for line in limits if line.startswith("Max open files")).split()[3:5]
        assert (int(soft), int(hard)) == (HARD_NOFILE, HARD_NOFILE)
        # the cap defaults to half the limit, and the start line says so
        text = (tmp_path / "serve.log").read_text()
        assert f"connection cap {HARD_NOFILE // 2}, open-file limit {HARD_NOFILE})" in text
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def test_an_unusable_data_dir_is_one_line_exit_1(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    data_dir = tmp_path / "file" / "var"
    env = clean_env(STRICTGATE_DATA_DIR=str(data_dir), STRICTGATE_PORT=str(free_port()))
    done = run_cli(env, "serve")
    assert (done.returncode, done.stderr) == (
        1, f"strictgate: cannot use data dir {data_dir}: Not a directory\n")
