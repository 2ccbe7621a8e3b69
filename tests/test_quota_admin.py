"""Admin quota endpoints on a tiny inline app, and the ``strictgate quota|usage`` CLI."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.testclient import TestClient

from quota.admission import QuotaService
from quota.ledger import Ledger
from quota.periods import period_end
from strictgate.admin import quota as admin_quota
from strictgate.cli import main
from strictgate.context import AppContext
from strictgate.errors import ApiError, error_response
from strictgate.settings import load_settings
from strictgate.timestamps import parse_utc
from tests.redis_mode import async_client
from tests.test_quota_admission import FIXED, this_month

TOKEN = "admin-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


@pytest.fixture
def http(sync_redis: redis.Redis, redis_url: str) -> Iterator[TestClient]:
    """The admin quota routes on a real Redis, default limit 100, fixed clock."""
    client = async_client(redis_url)
    app = Starlette(routes=admin_quota.routes(), exception_handlers={ApiError: _api_error})
    app.state.ctx = AppContext(
        settings=load_settings({}), redis=client, admin_token=TOKEN,
        registry=None, keys=None,  # type: ignore[arg-type]  # other engineers' services
        quota=QuotaService(client, default_limit=100, deadline_s=1.0, clock=lambda: FIXED),
        clock=lambda: FIXED,
    )
    with TestClient(app) as test_client:
        yield test_client


def test_put_then_get_quota(http: TestClient) -> None:
    assert http.get("/admin/users/u1/quota", headers=AUTH).json() == {
        "user_id": "u1", "monthly_limit": 100,  # the default until one is set
    }
    answer = http.put("/admin/users/u1/quota", headers=AUTH, json={"monthly_limit": -1})
    assert answer.status_code == 200
    assert answer.json() == {"user_id": "u1", "monthly_limit": -1}
    assert http.get("/admin/users/u1/quota", headers=AUTH).json()["monthly_limit"] == -1


@pytest.mark.parametrize(("body", "code"), [
    (b'{"monthly_limit": true}', "invalid_body"),
    (b'{"monthly_limit": 1.5}', "invalid_body"),
    (b'{"monthly_limit": 10.0}', "invalid_body"),
    (b'{"monthly_limit": "10"}', "invalid_body"),
    (b'{"monthly_limit": -2}', "invalid_body"),
    (b'{"monthly_limit": 9007199254740992}', "invalid_body"),
    (b'{"monthly_limit": null}', "invalid_body"),
    (b'{"monthly_limit": 5, "extra": 1}', "invalid_body"),
    (b'{}', "invalid_body"),
    (b'[5]', "invalid_body"),
    (b'{"monthly_limit": 5', "invalid_json"),
    (b'', "invalid_json"),
])
def test_bad_quota_bodies_are_400_in_the_error_grammar(
    http: TestClient, body: bytes, code: str,
) -> None:
    answer = http.put("/admin/users/u1/quota", headers=AUTH, content=body)
    assert answer.status_code == 400
    payload = answer.json()
    assert payload["success"] is False and payload["errors"][0]["code"] == code
    assert http.get("/admin/users/u1/quota", headers=AUTH).json()["monthly_limit"] == 100


def test_bad_user_id_and_missing_token(http: TestClient) -> None:
    answer = http.get("/admin/users/bad%20id/quota", headers=AUTH)
    assert answer.status_code == 400
    assert answer.json()["errors"][0] == {
        "code": "invalid_user_id", "field": "user_id", "message": "Invalid user ID",
    }
    for method in ("get", "put"):
        denied = getattr(http, method)("/admin/users/u1/quota")
        assert denied.status_code == 401
    assert http.get("/admin/users/u1/usage", headers={"Authorization": "Bearer x"}
                    ).status_code == 401


def test_usage_of_the_current_and_a_named_month(http: TestClient, sync_redis: redis.Redis
                                                 ) -> None:
    # "current" is Redis's month, whatever the app's clock (FIXED, years ahead) says
    month = this_month()
    sync_redis.set(f"usage_total:datasets:{{u1}}:{month}", 40)
    sync_redis.set(f"usage_delta:datasets:{{u1}}:{month}", 15)
    sync_redis.set("usage_total:datasets:{u1}:2031-05", 7)
    sync_redis.set("usage_total:datasets:{u1}:2031-06", 99)  # the app clock's month
    assert http.get("/admin/users/u1/usage", headers=AUTH).json() == {
        "user_id": "u1", "limit": 100, "used": 40, "remaining": 60, "period": month,
        "resets_at": period_end(month).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "flushed": 25, "unflushed": 15,
    }
    may = http.get("/admin/users/u1/usage?period=2031-05", headers=AUTH).json()
    assert (may["used"], may["flushed"], may["resets_at"]) == (7, 7, "2031-06-01T00:00:00Z")
    for bad in ("2031-13", "2031-6", "june", "1969-12"):
        answer = http.get(f"/admin/users/u1/usage?period={bad}", headers=AUTH)
        assert answer.status_code == 400
        assert answer.json()["errors"][0]["code"] == "invalid_period"


def test_unreachable_redis_is_503(redis_url: str) -> None:
    client = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    app = Starlette(routes=admin_quota.routes(), exception_handlers={ApiError: _api_error})
    app.state.ctx = AppContext(
        settings=load_settings({}), redis=client, admin_token=TOKEN,
        registry=None, keys=None,  # type: ignore[arg-type]
        quota=QuotaService(client, default_limit=-1, deadline_s=0.5, clock=lambda: FIXED),
    )
    with TestClient(app) as http:
        for answer in (
            http.get("/admin/users/u1/quota", headers=AUTH),
            http.put("/admin/users/u1/quota", headers=AUTH, json={"monthly_limit": 3}),
            http.get("/admin/users/u1/usage", headers=AUTH),
        ):
            assert answer.status_code == 503
            assert "Retry-After" in answer.headers


# --- CLI --------------------------------------------------------------------------------

def test_cli_quota_set_get_and_usage_flush(
    sync_redis: redis.Redis, redis_url: str, data_dir: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("STRICTGATE_DATA_DIR", str(data_dir))
    assert main(["quota", "set", "u1", "250"]) == 0
    assert json.loads(capsys.readouterr().out) == {"user_id": "u1", "monthly_limit": 250}
    assert sync_redis.get("quota_limit:datasets:{u1}") == b"250"

    period = FIXED.strftime("%Y-%m")
    sync_redis.set(f"usage_delta:datasets:{{u1}}:{period}", 12)
    sync_redis.set(f"usage_total:datasets:{{u1}}:{period}", 12)
    assert main(["usage", "flush"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["rows"], report["records"]) == (1, 12)
    assert Ledger(data_dir / "usage-ledger.jsonl").totals() == {("u1", period): 12}
    assert sync_redis.exists(f"usage_delta:datasets:{{u1}}:{period}") == 0

    assert main(["quota", "get", "u1"]) == 0
    assert json.loads(capsys.readouterr().out)["monthly_limit"] == 250


def test_cli_usage_flush_stamps_rows_in_z_and_older_rows_still_read(
    sync_redis: redis.Redis, redis_url: str, data_dir: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """``flushed_at`` is written as every other time is (``Z``); a ledger whose rows an
    older release stamped ``+00:00`` keeps reading, and both stamps parse to a moment."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("STRICTGATE_DATA_DIR", str(data_dir))
    ledger_path = data_dir / "usage-ledger.jsonl"
    old_row = {"flush_id": "20310501T000000Z-0123456789ab", "user_id": "u1",
               "period": "2031-05", "records": 4, "flushed_at": "2031-05-31T23:59:59.500+00:00"}
    ledger_path.write_bytes(json.dumps(old_row).encode() + b"\n")
    period = FIXED.strftime("%Y-%m")
    sync_redis.set(f"usage_delta:datasets:{{u1}}:{period}", 12)
    before = datetime.now(UTC)
    assert main(["usage", "flush"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 1
    old, new = Ledger(ledger_path).rows()
    assert old.flushed_at == old_row["flushed_at"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", new.flushed_at)
    assert parse_utc(old.flushed_at) == datetime(2031, 5, 31, 23, 59, 59, 500_000, UTC)
    assert before - timedelta(seconds=1) <= parse_utc(new.flushed_at) <= datetime.now(UTC)
    assert Ledger(ledger_path).totals() == {("u1", "2031-05"): 4, ("u1", period): 12}


def test_cli_refuses_bad_input_and_explains_missing_redis(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("STRICTGATE_REDIS_CLUSTER", raising=False)  # set in the cluster pass
    monkeypatch.setenv("STRICTGATE_DATA_DIR", str(data_dir))
    assert main(["quota", "get", "u1"]) == 1
    assert "REDIS_URL" in capsys.readouterr().err
    assert main(["quota", "set", "u1", "-2"]) == 1
    with pytest.raises(SystemExit):
        main(["quota", "set", "a:b", "5"])
