"""How the registry writes times: RFC 3339 UTC with milliseconds
(:func:`strictgate.timestamps.utc_z`, kept here under the registry's own name)."""

from __future__ import annotations

from datetime import datetime

from strictgate.timestamps import utc_z


def iso(moment: datetime) -> str:
    """``2026-06-10T10:58:00.123Z`` (UTC; a naive datetime is taken as UTC)."""
    return utc_z(moment)
