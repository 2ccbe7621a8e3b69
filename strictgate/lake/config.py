"""The lake a process uses, from its settings (one place for the embedded default)."""

from __future__ import annotations

from pathlib import Path

from strictgate.lake.engine import LakeConfig
from strictgate.settings import Settings


def lake_config(settings: Settings) -> LakeConfig:
    """``STRICTGATE_LAKE_CATALOG`` / ``STRICTGATE_LAKE_DATA_PATH``, else the embedded default:
    a SQLite catalog and Parquet files under ``<data dir>/lake``."""
    local = LakeConfig.local(settings.data_dir.resolve())
    data_path = settings.lake_data_path or local.data_path
    if settings.lake_data_path and "://" not in data_path:
        # a local directory: absolute (the catalog stores it) and with the trailing slash
        data_path = str(Path(data_path).resolve()) + "/"
    return LakeConfig(catalog=settings.lake_catalog or local.catalog, data_path=data_path)
