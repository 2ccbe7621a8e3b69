"""``strictgate datasets ...`` and ``strictgate keys ...`` run in-process on the test Redis."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path
from typing import Any

import pytest
import redis

from strictgate.cli import main
from strictgate.context import utc_now
from strictgate.registry.apikeys import AuthError, KeyService
from tests.redis_mode import async_client

ROOT = Path(__file__).resolve().parents[1]
SEED_FILE = ROOT / "schemas" / "examples" / "seed.json"


@pytest.fixture
def env(
    monkeypatch: pytest.MonkeyPatch, redis_url: str, data_dir: Path, sync_redis: redis.Redis
) -> Path:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("STRICTGATE_DATA_DIR", str(data_dir))
    monkeypatch.delenv("STRICTGATE_JWT_SECRET", raising=False)
    return data_dir


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None, err


def test_datasets_put_get_list_versions_delete(
    env: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = run(capsys, "datasets", "put", "demo", "13", str(SEED_FILE))
    assert code == 0 and (out["version"], out["created"]) == (1, True)
    seed = json.loads(SEED_FILE.read_text())
    v2 = tmp_path / "v2.json"
    v2.write_text(json.dumps({"fields": {**seed["fields"], "amount": "integer"}}))
    code, out, _ = run(capsys, "datasets", "put", "demo", "13", str(v2), "--dry-run")
    assert (code, out["dry_run"], out["breaking_changes"][0]["field"]) == (0, True, "amount")
    code, out, _ = run(capsys, "datasets", "put", "demo", "13", str(v2))
    assert (code, out["version"]) == (0, 2)
    code, out, _ = run(capsys, "datasets", "get", "demo", "13")
    assert (code, out["version"], out["definition"]["fields"]["amount"]) == (0, 2, "integer")
    code, out, _ = run(capsys, "datasets", "get", "demo", "13", "--version", "1")
    assert (code, out["definition"]) == (0, seed)
    code, out, _ = run(capsys, "datasets", "list", "demo")
    assert [(d["dataset_id"], d["version"]) for d in out["datasets"] if not d["builtin"]] == [
        ("13", 2)]
    code, out, _ = run(capsys, "datasets", "delete", "demo", "13")
    assert (code, out["deleted"]) == (0, True)
    code, out, err = run(capsys, "datasets", "get", "demo", "13")
    assert (code, out) == (1, None) and "Dataset not found" in err


def test_datasets_put_errors(
    env: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"fields": {"a": "strng"}}))
    code, out, err = run(capsys, "datasets", "put", "demo", "13", str(bad))
    assert (code, out) == (1, None)
    assert "Invalid dataset definition" in err and "/fields/a" in err
    bad.write_text("{nope")
    assert run(capsys, "datasets", "put", "demo", "13", str(bad))[0] == 1
    assert run(capsys, "datasets", "put", "demo", "13", str(tmp_path / "missing.json"))[0] == 1
    with pytest.raises(SystemExit) as info:
        main(["datasets", "put", "bad id", "13", str(SEED_FILE)])
    assert info.value.code == 2


def test_keys_create_list_revoke(
    env: Path, capsys: pytest.CaptureFixture[str], redis_url: str
) -> None:
    code, created, err = run(capsys, "keys", "create", "demo", "--user", "alice")
    assert code == 0 and set(created) >= {"key_id", "api_key"}
    secret_file = env / "jwt-secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert "generated jwt-secret" in err
    code, listed, _ = run(capsys, "keys", "list", "demo")
    assert [k["key_id"] for k in listed["keys"]] == [created["key_id"]]
    assert created["api_key"] not in json.dumps(listed)

    async def verify(token: str) -> str:
        client = async_client(redis_url)
        try:
            service = KeyService(client, secret_file.read_text().strip(), clock=utc_now)
            try:
                return (await service.verify(token)).key_id
            except AuthError as exc:
                return exc.code
        finally:
            await client.aclose()

    # the service, reading the same data dir secret, accepts the CLI's key
    assert asyncio.run(verify(created["api_key"])) == created["key_id"]
    code, out, _ = run(capsys, "keys", "revoke", "demo", created["key_id"])
    assert (code, out["revoked"]) == (0, True)
    assert asyncio.run(verify(created["api_key"])) == "api_key_revoked"
    code, _, err = run(capsys, "keys", "revoke", "demo", created["key_id"])
    assert code == 1 and "API key not found" in err


def test_no_redis_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("STRICTGATE_REDIS_CLUSTER", raising=False)  # set in the cluster pass
    monkeypatch.setenv("STRICTGATE_DATA_DIR", str(data_dir))
    code, _, err = run(capsys, "datasets", "list", "demo")
    assert code == 1
    assert err == (f"strictgate: no running service for {data_dir.resolve()} "
                   "(start it with `make run`, or set REDIS_URL)\n")


def test_datasets_check_compiles_offline_and_lists_every_problem(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # no REDIS_URL and no running service: check needs neither
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("STRICTGATE_DATA_DIR", str(tmp_path / "var"))
    code, out, _ = run(capsys, "datasets", "check", str(SEED_FILE))
    assert code == 0 and out["valid"] is True
    assert out["json_schema"]["properties"]["amount"] == {"type": "number"}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"fields": {"a": "strin", "b": {"type": "string", "minLength": -1}}}))
    code, out, err = run(capsys, "datasets", "check", str(bad))
    assert (code, out) == (1, None)
    assert "strictgate: /fields/a: " in err and "strictgate: /fields/b" in err
    assert err.rstrip().endswith("strictgate: Invalid dataset definition")
    assert "Traceback" not in err
    code, out, err = run(capsys, "datasets", "check", str(tmp_path / "missing.json"))
    assert (code, out) == (1, None) and "cannot read" in err
