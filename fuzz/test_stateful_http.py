"""A hypothesis state machine over the whole HTTP app on a real Redis.

Rules register, update and delete datasets, create and revoke keys, set quotas, send valid,
invalid, duplicate (Idempotency-Key replays and conflicts) and over-quota singles and batches,
and run the worker. A small model predicts every status code. After every step:

* usage_total of each user == records the model admitted for that user
  == records in that user's queue entries (decoded) + that user's output lines;
* nothing rejected is counted (the model only counts 202s that are not replays);
* a 2xx is answered only when the records are queued (checked through the equality above).

Bounded in ``make test``; ``SG_FUZZ_LONG=1`` (``make fuzz``) runs many more and longer
programs. (Not ``STRICTGATE_*``: the settings loader rejects unknown variables of that prefix.)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Generator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import orjson
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from quota import keys as redis_keys
from tests import conftest as _conftest
from tests.ingest_fixtures import Service, output_lines, start_service

# the shared Redis fixtures (fuzz/ has no conftest of its own)
redis_url = _conftest.redis_url
sync_redis = _conftest.sync_redis

LONG = os.environ.get("SG_FUZZ_LONG") == "1"
MAX_EXAMPLES = 150 if LONG else 15
STEPS = 50 if LONG else 15

PROJECTS = ("p1", "p2")
DATASETS = ("d1", "d2")
USERS = ("u1", "u2")
IDEM_KEYS = ("k1", "k2", "k3")

# Two definitions; B is a breaking change of A (amount removed, note added), so records valid
# under one are invalid under the other and the model must follow updates.
DEFS: dict[str, dict[str, Any]] = {
    "A": {"fields": {"country": "string", "amount": "number", "active": "boolean",
                     "signup_at": "timestamp"}},
    "B": {"fields": {"country": "string", "note": "string", "active": "boolean"}},
}
TIMESTAMPS = ("2026-06-10T10:58:00Z", "2026-06-10T10:58:00.123+02:00", "2026-01-01T00:00:00Z")

text = st.text(alphabet="abcxyz RO-é", max_size=6)
number = st.integers(-10**6, 10**6) | st.floats(allow_nan=False, allow_infinity=False,
                                               min_value=-1e12, max_value=1e12)


@st.composite
def valid_record(draw: st.DrawFn, definition: str) -> dict[str, Any]:
    record: dict[str, Any] = {
        "timestamp": draw(st.sampled_from(TIMESTAMPS)),
        "context": {"n": draw(st.integers(0, 10**9))},
        "country": draw(text),
        "active": draw(st.booleans()),
    }
    if definition == "A":
        record["amount"] = draw(number)
        record["signup_at"] = draw(st.sampled_from(TIMESTAMPS))
    else:
        record["note"] = draw(text)
    return record


@st.composite
def invalid_record(draw: st.DrawFn, definition: str) -> dict[str, Any]:
    """A record invalid under ``definition`` (and under the other one too)."""
    record = draw(valid_record(definition))
    how = draw(st.sampled_from(["no_timestamp", "extra", "context", "bad_type", "bad_time"]))
    if how == "no_timestamp":
        del record["timestamp"]
    elif how == "extra":
        record["extra_field"] = 1
    elif how == "context":
        record["context"] = draw(st.sampled_from([5, "x", None, []]))
    elif how == "bad_type":
        record["active"] = draw(st.sampled_from(["true", 1, None]))
    else:
        record["timestamp"] = draw(st.sampled_from(["2026-13-01T00:00:00Z", "yesterday", 5]))
    return record


@dataclass
class Key:
    key_id: str
    token: str
    project: str
    user: str
    revoked: bool = False


@dataclass
class Stored:
    """An admitted Idempotency-Key: what it was used for."""

    dataset: str
    batch: bool
    body: bytes
    count: int


class IngestMachine(RuleBasedStateMachine):
    redis_url: str = ""
    base: Path = Path()

    def __init__(self) -> None:
        super().__init__()
        with redis.Redis.from_url(self.redis_url) as r:
            r.flushdb()
        self.data_dir = Path(tempfile.mkdtemp(dir=self.base))
        self._gen = cast(Generator[Service, None, None],
                         start_service(self.data_dir, self.redis_url))
        self.svc = next(self._gen)
        self.defs: dict[tuple[str, str], str] = {}
        self.keys: list[Key] = []
        self.limits: dict[str, int] = {}
        self.admitted: dict[str, int] = dict.fromkeys(USERS, 0)
        self.idem: dict[tuple[str, str, str], Stored] = {}
        self.period = redis_keys.period_of(datetime.now(UTC))

    def teardown(self) -> None:
        self._gen.close()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    # --- admin ------------------------------------------------------------------------

    @initialize(project=st.sampled_from(PROJECTS), dataset=st.sampled_from(DATASETS),
                user=st.sampled_from(USERS))
    def start(self, project: str, dataset: str, user: str) -> None:
        self.put_dataset(project, dataset, "A")
        self.create_key(project, user)

    @rule(project=st.sampled_from(PROJECTS), dataset=st.sampled_from(DATASETS),
          definition=st.sampled_from(sorted(DEFS)))
    def put_dataset(self, project: str, dataset: str, definition: str) -> None:
        r = self.svc.admin("PUT", f"/admin/projects/{project}/datasets/{dataset}",
                           json=DEFS[definition])
        assert r.status_code in (200, 201), r.text
        self.defs[(project, dataset)] = definition

    @rule(project=st.sampled_from(PROJECTS), dataset=st.sampled_from(DATASETS))
    def delete_dataset(self, project: str, dataset: str) -> None:
        r = self.svc.admin("DELETE", f"/admin/projects/{project}/datasets/{dataset}")
        expected = 200 if (project, dataset) in self.defs else 404
        assert r.status_code == expected, r.text
        self.defs.pop((project, dataset), None)

    @rule(project=st.sampled_from(PROJECTS), user=st.sampled_from(USERS))
    def create_key(self, project: str, user: str) -> None:
        r = self.svc.admin("POST", f"/admin/projects/{project}/keys", json={"user_id": user})
        assert r.status_code == 201, r.text
        self.keys.append(Key(r.json()["key_id"], r.json()["api_key"], project, user))

    @precondition(lambda self: bool(self.keys))
    @rule(data=st.data())
    def revoke_key(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(self.keys))
        r = self.svc.admin("DELETE", f"/admin/projects/{key.project}/keys/{key.key_id}")
        # revoking twice: 404 (already gone) or 200 (idempotent) are both fine
        assert r.status_code in ((200, 404) if key.revoked else (200,)), r.text
        key.revoked = True

    @rule(user=st.sampled_from(USERS), limit=st.sampled_from([-1, 0, 1, 3, 8, 20, 60]))
    def set_quota(self, user: str, limit: int) -> None:
        r = self.svc.admin("PUT", f"/admin/users/{user}/quota", json={"monthly_limit": limit})
        assert r.status_code == 200, r.text
        self.limits[user] = limit

    @rule()
    def drain(self) -> None:
        self.svc.drain()

    # --- ingest -------------------------------------------------------------------------

    @precondition(lambda self: bool(self.keys))
    @rule(data=st.data(), dataset=st.sampled_from(DATASETS), batch=st.booleans(),
          n=st.integers(1, 4), invalid_at=st.none() | st.integers(0, 3),
          idem=st.none() | st.sampled_from(IDEM_KEYS), replay=st.booleans())
    def send(self, data: st.DataObject, dataset: str, batch: bool, n: int,
             invalid_at: int | None, idem: str | None, replay: bool) -> None:
        key = data.draw(st.sampled_from(self.keys))
        definition = self.defs.get((key.project, dataset), "A")
        stored = self.idem.get((key.user, key.project, idem)) if idem else None
        if replay and stored is not None:
            # a duplicate: the very same request again (same target, same bytes)
            dataset, batch, body = stored.dataset, stored.batch, stored.body
            definition = self.defs.get((key.project, dataset), "A")
            records = json.loads(body)
            records = records if batch else [records]
            valid = all(self._valid(rec, definition) for rec in records)
        else:
            if not batch:
                n = 1
            records = [
                data.draw(invalid_record(definition) if i == invalid_at
                          else valid_record(definition))
                for i in range(n)
            ]
            valid = invalid_at is None or invalid_at >= n
            body = json.dumps(records if batch else records[0]).encode()
        n = len(records)

        headers = {"X-Request-Id": f"req-{len(self.keys)}-{n}"}
        if idem:
            headers["Idempotency-Key"] = idem
        path = f"/datasets/{dataset}/batch" if batch else f"/datasets/{dataset}"
        r = self.svc.post(path, key.token, body, **headers)

        expected, counted = self._expect(key, dataset, batch, body, n, valid, idem)
        assert r.status_code == expected, (expected, r.status_code, r.text)
        assert r.status_code < 500
        if expected == 202:
            replayed = r.headers.get("Idempotent-Replayed") == "true"
            assert replayed == (not counted)
            want: dict[str, Any] = {"success": True, "status": "queued"}
            if batch:
                want["count"] = n
            assert r.json() == want
        else:
            assert r.json()["success"] is False
        if counted:
            self.admitted[key.user] += n
            if idem:
                self.idem[(key.user, key.project, idem)] = Stored(dataset, batch, body, n)

    def _valid(self, record: dict[str, Any], definition: str) -> bool:
        """Whether a record drawn here is valid under ``definition`` (structural check that
        matches how the records were drawn)."""
        fields = DEFS[definition]["fields"]
        if set(record) != {"timestamp", "context", *fields}:
            return False
        if not isinstance(record["context"], dict) or record["timestamp"] not in TIMESTAMPS:
            return False
        if not isinstance(record["active"], bool):
            return False
        return definition != "A" or record["signup_at"] in TIMESTAMPS

    def _expect(self, key: Key, dataset: str, batch: bool, body: bytes, n: int, valid: bool,
                idem: str | None) -> tuple[int, bool]:
        """(status, counted) as the contract orders the checks: auth, dataset, records,
        idempotency, quota."""
        if key.revoked:
            return 401, False
        if (key.project, dataset) not in self.defs:
            return 404, False
        if not valid:
            return 400, False
        stored = self.idem.get((key.user, key.project, idem)) if idem else None
        if stored is not None:
            same = (stored.dataset, stored.batch, stored.body) == (dataset, batch, body)
            return (202, False) if same else (422, False)
        limit = self.limits.get(key.user, -1)
        if limit >= 0 and self.admitted[key.user] + n > limit:
            return 429, False
        return 202, True

    # --- invariants ---------------------------------------------------------------------

    @invariant()
    def counted_equals_queued_plus_written(self) -> None:
        queued = dict.fromkeys(USERS, 0)
        totals = {}
        with redis.Redis.from_url(self.redis_url) as r:
            for user in USERS:
                totals[user] = int(r.get(redis_keys.usage_total_key(user, self.period)) or 0)
            for stream in r.scan_iter(match=redis_keys.QUEUE_SCAN_PATTERN, _type="stream"):
                for _, fields in r.xrange(stream):
                    queued[fields[b"user_id"].decode()] += len(orjson.loads(fields[b"records"]))
        written = dict.fromkeys(USERS, 0)
        for path in (self.data_dir / "output").rglob("*.jsonl"):
            user = path.name.split(".")[-2]
            written[user] += len(path.read_bytes().splitlines())
        for user in USERS:
            assert totals[user] == self.admitted[user], (user, totals, self.admitted)
            assert queued[user] + written[user] == self.admitted[user], (
                user, queued, written, self.admitted)

    @invariant()
    def written_records_are_whole(self) -> None:
        for line in output_lines(self.data_dir / "output"):
            assert "__traceId" in line and "timestamp" in line


def test_http_state_machine(redis_url: str, sync_redis: redis.Redis,
                            tmp_path: Path) -> None:
    IngestMachine.redis_url = redis_url
    IngestMachine.base = tmp_path
    run_state_machine_as_test(IngestMachine, settings=settings(
        max_examples=MAX_EXAMPLES, stateful_step_count=STEPS, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                               HealthCheck.data_too_large],
        database=None, derandomize=not LONG,
    ))
