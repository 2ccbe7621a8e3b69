"""The registry: dataset definitions (versioned, with an evolution report) and project API keys,
kept in Redis so every instance shares them, with per-process caches refreshed within a second.

- :mod:`registry.store` — ``Registry``: put/get/versions/list/delete, ``resolve`` (hot path).
- :mod:`registry.evolution` — ``breaking_changes(old, new)``.
- :mod:`registry.apikeys` — ``KeyService``: create/list/revoke, ``verify`` (hot path).
- :mod:`registry.generation` — the ``registry:generation`` poll that keeps caches fresh.
- :mod:`registry.cli` — ``strictgate datasets ...`` and ``strictgate keys ...``.
"""
