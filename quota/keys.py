"""Every Redis key name strictgate uses, built in one place.

Keys of one user carry the Redis Cluster hash tag ``{<user_id>}`` so the admission script
(idempotency + quota + enqueue) touches a single slot. Registry keys of one project carry
``{p:<project_id>}``; ids never contain ``:`` so the two tag spaces cannot collide.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable
from datetime import UTC, datetime

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")


class InvalidIdError(ValueError):
    """An id does not match :data:`ID_PATTERN`."""


def check_id(value: str) -> str:
    """Return ``value`` if it is a valid project, dataset, user or key id, else raise."""
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        raise InvalidIdError("invalid id")
    return value


def period_of(now: datetime) -> str:
    """The UTC calendar month ``YYYY-MM`` that ``now`` falls in (naive means UTC)."""
    if now.tzinfo is not None:
        now = now.astimezone(UTC)
    return f"{now.year:04d}-{now.month:02d}"


def user_tag(user_id: str) -> str:
    """The hash tag shared by every key of ``user_id``."""
    return "{" + check_id(user_id) + "}"


# --- quota (a fixed layout: tools outside the service read these keys) -------------------

def quota_limit_key(user_id: str) -> str:
    """``quota_limit:datasets:{<user_id>}``: int, -1 unlimited."""
    return f"quota_limit:datasets:{user_tag(user_id)}"


def usage_total_key(user_id: str, period: str) -> str:
    """``usage_total:datasets:{<user_id>}:<YYYY-MM>``: records admitted that month."""
    return f"usage_total:datasets:{user_tag(user_id)}:{period}"


def usage_delta_key(user_id: str, period: str) -> str:
    """``usage_delta:datasets:{<user_id>}:<YYYY-MM>``: admitted, not yet flushed."""
    return f"usage_delta:datasets:{user_tag(user_id)}:{period}"


def usage_pending_key(user_id: str, period: str, flush_id: str) -> str:
    """A delta renamed away by a flush in progress (replayed first on the next flush)."""
    return f"usage_pending:datasets:{user_tag(user_id)}:{period}:{flush_id}"


def idempotency_key(user_id: str, project_id: str, key_digest: str) -> str:
    """Stored outcome of an admitted request, by the digest of its Idempotency-Key."""
    return f"idem:datasets:{user_tag(user_id)}:{check_id(project_id)}:{key_digest}"


# --- client event ids -------------------------------------------------------------------------

EVENT_ID_DIGEST_BYTES = 16
"""Bytes of the digest naming a remembered event id (BLAKE2b-128): two ids of one project
collide with odds about n**2 / 2**129 (2**-65 after 2**32 ids)."""

EVENT_ID_DIGEST_CHARS = 22
"""Characters of that digest in a key (base64url, no padding)."""


def event_id_key_prefix(user_id: str, project_id: str) -> str:
    """``evid:{<user_id>}:<project_id>:``, what every remembered event id of the project starts
    with (see :func:`event_id_key`)."""
    return f"evid:{user_tag(user_id)}:{check_id(project_id)}:"


def event_id_key(user_id: str, project_id: str, event_id: str) -> str:
    """``evid:{<user_id>}:<project_id>:<digest>``: set while ``event_id`` counts as already
    accepted in the project (any event type), so that a resend is acknowledged, not counted.

    Whether an id was seen is decided in the admission script, together with the quota and
    the queue, and a cluster script touches one slot only: the key therefore carries the
    hash tag of the project's owner, like the quota keys (the quota is per user), while the
    project in the name keeps the ids of one user's projects apart. The client's id is
    never stored raw: its BLAKE2b digest (:data:`EVENT_ID_DIGEST_BYTES`, base64url) bounds
    the key's size whatever the client sends.
    """
    return event_id_key_prefix(user_id, project_id) + _event_id_digest(event_id)


def event_id_keys(user_id: str, project_id: str, event_ids: Iterable[str]) -> list[str]:
    """:func:`event_id_key` of every id of ``event_ids``, in order (the ids of one request:
    the user and project are checked once, not once per id)."""
    prefix = event_id_key_prefix(user_id, project_id)
    return [prefix + _event_id_digest(event_id) for event_id in event_ids]


def _event_id_digest(event_id: str) -> str:
    raw = hashlib.blake2b(event_id.encode("utf-8", "surrogatepass"),
                          digest_size=EVENT_ID_DIGEST_BYTES).digest()
    return base64.urlsafe_b64encode(raw)[:EVENT_ID_DIGEST_CHARS].decode("ascii")


# --- queue ------------------------------------------------------------------------------------

def queue_key(user_id: str, project_id: str, dataset_id: str) -> str:
    """The Redis Stream holding admitted records of one dataset (under the user's tag)."""
    return (
        f"queue:datasets:{user_tag(user_id)}:{check_id(project_id)}:{check_id(dataset_id)}"
    )


QUEUE_SCAN_PATTERN = "queue:datasets:*"
QUEUE_GROUP = "strictgate-writers"


def queues_index_key() -> str:
    """Set of every queue key ever written to (the worker's discovery list)."""
    return "strictgate:queues"


def queued_records_key(stream_key: str) -> str:
    """Records admitted to ``stream_key`` and not yet written (INCRBY in the admission
    script, DECRBY in the worker's acknowledging transaction): the backpressure counter.
    It embeds the stream key, so it shares the stream's hash tag (one slot)."""
    return f"queued:{stream_key}"


def dead_letter_key(stream_key: str) -> str:
    """The stream where the worker moves entries of ``stream_key`` it cannot write (a
    malformed record, a definition that is gone), under the same hash tag."""
    return f"dead:{stream_key}"


def lake_compaction_lock_key() -> str:
    """Held (SET NX PX) by the one worker compacting the lake, so passes never overlap."""
    return "strictgate:lake:compaction-lock"


def written_marks_key(stream_key: str) -> str:
    """Hash entry id -> output file, set by the worker between fsync and XACK."""
    return f"written:{stream_key}"


# --- registry ---------------------------------------------------------------------------------

def project_tag(project_id: str) -> str:
    """The hash tag shared by every registry key of ``project_id``."""
    return "{p:" + check_id(project_id) + "}"


def datasets_index_key(project_id: str) -> str:
    """Hash dataset id -> latest version number, for one project."""
    return f"registry:datasets:{project_tag(project_id)}"


def dataset_versions_key(project_id: str, dataset_id: str) -> str:
    """Hash version number -> stored definition document (JSON)."""
    return f"registry:dataset:{project_tag(project_id)}:{check_id(dataset_id)}"


def api_keys_key(project_id: str) -> str:
    """Hash key id -> key metadata (JSON, no secret) for one project."""
    return f"registry:keys:{project_tag(project_id)}"


def api_key_by_kid_key(key_id: str) -> str:
    """Key metadata by key id alone (what token verification looks up)."""
    return f"registry:kid:{check_id(key_id)}"


def registry_generation_key() -> str:
    """Counter bumped on every registry change; processes poll it to refresh caches."""
    return "registry:generation"



# --- dialects ---------------------------------------------------------------------------------

def open_services_key(project_id: str) -> str:
    """Set of the ``service`` names an open project (Operyn's open mode,
    ``STRICTGATE_OPEN_PROJECT``) has taken events from; it holds a bounded number."""
    return f"open:services:{project_tag(project_id)}"


# --- project settings -------------------------------------------------------------------------

def project_settings_key(project_id: str) -> str:
    """Hash setting name -> value of one project (``unknown_datasets``: ``reject`` or
    ``infer``); a setting not stored has its default."""
    return f"registry:settings:{project_tag(project_id)}"


def dataset_settings_key(project_id: str, dataset_id: str) -> str:
    """Hash setting name -> value of one dataset (``on_invalid``,
    ``quarantine_retention_days``), beside its definition under the project's tag and apart
    from its versions, so a new version keeps it; a setting not stored has its default."""
    return f"registry:dataset_settings:{project_tag(project_id)}:{check_id(dataset_id)}"


# --- commit notification (Definite ``wait: true``) --------------------------------------------

def commit_waiters_key(user_id: str, project_id: str, dataset_id: str) -> str:
    """``commit-waiters:{<user_id>}:<project_id>:<dataset_id>``: how many requests are
    waiting for the commit of entries of that queue (INCR before admission, DECR after the
    wait, a TTL in case the API dies). The lake worker writes :func:`committed_key` markers
    only for the queues this counts as watched, so entries nobody waits for cost nothing."""
    return f"commit-waiters:{user_tag(user_id)}:{check_id(project_id)}:{check_id(dataset_id)}"


def committed_key(user_id: str, project_id: str, dataset_id: str, entry_id: str) -> str:
    """``committed:{<user_id>}:<project_id>:<dataset_id>:<stream entry id>``: the lake
    snapshot id (decimal text) whose commit holds that queue entry's rows; short-lived."""
    return (f"committed:{user_tag(user_id)}:{check_id(project_id)}:{check_id(dataset_id)}:"
            f"{check_id(entry_id)}")
