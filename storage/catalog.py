"""The DuckDB catalog: views over the Parquet lake, for analysts, `run.py query` and the UI.

The `.duckdb` file holds only views (no data), so flows never open it: they write Parquet.
It is (re)created by `refresh_catalog` when nothing reads it (at `run.py up`), and is otherwise
opened read-only, which any number of processes may do at once. The dashboard does not open the
file at all: it builds the same views in an in-memory connection (`connect_memory`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb

from storage.lake import ensure_lake, table_glob
from storage.tables import TABLES


def scan_sql(lake_dir: Path, table: str) -> str:
    """The FROM item that reads one lake table's files (every view is built on these)."""
    return (
        f"read_parquet('{table_glob(lake_dir, table)}', hive_partitioning = true, "
        "union_by_name = true)"
    )


def view_sql(lake_dir: Path, source: Callable[[str], str] | None = None) -> dict[str, str]:
    """Name → SELECT for every view of the catalog.

    `source(table)` gives the FROM item each view reads a lake table through (default:
    `scan_sql`). The analysts' sandbox passes one that reads a pseudonymised copy of the
    tables holding personal columns, so every view built on them (`participants`,
    `no_shows`, `checkins`, ...) inherits the masking: nothing per view to keep in step.
    """

    def scan(t: str) -> str:
        return source(t) if source is not None else scan_sql(lake_dir, t)

    views = {name: f"SELECT * FROM {scan(name)}" for name in TABLES}
    # Window results arrive as partial counts (late corrections, re-emits after a resume);
    # the public view sums them so each (window, type, level) is one row.
    views["event_count_parts"] = views["event_counts"]
    views["event_counts"] = (
        "SELECT window_start, window_end, type, level, sum(count)::BIGINT AS count, "
        "sum(CASE WHEN late THEN count ELSE 0 END)::BIGINT AS late_count "
        f"FROM {scan('event_counts')} GROUP BY ALL"
    )
    views.update(_attendance_views(scan))
    views.update(_video_views(scan))
    views.update(_alarm_views(scan))
    return views


def _alarm_views(scan: Any) -> dict[str, str]:
    """`alarms` is the history (one row per transition); `alarm_history` the same, newest
    first; `alarm_latest` each alarm's newest row (its status now: what `alarms:active`
    holds, plus the CLEARED_ACK ones that left it)."""
    return {
        "alarms": f"SELECT * EXCLUDE (date) FROM {scan('alarms')}",
        "alarm_history": (
            f'SELECT * EXCLUDE (date) FROM {scan("alarms")} ORDER BY "at" DESC, revision DESC'
        ),
        "alarm_latest": (
            f"SELECT * EXCLUDE (date) FROM {scan('alarms')} "
            "QUALIFY row_number() OVER (PARTITION BY alarm_id ORDER BY revision DESC) = 1"
        ),
    }


def _video_views(scan: Any) -> dict[str, str]:
    """Camera statistics: parts summed per (camera, window); fps over the seconds measured and
    the share of them spent streaming are derived from the sums (so parts never skew them)."""
    return {
        "camera_stat_parts": f"SELECT * FROM {scan('camera_stats')}",
        "camera_stats": (
            "SELECT camera_id, window_start, window_end, "
            "sum(frames_in)::BIGINT AS frames_in, sum(frames_out)::BIGINT AS frames_out, "
            "sum(dropped)::BIGINT AS dropped, sum(bad_frames)::BIGINT AS bad_frames, "
            "sum(reconnects)::BIGINT AS reconnects, sum(errors)::BIGINT AS errors, "
            "round(sum(uptime_s), 1) AS uptime_s, round(sum(observed_s), 1) AS observed_s, "
            "sum(bytes_out)::BIGINT AS bytes_out, "
            "round(sum(frames_in) / nullif(sum(observed_s), 0), 2) AS fps_in, "
            "round(sum(frames_out) / nullif(sum(observed_s), 0), 2) AS fps_out, "
            "least(100.0, round(100 * sum(uptime_s) / nullif(sum(observed_s), 0), 1)) "
            "AS uptime_pct "
            f"FROM {scan('camera_stats')} GROUP BY camera_id, window_start, window_end"
        ),
    }


