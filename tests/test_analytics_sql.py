"""The analytics page's SQL over a real Parquet lake (real DuckDB): ready-made queries answer,
and free SQL can read the lake but cannot write files, read other paths, attach databases,
load extensions, change settings, run several statements, or run forever."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest

from storage.analytics import (
    READY,
    SqlAdmission,
    SqlBusy,
    SqlError,
    SqlRefused,
    check_sql,
    run_ready,
    run_sql,
    safe_connect,
)
from storage.lake import LakeWriter

#: Free SQL as an organiser runs it (personal columns in clear); masking: test_sql_sandbox.py.
run_clear = partial(run_sql, key=None)


def _lake(tmp_path: Path, n: int = 30) -> Path:
    lake = tmp_path / "lake"
    now = datetime.now(UTC)
    rows = [
        {
            "id": f"{i}-0",
            "stream": "events:in",
            "source": f"gas-{i % 3}",
            "type": "GAS",
            "level": ["INFO", "WARN", "ERROR"][i % 3],
            "payload": f'{{"ppm": {i}}}',
            "ts": now - timedelta(minutes=i),
            "received_at": now,
        }
        for i in range(n)
    ]
    LakeWriter(lake, "events", "p0").write(rows, 0)
    return lake


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    return _lake(tmp_path)


def test_free_sql_reads_the_lake_views(lake: Path) -> None:
    res = run_clear(lake, "SELECT level, count(*) AS n FROM events GROUP BY level ORDER BY level")
    assert res.columns == ["level", "n"]
    assert res.rows == [("ERROR", 10), ("INFO", 10), ("WARN", 10)]
    assert not res.truncated
    assert res.csv().splitlines() == ["level,n", "ERROR,10", "INFO,10", "WARN,10"]
    # Common read-only forms are fine.
    for sql in ("FROM events LIMIT 1", "DESCRIBE events", "SHOW TABLES", "EXPLAIN SELECT 1",
                "EXPLAIN ANALYZE SELECT count(*) FROM events",
                "/* c */ explain analyze FROM events",
                "WITH x AS (SELECT 1 AS a) SELECT * FROM x", "SELECT 1;"):  # fmt: skip
        run_clear(lake, sql)


def test_row_limit_says_truncated(lake: Path) -> None:
    res = run_clear(lake, "SELECT * FROM events ORDER BY ts DESC", max_rows=7)
    assert len(res.rows) == 7 and res.truncated
    assert run_clear(lake, "SELECT * FROM events", max_rows=30).truncated is False


def test_time_limit_interrupts(lake: Path) -> None:
    with pytest.raises(SqlError, match=r"longer than 0\.5 s"):
        run_clear(lake, "SELECT count(*) FROM range(1000000000000) a, range(1000) b", timeout_s=0.5)


@pytest.mark.parametrize(
    "sql",
    [
        "COPY (SELECT 1) TO '{lake}/events/date=2020-01-01/x.parquet'",
        "COPY events TO '/tmp/stolen.csv'",
        "EXPORT DATABASE '{tmp}/export'",
        "ATTACH '{tmp}/other.duckdb' AS other",
        "DETACH memory",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET enable_external_access = true",
        "RESET lock_configuration",
        "PRAGMA database_list",
        "CALL pragma_version()",
        "CREATE TABLE t AS SELECT 1",
        "CREATE OR REPLACE VIEW events AS SELECT 1",
        "INSERT INTO events SELECT * FROM events",
        "DROP VIEW events",
        "USE memory",
        "CHECKPOINT",
        "PIVOT events ON level USING count(*)",
        "SELECT 1; COPY (SELECT 1) TO '{tmp}/x.csv'",
        "SELECT 1; SELECT 2",
        "EXPLAIN ANALYZE COPY (SELECT 1) TO '{lake}/events/date=2020-01-01/x.parquet'",
        "EXPLAIN COPY (SELECT 1) TO '{lake}/events/date=2020-01-01/x.parquet'",
        "/* hi */ explain -- x\n analyse  COPY events TO '{tmp}/x.csv'",
        "EXPLAIN (FORMAT json) SELECT 1",
        "EXPLAIN ANALYZE EXPLAIN ANALYZE COPY (SELECT 1) TO '{tmp}/x.csv'",
        "EXPLAIN ANALYZE ATTACH '{tmp}/other.duckdb'",
        "EXPLAIN ANALYZE SELECT 1; COPY (SELECT 1) TO '{tmp}/x.csv'",
        "",
    ],
)
def test_statements_other_than_one_select_are_refused(lake: Path, tmp_path: Path, sql: str) -> None:
    sql = sql.format(lake=lake.resolve(), tmp=tmp_path)
    with pytest.raises(SqlRefused):
        run_clear(lake, sql)
    assert sorted(p.name for p in (lake / "events").rglob("*.parquet")) == [
        "empty.parquet",
        "p0-0000000000.parquet",
    ]
    assert not any(p.name in ("x.csv", "export", "other.duckdb") for p in tmp_path.iterdir())


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/hostname')",
        "SELECT * FROM glob('/*')",
        "SELECT * FROM read_parquet('{lake}/../../x.parquet')",
        "SELECT * FROM read_text('{lake}/events/../../{secret}')",
        "SELECT * FROM read_json('http://127.0.0.1:9/x.json')",
        "SELECT * FROM query('COPY (SELECT 1) TO ''{lake}/events/y.parquet''')",
        "SELECT * FROM duckdb_extensions()",
    ],
)
def test_selects_cannot_reach_outside_the_lake(lake: Path, tmp_path: Path, sql: str) -> None:
    (tmp_path / "secret.txt").write_text("password=hunter2")
    sql = sql.format(lake=lake.resolve(), secret="secret.txt")
    with pytest.raises(SqlError) as err:
        run_clear(lake, sql)
    assert "hunter2" not in str(err.value)
    assert not (lake / "events" / "y.parquet").exists()


def test_settings_are_locked_on_the_safe_connection(lake: Path) -> None:
    con = safe_connect(lake)
    try:
        with pytest.raises(Exception, match="locked"):
            con.execute("SET enable_external_access = true")
        dirs = con.execute("SELECT current_setting('allowed_directories')").fetchone()[0]
        assert dirs == [str(lake.resolve()) + "/"]
    finally:
        con.close()


def test_each_query_gets_a_fresh_connection(lake: Path) -> None:
    # Nothing survives between queries (a TEMP object cannot even be created).
    with pytest.raises(SqlRefused):
        check_sql("CREATE TEMP MACRO events_total() AS 1")
    assert run_clear(lake, "SELECT count(*) FROM events").rows == [(30,)]


def test_ready_queries_run_on_the_real_lake(lake: Path) -> None:
    res = run_ready(lake, "events_per_hour", "all")
    assert sum(r[2] for r in res.rows) == 30
    top = run_ready(lake, "top_sources", "all")
    assert {r[0] for r in top.rows} == {"gas-0", "gas-1", "gas-2"}
    for key in READY:
        if key == "alarm_counts" and not (lake / "alarms").exists():
            continue  # the alarms table arrives with the alarm flow
        run_ready(lake, key, "1 h")  # every one of them is valid SQL on empty tables too


def test_no_stray_files_written(lake: Path) -> None:
    run_clear(lake, "SELECT 1")  # the first connection creates the empty tables' folders
    before = {p for p in lake.rglob("*")}
    run_clear(lake, "SELECT * FROM events ORDER BY payload")
    assert {p for p in lake.rglob("*")} == before
    assert not os.path.exists(".tmp")


def test_admission_one_per_session_and_a_cap_in_all() -> None:
    gate = SqlAdmission()
    gate.enter("tab-a", limit=2)
    with pytest.raises(SqlBusy, match="a query of yours is still running"):
        gate.enter("tab-a", limit=2)
    with gate.slot("tab-b", limit=2), pytest.raises(SqlBusy, match="2 queries are running"):
        gate.enter("tab-c", limit=2)
    gate.enter("tab-c", limit=2)  # tab-b's slot was given back
    gate.leave("tab-a")
    gate.leave("tab-c")
    with gate.slot("tab-a", limit=1):  # a failing query gives its slot back too
        pass
    with pytest.raises(ValueError), gate.slot("tab-a", limit=1):
        raise ValueError("query failed")
    gate.enter("tab-a", limit=1)
