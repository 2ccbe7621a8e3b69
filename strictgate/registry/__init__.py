"""The registry: dataset definitions (versioned, with an evolution report) and project API keys,
kept in Redis so every instance shares them, with per-process caches refreshed within a second.

- :mod:`strictgate.registry.store` — ``Registry``: put/get/versions/list/delete, resolve, infer.
- :mod:`strictgate.registry.evolution` — ``breaking_changes(old, new)``.
- :mod:`strictgate.registry.apikeys` — ``KeyService``: create/list/revoke, ``verify`` (hot path).
- :mod:`strictgate.registry.generation` — the ``registry:generation`` poll that keeps caches fresh.
- :mod:`strictgate.registry.inference` — schema on first write: definitions inferred from rows.
- :mod:`strictgate.registry.settings` — per-project settings (``unknown_datasets``), cached.
- :mod:`strictgate.registry.cli` — ``strictgate datasets ...``, ``keys ...``, ``projects ...``.
"""
