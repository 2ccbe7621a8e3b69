"""The registry: dataset definitions (versioned, with an evolution report) and project API keys,
kept in Redis so every instance shares them, with per-process caches refreshed within a second.

- :mod:`strictgate.registry.store` — ``Registry``: put/get/versions/list/delete, ``resolve``.
- :mod:`strictgate.registry.evolution` — ``breaking_changes(old, new)``.
- :mod:`strictgate.registry.apikeys` — ``KeyService``: create/list/revoke, ``verify`` (hot path).
- :mod:`strictgate.registry.generation` — the ``registry:generation`` poll that keeps caches fresh.
- :mod:`strictgate.registry.cli` — ``strictgate datasets ...`` and ``strictgate keys ...``.
"""
