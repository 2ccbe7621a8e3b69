"""Every row of the embedded lake, for audits that compare what was admitted with what was
written (the soak, the fault tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from strictgate.lake.engine import ALIAS, LakeConfig, connect


def lake_rows(data_dir: Path, columns: tuple[str, ...]) -> list[dict[str, Any]]:
    """``columns`` of every row of every dataset table (that has them) of the embedded lake,
    read as any reader would: read-only, while the service may be committing. JSON columns
    come back as text."""
    config = LakeConfig.local(data_dir.resolve())
    if not Path(config.catalog.removeprefix("sqlite:")).exists():
        return []
    try:
        con = connect(config, read_only=True)
    except duckdb.InvalidInputException as exc:
        # the catalog file exists but its first writer has not finished creating the lake
        if "creating a new DuckLake is explicitly disabled" in str(exc):
            return []
        raise
    try:
        tables = con.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = ?"
            " AND NOT starts_with(schema_name, '__')", [ALIAS]).fetchall()
        rows: list[dict[str, Any]] = []
        select = ", ".join(f'"{c}"' for c in columns)
        for schema, table in tables:
            present = {c[0] for c in con.execute(f'DESCRIBE "{schema}"."{table}"').fetchall()}
            if set(columns) <= present:
                rows += [dict(zip(columns, r, strict=True)) for r in con.execute(
                    f'SELECT {select} FROM "{schema}"."{table}"').fetchall()]
        return rows
    finally:
        con.close()
