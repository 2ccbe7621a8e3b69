"""The lake a process uses, from its settings (one place for the embedded default and for
the S3 options of an ``s3://`` data path)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from strictgate.lake.engine import LakeConfig, S3Options
from strictgate.settings import S3_SCHEMES, Settings, s3_settings


def lake_config(settings: Settings) -> LakeConfig:
    """``STRICTGATE_LAKE_CATALOG`` / ``STRICTGATE_LAKE_DATA_PATH``, else the embedded default:
    a SQLite catalog and Parquet files under ``<data dir>/lake``; with an ``s3://`` data
    path, the S3 options of ``settings``."""
    local = LakeConfig.local(settings.data_dir.resolve())
    data_path = settings.lake_data_path or local.data_path
    if settings.lake_data_path and "://" not in data_path:
        # a local directory: absolute (the catalog stores it) and with the trailing slash
        data_path = str(Path(data_path).resolve()) + "/"
    s3 = None
    if data_path.startswith(S3_SCHEMES):
        # DuckLake reads s3://b/p as s3://b/p/; the slash keeps the secret's scope and the
        # read-only connection's allowed prefix from also covering s3://b/p-other/
        data_path = data_path.rstrip("/") + "/"
        s3 = s3_options(settings)
    return LakeConfig(catalog=settings.lake_catalog or local.catalog, data_path=data_path,
                      s3=s3)


def s3_options(settings: Settings) -> S3Options:
    """The S3 options of ``settings`` (``AWS_*``, ``STRICTGATE_S3_*``)."""
    return S3Options(key_id=settings.aws_access_key_id, secret=settings.aws_secret_access_key,
                     session_token=settings.aws_session_token, region=settings.aws_region,
                     endpoint=settings.s3_endpoint, use_ssl=settings.s3_use_ssl,
                     url_style=settings.s3_url_style)


def s3_from_environ(env: Mapping[str, str], data_path: str) -> S3Options:
    """The S3 options ``env`` gives for ``data_path``, checked as at start
    (:class:`strictgate.settings.SettingsError` if malformed)."""
    fields = s3_settings(env, data_path)
    return s3_options(dataclasses.replace(Settings(), **fields))  # type: ignore[arg-type]
