"""Reading stored events from the lake for the HTTP API and the dashboard's history table.

Why this shape:
- The dashboard never opens `venue.duckdb` (a flow or analyst may hold it); each worker thread
  keeps its own in-memory DuckDB connection with the catalog's views
  (`storage.catalog.connect_memory`), since a DuckDB connection must not be shared by threads.
- Every query runs through `nicegui.run.io_bound`: DuckDB releases the GIL, so the event loop
  (websockets, live pushes) keeps turning while a scan runs.
- SQL is parameterised; only fixed fragments are ever formatted into it.
- Rows are turned into the same JSON shape the flow publishes (`events:new`, `events:recent`),
  via the same serializer (pydantic-core), so API clients see one format whatever the source.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
from nicegui import run
from pydantic_core import to_json

from core.records import stored_json
from storage.catalog import connect_memory, query

COLUMNS = ("id", "stream", "source", "type", "level", "payload", "ts", "received_at")

_local = threading.local()


@dataclass(frozen=True, slots=True)
class EventQuery:
    """One page of events, newest first, optionally filtered by type and level."""

    page: int = 1
    size: int = 20
    type: str | None = None
    level: str | None = None

    @property
    def filtered(self) -> bool:
        return bool(self.type or self.level)


@dataclass(frozen=True, slots=True)
class EventPage:
    items: list[dict[str, Any]]
    total: int


class LakeUnavailable(RuntimeError):
    """The lake could not be read (e.g. files rewritten under a scan after a flow resume)."""


def _connection(lake_dir: Path) -> duckdb.DuckDBPyConnection:
    con: duckdb.DuckDBPyConnection | None = getattr(_local, "con", None)
    if con is None or getattr(_local, "lake_dir", None) != lake_dir:
        if con is not None:
            con.close()
        con = connect_memory(lake_dir)
        # TIMESTAMPTZ values come back as UTC datetimes, whatever the machine's zone.
        con.execute("SET TimeZone = 'UTC'")
        _local.con, _local.lake_dir = con, lake_dir
    return con


def _where(q: EventQuery) -> tuple[str, list[Any]]:
    clauses, params = [], []
    if q.type:
        clauses.append("type = ?")
        params.append(q.type)
    if q.level:
        clauses.append("level = ?")
        params.append(q.level)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def public_rows(rows: list[tuple]) -> list[dict[str, Any]]:
    """Lake rows → the stored-event JSON shape (payload as an object, ISO 8601 UTC times)."""
    docs = []
    for r in rows:
        d = dict(zip(COLUMNS, r, strict=True))
        d["payload"] = stored_json(d["payload"]) if d["payload"] else {}
        docs.append(d)
    return stored_json(to_json(docs, inf_nan_mode="null"))


def query_events(lake_dir: Path, q: EventQuery) -> EventPage:
    """Blocking: one page of events, ordered by (ts, id) descending. Call via `fetch_events`.

    The order is total (ids are unique), so paging is stable and a keyset cursor on (ts, id) can
    replace OFFSET later without changing results. The page and `total` come from one scan
    (a window count), so they agree while a flow writes; only past the last page is the total
    counted by a second query.
    """
    where, params = _where(q)
    cols = ", ".join(COLUMNS)
    page_sql = (
        f"SELECT {cols}, count(*) OVER () FROM events{where} "
        "ORDER BY ts DESC, id DESC LIMIT ? OFFSET ?"
    )
    count_sql = f"SELECT count(*) FROM events{where}"
    con = _connection(lake_dir)
    try:
        # `query` lists the files again if one vanished mid-scan (compaction, a flow resuming).
        _, rows = query(con, page_sql, [*params, q.size, (q.page - 1) * q.size])
        if rows:
            total, rows = rows[0][-1], [r[:-1] for r in rows]
        elif q.page == 1:
            total = 0
        else:
            _, ((total,),) = query(con, count_sql, params)
    except duckdb.Error as exc:
        raise LakeUnavailable(f"lake could not be read: {exc}") from exc
    return EventPage(public_rows(rows), int(total))


async def fetch_events(lake_dir: Path, q: EventQuery) -> EventPage:
    """`query_events` on a worker thread, so the event loop never waits for DuckDB."""
    result = await run.io_bound(query_events, lake_dir, q)
    if result is None:  # NiceGUI answers None while the app shuts down
        raise LakeUnavailable("the app is shutting down")
    return result


def newest_first(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sort stored-event dicts like the lake query does: (ts, id) descending, ids unique.

    Timestamps are compared as datetimes: their ISO text does not sort (".5Z" < "Z").
    """
    seen: set[str] = set()
    unique = []
    for it in items:
        if it.get("id") not in seen:
            seen.add(it.get("id"))
            unique.append(it)
    return sorted(unique, key=lambda d: (datetime.fromisoformat(d["ts"]), d["id"]), reverse=True)
