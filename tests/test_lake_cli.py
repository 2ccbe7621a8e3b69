"""``strictgate sql`` and ``strictgate lake compact`` against a real lake (filled with the lake
writer) under STRICTGATE_DATA_DIR: through the CLI entry point, and as a subprocess."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from strictgate.cli import main
from strictgate.lake.engine import LakeConfig
from strictgate.lake.writer import LakeWriter
from tests.lake_support import seed_definitions, seed_entries
from tests.serve_proc import clean_env, run_cli


@pytest.fixture
def lake_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data dir whose lake holds p1.billing (30 records in 3 commits) and p1.other (2)."""
    for name in [n for n in os.environ if n.startswith("STRICTGATE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("STRICTGATE_DATA_DIR", str(tmp_path))
    writer = LakeWriter(LakeConfig.local(tmp_path), seed_definitions)
    for n in range(3):
        writer.write(seed_entries(1, 10, start=n))
    writer.write(seed_entries(1, 2, start=10, dataset="other"))
    writer.close()
    return tmp_path


def test_sql_prints_an_aligned_table(lake_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["sql", "SELECT country, count(*) AS n, sum(amount) AS total, NULL AS nothing"
                        " FROM p1.billing GROUP BY country"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out == ["country   n  total  nothing",
                   "-------  --  -----  -------",
                   "RO       30  217.5     NULL",
                   "(1 row)"]


def test_sql_json(lake_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["sql", "--json", 'SELECT "__entryId" AS e, "__receivedAt" AS at, context'
                                  " FROM p1.other ORDER BY \"__seq\""])
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0] == {"e": "u/1781000000010-0", "at": "2026-06-10T11:00:00.123000+00:00",
                       "context": '{"source":"billing-service","request_id":"req_20"}'}
    assert len(rows) == 2


def test_sql_max_rows(lake_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sql", "--max-rows", "3", "SELECT amount FROM p1.billing"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[-1] == "(3 rows)"
    assert "only the first 3 rows" in captured.err


@pytest.mark.parametrize(("query", "message"), [
    ("DELETE FROM p1.billing", "only one SELECT (or EXPLAIN) statement may run"),
    ("INSERT INTO p1.billing (country) VALUES ('x')", "only one SELECT"),
    ("COPY (SELECT 1) TO '/tmp/strictgate-sql-test.csv'", "only one SELECT"),
    ("SELECT 1; DROP TABLE p1.billing", "only one SELECT"),
    ("SELECT * FROM read_csv('/etc/passwd')", "Permission Error"),
    ("SELECT * FROM read_parquet('/etc/*.parquet')", "Permission Error"),
    ("SELECT * FROM p1.nope", "Catalog Error"),
    ("SELEC 1", "Parser Error"),
])
def test_sql_refusals_are_one_line_and_exit_1(lake_dir: Path, capsys: pytest.CaptureFixture[str],
                                              query: str, message: str) -> None:
    assert main(["sql", query]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("strictgate sql: ") and message in captured.err
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert not Path("/tmp/strictgate-sql-test.csv").exists()
    assert main(["sql", "SELECT count(*) FROM p1.billing"]) == 0


def test_sql_on_an_empty_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("STRICTGATE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("STRICTGATE_LAKE_CATALOG", raising=False)
    assert main(["sql", "SELECT 1"]) == 1
    assert capsys.readouterr().err == (
        "strictgate sql: the lake has no data yet (nothing was written to it)\n")
    assert main(["lake", "compact"]) == 0
    assert "nothing to compact" in capsys.readouterr().out
    assert not (tmp_path / "lake").exists()


def test_lake_compact_merges_and_reports(lake_dir: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    files = sorted((lake_dir / "lake" / "data" / "p1" / "billing").rglob("*.parquet"))
    assert len(files) == 3
    assert main(["lake", "compact"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["files_merged"] >= 1 and set(report) == {
        "files_merged", "snapshots_expired", "files_deleted", "orphans_deleted",
        "ledger_pruned", "seconds"}
    assert main(["sql", "--json", "SELECT count(*) AS n FROM ducklake_list_files('lake', 'billing',"
                 " schema => 'p1')"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 1}]
    assert main(["sql", "SELECT count(*) AS n FROM p1.billing"]) == 0
    assert "30" in capsys.readouterr().out


def test_sql_as_a_subprocess(lake_dir: Path) -> None:
    env = clean_env(STRICTGATE_DATA_DIR=str(lake_dir))
    done = run_cli(env, "sql", "SELECT count(*) AS n FROM p1.billing")
    assert done.returncode == 0 and done.stdout.splitlines()[2].strip() == "30", done.stderr
    done = run_cli(env, "sql", "DROP TABLE p1.billing")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == "strictgate sql: only one SELECT (or EXPLAIN) statement may run\n"
    done = run_cli(env, "lake", "compact")
    assert done.returncode == 0 and "files_merged" in done.stdout, done.stderr


def test_a_catalog_password_never_reaches_the_cli_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # nothing listens on port 1: DuckDB's error quotes the whole connection string
    for name in [n for n in os.environ if n.startswith("STRICTGATE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("STRICTGATE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("STRICTGATE_LAKE_CATALOG",
                       "postgres:dbname=lake host=127.0.0.1 port=1 user=sg password=s3cr3t-pw")
    monkeypatch.setenv("STRICTGATE_LAKE_DATA_PATH", str(tmp_path / "data"))
    for argv in (["sql", "SELECT 1"], ["lake", "compact"]):
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 1, err
        assert "s3cr3t-pw" not in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1, err