def _attendance_views(scan: Any) -> dict[str, str]:
    """Check-ins and participants: the latest revision/version of each, and the report views
    (the dashboard's attendance report reads exactly these, so `run.py query` agrees)."""
    v: dict[str, str] = {}
    v["checkin_decisions"] = f"SELECT * FROM {scan('checkins')}"
    v["checkins"] = (
        f"SELECT * FROM {scan('checkins')} "
        "QUALIFY row_number() OVER (PARTITION BY checkin_id ORDER BY revision DESC) = 1"
    )
    v["participant_versions"] = f"SELECT * FROM {scan('participants')}"
    v["participants"] = (
        f"SELECT * EXCLUDE (date) FROM {scan('participants')} QUALIFY row_number() OVER "
        "(PARTITION BY id ORDER BY updated_at DESC, "
        "split_part(entry_id, '-', 2)::BIGINT DESC) = 1"
    )
    v["attendance_count_parts"] = f"SELECT * FROM {scan('attendance_counts')}"
    v["attendance_per_minute"] = (
        "SELECT window_start AS minute, window_end, gate_id, direction, status, "
        "sum(count)::BIGINT AS count, "
        "sum(CASE WHEN late THEN count ELSE 0 END)::BIGINT AS late_count "
        f"FROM {scan('attendance_counts')} GROUP BY ALL HAVING sum(count) <> 0"
    )
    v["gate_totals"] = (
        "SELECT gate_id, "
        "count(*) FILTER (WHERE status = 'accepted' AND direction = 'in')::BIGINT AS entries, "
        "count(*) FILTER (WHERE status = 'accepted' AND direction = 'out')::BIGINT AS exits, "
        "count(*) FILTER (WHERE status <> 'accepted')::BIGINT AS refused, "
        "count(*) FILTER (WHERE flagged)::BIGINT AS flagged, "
        "min(ts) AS first_scan, max(ts) AS last_scan "
        "FROM checkins GROUP BY gate_id"
    )
    v["no_shows"] = (
        "SELECT p.* FROM participants p WHERE p.status = 'active' AND p.id NOT IN ("
        "SELECT participant_id FROM checkins WHERE status = 'accepted' AND direction = 'in' "
        "AND participant_id IS NOT NULL)"
    )
    return v


def create_views(con: duckdb.DuckDBPyConnection, lake_dir: Path) -> None:
    ensure_lake(lake_dir)
    for name, sql in view_sql(lake_dir).items():
        con.execute(f"CREATE OR REPLACE VIEW {name} AS {sql}")


def refresh_catalog(catalog_path: Path, lake_dir: Path) -> None:
    """(Re)write the catalog file's views. Call when no process holds the file."""
    catalog_path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(catalog_path))
    try:
        create_views(con, lake_dir)
    finally:
        con.close()


def connect_catalog(catalog_path: Path, lake_dir: Path) -> duckdb.DuckDBPyConnection:
    """Open the catalog read-only, creating it first if it does not exist yet."""
    if not catalog_path.exists():
        refresh_catalog(catalog_path, lake_dir)
    return duckdb.connect(str(catalog_path), read_only=True)


def connect_memory(lake_dir: Path, threads: int = 1) -> duckdb.DuckDBPyConnection:
    """An in-memory connection with the catalog's views (for the dashboard's worker threads)."""
    con = duckdb.connect(config={"threads": threads})
    create_views(con, lake_dir)
    return con


def query(
    con: duckdb.DuckDBPyConnection, sql: str, params: Any = None, attempts: int = 5
) -> tuple[list[str], list]:
    """Run a query over the lake; return column names and rows.

    A Parquet file can vanish between DuckDB listing a folder and reading it (a flow merging
    small files, or rewriting its newest ones after a resume); the query then simply lists
    again — the lake is consistent at every instant, only the listing went stale.
    """
    for attempt in range(attempts):
        try:
            cur = con.execute(sql, params) if params is not None else con.execute(sql)
            cols = [d[0] for d in cur.description] if cur.description else []
            return cols, cur.fetchall()
        except duckdb.IOException:
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")
