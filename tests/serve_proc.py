"""``strictgate serve`` as a real process, as an operator starts it (the console script of
.venv, settings from the environment, a temp data dir, a free port)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import httpx

from bench.lake_rows import lake_rows
from tests.redis_mode import service_env

ROOT = Path(__file__).resolve().parent.parent
STRICTGATE = Path(sys.executable).parent / "strictgate"
SEED_DEFINITION = json.loads((ROOT / "schemas" / "examples" / "seed.json").read_text())
RECORD = {
    "timestamp": "2026-06-10T11:00:00Z", "context": {"source": "billing-service"},
    "country": "RO", "plan": "pro", "amount": 20, "active": True,
    "signup_at": "2026-06-01T08:00:00Z",
}


def clean_env(**settings: str) -> dict[str, str]:
    """The test's environment without any strictgate setting, plus ``settings``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("STRICTGATE_") and k != "REDIS_URL"}
    if "REDIS_URL" in settings:
        env.update(service_env())  # the cluster pass: the test's Redis is a cluster
    env.update(settings)
    return env


def run_cli(env: Mapping[str, str], *argv: str, timeout: float = 60
            ) -> subprocess.CompletedProcess[str]:
    """Run ``strictgate argv...`` to completion."""
    return subprocess.run([str(STRICTGATE), *argv], env=dict(env), capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def valkeys_on(data_dir: Path) -> list[int]:
    """PIDs of live valkey-server processes working in ``data_dir`` (valkey chdirs to its
    ``dir``; its argv is rewritten to ``host:port``, so the cwd is what names it)."""
    found = []
    root = data_dir.resolve()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "valkey-server":
                continue
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:
            continue
        if cwd == root or root in cwd.parents:
            found.append(int(entry.name))
    return found


class Serve:
    """One ``strictgate serve`` process; its stderr (the log) goes to ``<tmp>/serve-N.log``."""

    def __init__(self, data_dir: Path, port: int, log: Path, **settings: str) -> None:
        self.data_dir = data_dir
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.log_path = log
        self.env = clean_env(STRICTGATE_DATA_DIR=str(data_dir), STRICTGATE_PORT=str(port),
                             **settings)
        self._log = log.open("wb")
        self.proc = subprocess.Popen([str(STRICTGATE), "serve"], env=self.env, cwd=ROOT,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def log(self) -> str:
        """What the process wrote so far."""
        return self.log_path.read_text(errors="replace")

    def wait_healthy(self, timeout: float = 90) -> Serve:
        """Wait until ``/healthz`` answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.base + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"serve did not become healthy:\n{self.log()}")

    def wait_exit(self, timeout: float = 60) -> int:
        """Wait for the process to end on its own; its exit status."""
        return self.proc.wait(timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        """Send ``sig`` and wait for the end; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode

    def admin(self) -> dict[str, str]:
        """The admin Authorization header (the generated token)."""
        token = (self.data_dir / "admin-token").read_text().strip()
        return {"Authorization": f"Bearer {token}"}

    def provision(self, user: str = "alice") -> dict[str, str]:
        """Dataset 13 (the seed) in project demo and a key of ``user``: its ingest headers."""
        r = httpx.put(f"{self.base}/admin/projects/demo/datasets/13", json=SEED_DEFINITION,
                      headers=self.admin(), timeout=30)
        assert r.status_code in (200, 201), r.text
        r = httpx.post(f"{self.base}/admin/projects/demo/keys", json={"user_id": user},
                       headers=self.admin(), timeout=30)
        assert r.status_code == 201, r.text
        return {"Authorization": f"Bearer {r.json()['api_key']}",
                "Content-Type": "application/json"}

    def send_batches(self, headers: Mapping[str, str], tag: str, batches: int, size: int
                     ) -> dict[str, int]:
        """POST ``batches`` batches of ``size`` records; the acknowledged ones by request id."""
        acked: dict[str, int] = {}
        with httpx.Client(base_url=self.base, timeout=30) as client:
            for i in range(batches):
                request_id = f"{tag}-{i}"
                r = client.post("/datasets/13/batch", content=json.dumps([RECORD] * size),
                                headers={**headers, "X-Request-Id": request_id})
                if r.status_code == 202:
                    acked[request_id] = size
        return acked


def written_trace_ids(data_dir: Path) -> list[str]:
    """``__traceId`` of every record written: the lake's tables (the default sink), plus any
    JSON Lines output (``STRICTGATE_SINK=jsonl``)."""
    found = [json.loads(line)["__traceId"]
             for path in sorted((data_dir / "output").rglob("*.jsonl"))
             for line in path.read_text().splitlines() if line.strip()]
    return found + lake_trace_ids(data_dir)


def lake_trace_ids(data_dir: Path) -> list[str]:
    """``__traceId`` of every row of every dataset table of the embedded lake."""
    return [str(row["__traceId"]) for row in lake_rows(data_dir, ("__traceId",))]


def ledger_records(data_dir: Path, user: str = "alice") -> int:
    """Records of ``user`` in the usage ledger."""
    path = data_dir / "usage-ledger.jsonl"
    if not path.exists():
        return 0
    return sum(row["records"] for row in map(json.loads, path.read_text().splitlines())
               if row["user_id"] == user)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` until true or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Serves:
    """The :class:`Serve` processes of one test, all stopped at its end whatever happens
    (a test failing mid-way must not leave a server holding a port or a data dir)."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[Serve] = []

    def start(self, data_dir: Path, port: int, **settings: str) -> Serve:
        """Start one more ``strictgate serve`` (not waiting for it)."""
        log = self.tmp_path / f"serve-{len(self.started)}.log"
        proc = Serve(data_dir, port, log, **settings)
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        """SIGTERM (then SIGKILL) every process still running."""
        for proc in self.started:
            proc.stop(timeout=20)
