"""Helpers for end-to-end ingest tests: an app on the real Redis, the seed's bodies."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from app import create_app
from strictgate.settings import load_settings
from strictgate.worker.consumer import Worker
from tests.redis_mode import async_client, service_env

ADMIN = "test-admin-token"
JWT_SECRET = "test-jwt-secret-0123456789abcdef0123456789"
SEED_DEFINITION = {
    "fields": {
        "country": "string",
        "plan": "string",
        "amount": "number",
        "active": "boolean",
        "signup_at": "timestamp",
    }
}
SEED_SINGLE: dict[str, Any] = {
    "timestamp": "2026-06-10T10:58:00Z",
    "context": {"source": "billing-service", "request_id": "req_123"},
    "country": "RO",
    "plan": "pro",
    "amount": 42.5,
    "active": True,
    "signup_at": "2026-06-01T08:00:00Z",
}
SEED_BATCH: list[dict[str, Any]] = [
    {
        "timestamp": "2026-06-10T11:00:00Z",
        "context": {"source": "billing-service"},
        "country": "RO", "plan": "pro", "amount": 20, "active": True,
        "signup_at": "2026-06-01T08:00:00Z",
    },
    {
        "timestamp": "2026-06-10T11:01:00Z",
        "context": {"source": "billing-service"},
        "country": "US", "plan": "free", "amount": 5, "active": False,
        "signup_at": "2026-06-02T08:00:00Z",
    },
]


@dataclass
class Service:
    """A running app (TestClient) with an admin token and helpers."""

    client: TestClient
    data_dir: Path
    redis_url: str

    def admin(self, method: str, path: str, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {ADMIN}", **kw.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kw)

    def put_dataset(self, project: str, dataset: str, definition: dict[str, Any]) -> None:
        r = self.admin("PUT", f"/admin/projects/{project}/datasets/{dataset}", json=definition)
        assert r.status_code in (200, 201), r.text

    def create_key(self, project: str, user: str) -> str:
        r = self.admin("POST", f"/admin/projects/{project}/keys", json={"user_id": user})
        assert r.status_code == 201, r.text
        return str(r.json()["api_key"])

    def post(self, path: str, key: str, body: Any, **headers: str) -> Any:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        hdrs = {"Authorization": f"Bearer {key}", "Content-Type": "application/json", **headers}
        return self.client.post(path, content=raw, headers=hdrs)

    def drain(self) -> list[dict[str, Any]]:
        """Run a worker until the queues are empty; return every output line so far."""

        async def run() -> None:
            client = async_client(self.redis_url)
            try:
                await Worker(client, self.data_dir / "output", reclaim_idle_ms=0).drain()
            finally:
                await client.aclose()

        asyncio.run(run())
        return output_lines(self.data_dir / "output")


def output_lines(root: Path) -> list[dict[str, Any]]:
    """Every JSON line under ``root``, files in name order."""
    lines: list[dict[str, Any]] = []
    for path in sorted(root.rglob("*.jsonl")):
        lines += [json.loads(line) for line in path.read_text().splitlines()]
    return lines


def start_service(data_dir: Path, redis_url: str, **env: str) -> Iterator[Service]:
    """Yield a :class:`Service` on ``redis_url`` (worker not in-process: tests drain)."""
    settings = load_settings({
        "REDIS_URL": redis_url,
        "STRICTGATE_DATA_DIR": str(data_dir),
        "STRICTGATE_ADMIN_TOKEN": ADMIN,
        "STRICTGATE_JWT_SECRET": JWT_SECRET,
        "STRICTGATE_RUN_WORKER": "0",
        **service_env(),
        **env,
    })
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield Service(client, data_dir, redis_url)
