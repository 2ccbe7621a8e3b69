"""`make run` as a user runs it: fresh data dir, embedded Redis, in-process worker."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from strictgate.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent
SEED_DEFINITION = ROOT / "schemas" / "examples" / "seed.json"
SINGLE = {
    "timestamp": "2026-06-10T10:58:00Z",
    "context": {"source": "billing-service", "request_id": "req_123"},
    "country": "RO", "plan": "pro", "amount": 42.5, "active": True,
    "signup_at": "2026-06-01T08:00:00Z",
}
BATCH = [
    {"timestamp": "2026-06-10T11:00:00Z", "context": {"source": "billing-service"},
     "country": "RO", "plan": "pro", "amount": 20, "active": True,
     "signup_at": "2026-06-01T08:00:00Z"},
    {"timestamp": "2026-06-10T11:01:00Z", "context": {"source": "billing-service"},
     "country": "US", "plan": "free", "amount": 5, "active": False,
     "signup_at": "2026-06-02T08:00:00Z"},
]


def _wait_healthy(base: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"make run exited with {proc.returncode}")
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError("service did not become healthy")


@pytest.mark.slow
def test_make_run_serves_the_seed_end_to_end(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("STRICTGATE_") and k != "REDIS_URL"}
    env.update(STRICTGATE_DATA_DIR=str(data_dir), STRICTGATE_PORT=str(port))
    proc = subprocess.Popen(["make", "--no-print-directory", "run"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(base, proc)
        token = (data_dir / "admin-token").read_text().strip()
        assert oct((data_dir / "admin-token").stat().st_mode & 0o777) == "0o600"
        admin = {"Authorization": f"Bearer {token}"}
        definition = json.loads(SEED_DEFINITION.read_text())
        r = httpx.put(f"{base}/admin/projects/demo/datasets/13", json=definition, headers=admin)
        assert r.status_code == 201, r.text
        r = httpx.post(f"{base}/admin/projects/demo/keys", json={"user_id": "alice"},
                       headers=admin)
        assert r.status_code == 201, r.text
        key = r.json()["api_key"]
        hdrs = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        r = httpx.post(f"{base}/datasets/13", content=json.dumps(SINGLE),
                       headers={**hdrs, "X-Request-Id": "req_123"})
        assert (r.status_code, r.json()) == (202, {"success": True, "status": "queued"})
        r = httpx.post(f"{base}/datasets/13/batch", content=json.dumps(BATCH),
                       headers={**hdrs, "X-Request-Id": "req_456"})
        assert (r.status_code, r.json()) == (202, {"success": True, "count": 2,
                                                   "status": "queued"})
        # the tour's last steps: read the records back through the API (the in-process
        # worker commits them to the lake within a second or so) and through `strictgate sql`
        deadline = time.monotonic() + 15
        records: list[dict[str, object]] = []
        while time.monotonic() < deadline and len(records) < 3:
            r = httpx.get(f"{base}/datasets/13/records", headers=hdrs)
            assert r.status_code == 200, r.text
            records = r.json()["records"]
            time.sleep(0.1)
        assert [(x["__traceId"], x["country"], x["amount"]) for x in records] == [
            ("req_123", "RO", 42.5), ("req_456", "RO", 20.0), ("req_456", "US", 5.0)]
        assert records[0]["context"] == SINGLE["context"]
        assert records[0]["timestamp"] == SINGLE["timestamp"]
        assert r.json()["next_cursor"] is None
        sql = subprocess.run(
            [str(ROOT / ".venv" / "bin" / "strictgate"), "sql", "--json",
             'SELECT "__traceId", country FROM demo."13" ORDER BY "__receivedAt", "__seq"'],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert sql.returncode == 0, sql.stderr
        assert json.loads(sql.stdout) == [
            {"__traceId": "req_123", "country": "RO"}, {"__traceId": "req_456", "country": "RO"},
            {"__traceId": "req_456", "country": "US"}]
        _operyn_tour(base, key)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    # the embedded server's data persisted under the data dir
    assert (data_dir / "redis").is_dir()


OPERYN_LOG = {
    "service": "api-gateway", "level": "error",
    "message": "Upstream timeout connecting to auth-service", "traceId": "abc-123-def",
    "metadata": {"region": "us-east-1", "env": "prod", "team": "platform"},
}
OPERYN_BATCH = [
    {"service": "billing-service", "level": "error", "message": "Payment failed for customer 42"},
    {"service": "billing-service", "level": "warn",
     "message": "Retry attempt 3 for payment gateway"},
]
OPERYN_METRIC = {
    "service": "api-gateway", "name": "request_latency_p99", "value": 2.34, "unit": "seconds",
    "labels": {"region": "us-east-1", "env": "prod", "endpoint": "/api/v1/users"},
}
OPERYN_DEPLOYMENT = {
    "service": "payment-service", "version": "v2.0.1", "environment": "production",
    "gitHash": "a1b2c3d4", "metadata": {"deployedBy": "jenkins", "deployId": "job-123"},
}


def _operyn_tour(base: str, key: str) -> None:
    """The README's Operyn section: the Operyn docs' curl examples, then the events read
    back from the project's built-in datasets."""
    hdrs = {"Content-Type": "application/json", "x-api-key": key, "x-organization-id": "demo"}
    ids: dict[str, str] = {}
    for path, body in (("/events/logs", OPERYN_LOG), ("/events/metrics", OPERYN_METRIC),
                       ("/events/deployments", OPERYN_DEPLOYMENT)):
        r = httpx.post(base + path, content=json.dumps(body), headers=hdrs)
        assert r.status_code == 202, r.text
        assert r.json()["queued"] is True
        ids[path.rsplit("/", 1)[1]] = r.json()["id"]
    r = httpx.post(base + "/events/logs/batch", content=json.dumps(OPERYN_BATCH), headers=hdrs)
    assert (r.status_code, r.json()) == (202, {"accepted": 2})
    read = {"Authorization": f"Bearer {key}"}
    deadline = time.monotonic() + 15
    logs: list[dict[str, object]] = []
    while time.monotonic() < deadline and len(logs) < 3:
        logs = httpx.get(f"{base}/datasets/logs/records", headers=read).json()["records"]
        time.sleep(0.1)
    assert [x["message"] for x in logs] == [OPERYN_LOG["message"]] + [
        b["message"] for b in OPERYN_BATCH]
    assert logs[0]["id"] == ids["logs"] and logs[0]["metadata"] == OPERYN_LOG["metadata"]
    assert isinstance(logs[0]["timestamp"], str)  # the server's receipt time
    for dataset, sent in (("metrics", OPERYN_METRIC), ("deployments", OPERYN_DEPLOYMENT)):
        deadline = time.monotonic() + 15
        rows: list[dict[str, object]] = []
        while time.monotonic() < deadline and not rows:
            rows = httpx.get(f"{base}/datasets/{dataset}/records", headers=read
                             ).json()["records"]
            time.sleep(0.1)
        assert rows[0]["id"] == ids[dataset]
        assert {k: rows[0][k] for k in sent} == sent


def _make(*args: str) -> str:
    done = subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


def test_make_help_lists_every_target_with_one_line() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):(?!=)", makefile, re.MULTILINE))
    assert {"run", "test", "help", "clean"} <= targets
    lines = _make("help").splitlines()
    listed = {line.split()[0] for line in lines[1:]}
    assert listed == targets
    assert all(len(line.split()) > 1 for line in lines[1:])  # a description on each


def test_first_make_run_says_what_it_does_and_shows_pip_progress() -> None:
    # -n: print what a first `make run` (stamp older than pyproject.toml) would run
    commands = _make("-n", "-W", "pyproject.toml", "run").splitlines()
    assert commands[0].startswith('echo "strictgate: installing dependencies into .venv')
    pip = next(c for c in commands if " -m pip install " in c)
    assert "--quiet" not in pip and " -q " not in pip and "--progress-bar on" in pip
