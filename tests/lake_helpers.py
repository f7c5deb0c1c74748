"""Reading the real lake from tests (DuckDB over the Parquet files the flows wrote)."""

from __future__ import annotations

from pathlib import Path

from storage.catalog import connect_memory, query


def rows(data_dir: Path, sql: str) -> list[tuple]:
    con = connect_memory(data_dir / "lake")
    try:
        return query(con, sql)[1]
    finally:
        con.close()


def scalar(data_dir: Path, sql: str):
    return rows(data_dir, sql)[0][0]


def event_rows(data_dir: Path) -> int:
    return scalar(data_dir, "SELECT count(*) FROM events")


def windows_match_events(data_dir: Path, window_s: int) -> list[tuple]:
    """Windows whose summed `event_counts` differ from a recount of `events` (empty = exact)."""
    return rows(
        data_dir,
        f"""
        WITH recount AS (
            SELECT to_timestamp(floor(epoch(ts) / {window_s}) * {window_s}) AS window_start,
                   type, level, count(*) AS n
            FROM events GROUP BY ALL
        )
        SELECT coalesce(r.window_start, c.window_start), coalesce(r.type, c.type),
               coalesce(r.level, c.level), r.n, c.count
        FROM recount r FULL OUTER JOIN event_counts c
          ON r.window_start = c.window_start AND r.type = c.type AND r.level = c.level
        WHERE r.n IS DISTINCT FROM c.count
        """,
    )
