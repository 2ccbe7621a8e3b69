"""Prometheus metrics of one process (its own registry, so several apps can coexist in tests)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


class Metrics:
    """Every metric strictgate exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._children: dict[tuple[int, tuple[str, ...]], Counter] = {}
        self.requests = Counter(
            "strictgate_requests", "HTTP requests by route and status",
            ["route", "status"], registry=self.registry,
        )
        self.records_accepted = Counter(
            "strictgate_records_accepted", "Records admitted to a queue",
            ["project", "dataset"], registry=self.registry,
        )
        self.records_rejected = Counter(
            "strictgate_records_rejected", "Record errors found by validation",
            ["project", "dataset", "code"], registry=self.registry,
        )
        self.quota_rejections = Counter(
            "strictgate_quota_rejections", "Requests refused for quota (429)",
            ["project", "dataset"], registry=self.registry,
        )
        self.admission_seconds = Histogram(
            "strictgate_admission_seconds", "Latency of the admission call to Redis",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.queue_length = Gauge(
            "strictgate_queue_length", "Entries in a dataset queue (not yet written)",
            ["queue"], registry=self.registry,
        )
        self.worker_lag = Gauge(
            "strictgate_worker_lag_seconds",
            "Age of the oldest queued record not yet written (0 when the queues are empty)",
            registry=self.registry,
        )
        # labelled by sink so that a process without a worker exports no sink state at all
        self.sink_up = Gauge(
            "strictgate_sink_up", "1 while the output sink writes, 0 while it fails",
            ["sink"], registry=self.registry,
        )
        self.sink_errors = Counter(
            "strictgate_sink_errors", "Failed attempts to write a batch, by cause (errno name)",
            ["sink", "cause"], registry=self.registry,
        )
        self.dead_letters = Counter(
            "strictgate_dead_letters", "Queue entries the worker could not write and moved to "
            "the dataset's dead-letter stream (dead:<queue>), by reason",
            ["reason"], registry=self.registry,
        )
        self.lake_commits = Counter(
            "strictgate_lake_commits", "Lake commits of the worker", registry=self.registry,
        )
        self.lake_compactions = Counter(
            "strictgate_lake_compactions", "Lake compaction passes, by outcome",
            ["outcome"], registry=self.registry,
        )
        self.records_written = Counter(
            "strictgate_records_written", "Records written to output files by the worker",
            registry=self.registry,
        )

    def child(self, metric: Counter, *labels: str) -> Counter:
        """``metric.labels(*labels)``, memoised: ``labels()`` takes a lock and builds keys on
        every call, which shows on the per-request path. Bounded like the label values
        themselves (routes, statuses, datasets of this instance)."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
