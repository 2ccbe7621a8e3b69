"""The public ingest APIs strictgate speaks, each a :class:`~strictgate.dialects.base.Dialect`
over the one core, and :data:`INGEST_ROUTES`, the one table of their routes that both the
fast lane (:mod:`strictgate.ingest.front`) and the Starlette router are built from."""

from __future__ import annotations

from strictgate.dialects.base import Dialect, IngestRoute
from strictgate.dialects.definite import Definite
from strictgate.dialects.loguro import Loguro
from strictgate.dialects.onesight import OneSight
from strictgate.dialects.operyn import Operyn
from strictgate.dialects.orcasheets import OrcaSheets

DIALECTS: tuple[Dialect, ...] = (Loguro(), Operyn(), OrcaSheets(), OneSight(), Definite())

INGEST_ROUTES: tuple[IngestRoute, ...] = tuple(
    route for dialect in DIALECTS for route in dialect.routes())
"""Every ingest route, in match order (a route without parameters before a templated one
that would also match its path)."""

__all__ = ["DIALECTS", "INGEST_ROUTES", "Dialect", "IngestRoute"]
