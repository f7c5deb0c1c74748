"""Every query the dashboard and the HTTP API run over the lake, as named functions.

Routes (`api/`), pages (`ui/`) and live models (`live/`) call these and hold no SQL of their
own; the analysts' free SQL is `storage.sql_sandbox`, the attendance report's sections
`storage.reports`, the analytics page's fixed queries `storage.analytics`.

Why this shape:
- The dashboard never opens `venue.duckdb` (a flow or analyst may hold it); each worker thread
  keeps its own in-memory DuckDB connection with the catalog's views (`lake_connection`, over
  `storage.catalog.connect_memory`), since a DuckDB connection must not be shared by threads.
- Every query runs on a worker thread (`in_thread`, NiceGUI's `run.io_bound`): DuckDB releases
  the GIL, so the event loop (websockets, live pushes) keeps turning while a scan runs.
- SQL is parameterised; only fixed fragments (column names of this code) are formatted in.
- A failed read is `LakeUnavailable` with the reason (routes answer 503, pages say so).
- Event rows are turned into the same JSON shape the flow publishes (`events:new`,
  `events:recent`), via the same serializer (pydantic-core), so API clients see one format
  whatever the source.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import duckdb
from nicegui import run
from pydantic_core import to_json

from core.lake_location import Lake, as_lake
from core.records import stored_json
from storage.catalog import connect_memory, query
from storage.reports import Report, attendance_report

T = TypeVar("T")

_local = threading.local()


# --- connection, errors, threads ------------------------------------------------------------


class LakeUnavailable(RuntimeError):
    """The lake could not be read (e.g. files rewritten under a scan after a flow resume)."""


def lake_connection(lake: Lake | Path) -> duckdb.DuckDBPyConnection:
    """This thread's in-memory DuckDB connection with the catalog's views of `lake` (made on
    first use; TIMESTAMPTZ values come back as UTC datetimes, whatever the machine's zone)."""
    where = as_lake(lake)
    key = (where.uri, tuple(sorted(where.storage_options.items())))
    con: duckdb.DuckDBPyConnection | None = getattr(_local, "con", None)
    if con is None or getattr(_local, "key", None) != key:
        if con is not None:
            con.close()
        con = connect_memory(lake)
        con.execute("SET TimeZone = 'UTC'")
        _local.con, _local.key = con, key
    return con


def lake_query(lake: Lake | Path, sql: str, params: list[Any]) -> tuple[list[str], list[tuple]]:
    """Blocking: column names and rows of one query. LakeUnavailable with the reason."""
    try:
        return query(lake_connection(lake), sql, params)
    except duckdb.Error as exc:
        raise LakeUnavailable(f"lake could not be read: {exc}") from exc


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` on a worker thread, so the event loop never waits for DuckDB."""
    result = await run.io_bound(fn, *args)
    if result is None:  # NiceGUI answers None while the app shuts down
        raise LakeUnavailable("the app is shutting down")
    return result


async def lake_rows(lake: Lake | Path, sql: str, params: list[Any]) -> tuple[list[str], list]:
    """`lake_query` on a worker thread."""
    return await in_thread(lake_query, lake, sql, params)


# --- events -----------------------------------------------------------------------------------

#: The stored-event columns, in the order of the JSON the flow publishes.
COLUMNS = ("id", "stream", "source", "type", "level", "payload", "ts", "received_at")


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
    con = lake_connection(lake_dir)
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
    return await in_thread(query_events, lake_dir, q)


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


# --- the activity log (`request_logs`) ----------------------------------------------------------

#: `GET /logs`'s columns, in its JSON's order.
REQUEST_LOG_COLUMNS = (
    "id", "origin", "ts", "event", "client_id", "ip", "user_agent", "room_id", "camera_id",
    "metadata", "received_at",
)  # fmt: skip
#: Columns `GET /logs` filters on by equality (`event` also by prefix: ending in `.` or `*`).
REQUEST_LOG_FILTERS = ("event", "room_id", "camera_id", "client_id", "ip")


async def request_logs_page(
    lake: Lake | Path,
    values: dict[str, str | None],
    since: datetime | None,
    until: datetime | None,
    page: int,
    size: int,
) -> tuple[list[tuple], int]:
    """One page of `request_logs`, newest first (ts, then id), and the total: rows in
    `REQUEST_LOG_COLUMNS` order. `values` holds the `REQUEST_LOG_FILTERS` (empty: no filter);
    `since`/`until` must carry a UTC offset."""
    clauses: list[str] = []
    params: list[Any] = []
    for name in REQUEST_LOG_FILTERS:
        v = (values.get(name) or "").strip()
        if not v:
            continue
        if name == "event" and v.endswith(("*", ".")):
            clauses.append("starts_with(event, ?)")
            params.append(v.rstrip("*"))
        else:
            clauses.append(f"{name} = ?")
            params.append(v)
    for ts, op in ((since, ">="), (until, "<")):
        if ts is not None:
            clauses.append(f"ts {op} ?")
            params.append(ts)
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    cols = ", ".join(REQUEST_LOG_COLUMNS)
    # The page and the total from ONE query (one view of the lake): two queries raced a
    # file landing in between (total 3, items none — seen once in the test suite).
    _, rows = await lake_rows(
        lake,
        f"SELECT {cols}, count(*) OVER () FROM request_logs{where} "
        "ORDER BY ts DESC, id DESC LIMIT ? OFFSET ?",
        [*params, size, (page - 1) * size],
    )
    if rows:
        return [r[:-1] for r in rows], int(rows[0][-1])
    if page == 1:
        return [], 0
    # past the last page: the total still tells the client where that is
    _, ((total,),) = await lake_rows(lake, f"SELECT count(*) FROM request_logs{where}", params)
    return [], int(total)


# --- participants -------------------------------------------------------------------------------

#: The lake's participant columns the API and the pages show.
PARTICIPANT_COLUMNS = (
    "id", "name", "email", "organization", "category", "extra", "serial", "status",
    "revoked_at", "revoked_reason", "updated_at",
)  # fmt: skip


def _like(q: str) -> str:
    return "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _jsonable(doc: dict[str, Any]) -> dict[str, Any]:
    if isinstance(doc.get("extra"), str):
        with contextlib.suppress(ValueError):
            doc["extra"] = json.loads(doc["extra"])
    return json.loads(to_json(doc))


def query_participants(
    lake: Lake | Path, q: str | None, status: str | None, page: int, size: int
) -> dict[str, Any]:
    """Blocking: one page of the lake's `participants` (newest version of each), by id;
    `q` matches id, name, e-mail or organisation (case-insensitive substring)."""
    clauses, params = [], []
    if q:
        clauses.append(
            "(id ILIKE ? ESCAPE '\\' OR name ILIKE ? ESCAPE '\\' "
            "OR coalesce(email, '') ILIKE ? ESCAPE '\\' "
            "OR coalesce(organization, '') ILIKE ? ESCAPE '\\')"
        )
        params += [_like(q)] * 4
    if status:
        clauses.append("status = ?")
        params.append(status)
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    cols = ", ".join(PARTICIPANT_COLUMNS)
    con = lake_connection(lake)
    try:
        _, rows = query(
            con,
            f"SELECT {cols} FROM participants{where} ORDER BY id LIMIT ? OFFSET ?",
            [*params, size, (page - 1) * size],
        )
        _, ((total,),) = query(con, f"SELECT count(*) FROM participants{where}", params)
    except duckdb.Error as exc:
        raise LakeUnavailable(f"lake could not be read: {exc}") from exc
    items = [_jsonable(dict(zip(PARTICIPANT_COLUMNS, r, strict=True))) for r in rows]
    return {"page": page, "size": size, "total": int(total), "items": items, "source": "lake"}


def query_participant(lake: Lake | Path, pid: str) -> dict[str, Any]:
    """Blocking: the lake's row for one participant (None if absent) and a summary of their
    scans (entries, exits, refused, first entry, last scan, gate and status)."""
    con = lake_connection(lake)
    cols = ", ".join(PARTICIPANT_COLUMNS)
    try:
        _, rows = query(con, f"SELECT {cols} FROM participants WHERE id = ?", [pid])
        scan_cols, (scans,) = query(
            con,
            "SELECT "
            "count(*) FILTER (WHERE status = 'accepted' AND direction = 'in') AS entries, "
            "count(*) FILTER (WHERE status = 'accepted' AND direction = 'out') AS exits, "
            "count(*) FILTER (WHERE status <> 'accepted') AS refused, "
            "min(ts) FILTER (WHERE status = 'accepted' AND direction = 'in') AS first_entry, "
            "max(ts) AS last_scan_at, "
            "arg_max(gate_id, ts) AS last_gate, arg_max(status, ts) AS last_status "
            "FROM checkins WHERE participant_id = ?",
            [pid],
        )
    except duckdb.Error as exc:
        raise LakeUnavailable(f"lake could not be read: {exc}") from exc
    lake_row = _jsonable(dict(zip(PARTICIPANT_COLUMNS, rows[0], strict=True))) if rows else None
    checkins = json.loads(to_json(dict(zip(scan_cols, scans, strict=True))))
    checkins["checked_in"] = bool(checkins["entries"])
    return {"participant": lake_row, "checkins": checkins}


# --- alarms and notifications ---------------------------------------------------------------

#: Each alarm's newest state (`alarm_latest`) with when it was first raised; `_LATEST_COLUMNS`.
_LATEST_SQL = """
SELECT l.alarm_id, l.rule_id, l.rule_name, l.kind, l.source, l.severity, l.status, l.message,
       l.count, l.value, r.raised_at, l."at", l."by", l.transition, l.comment
FROM alarm_latest l
LEFT JOIN (SELECT alarm_id, min("at") AS raised_at FROM alarms GROUP BY alarm_id) r
  USING (alarm_id)
"""

#: The alarm history table's columns (transitions; escalations fill the same columns).
ALARM_HISTORY_COLUMNS = (
    "at", "transition", "severity", "rule_id", "source", "status", "by", "role", "comment",
    "value", "count", "message", "alarm_id",
)  # fmt: skip
ALARM_HISTORY_ROWS = 200


async def latest_alarms(lake: Lake | Path, alarm_id: str | None = None) -> list[tuple]:
    """Every alarm's newest state from the lake (or one alarm's), as rows of `alarm_id,
    rule_id, rule_name, kind, source, severity, status, message, count, value, raised_at, at,
    by, transition, comment`."""
    if alarm_id is None:
        return (await lake_rows(lake, _LATEST_SQL, []))[1]
    return (await lake_rows(lake, _LATEST_SQL + " WHERE l.alarm_id = ?", [alarm_id]))[1]


async def alarm_transitions(
    lake: Lake | Path, alarm_id: str, columns: Sequence[str]
) -> list[tuple]:
    """One alarm's transitions from the lake's `alarms`, oldest first (`columns` of it)."""
    cols = ", ".join(f'"{c}"' for c in columns)  # `by`, `at`: SQL words
    sql = f"SELECT {cols} FROM alarms WHERE alarm_id = ? ORDER BY revision"
    return (await lake_rows(lake, sql, [alarm_id]))[1]


def history_query(
    since: datetime, filters: dict[str, str], transition: str = ""
) -> tuple[str, list[Any]]:
    """The alarm history table's query: the lake's `alarms` transitions and, unless a
    transition is picked, the notifier's escalation steps (lake `notifications`,
    `result = 'escalated'`) as rows `escalation <level>` by `notifier` — so the history says
    when nobody acknowledged. Rows: `ALARM_HISTORY_COLUMNS`, then the revision. Values only
    ever as bound parameters."""
    clauses, params = ['"at" >= ?'], [since]
    for col in ("alarm_id", "rule_id", "source"):
        if filters.get(col):
            clauses.append(f"{col} = ?")
            params.append(filters[col])
    where = " AND ".join(clauses)
    cols = ", ".join(f'"{k}"' for k in ALARM_HISTORY_COLUMNS)  # `by`, `at`: SQL words
    sql = f"SELECT {cols}, revision FROM alarms WHERE {where}"
    all_params = list(params)
    if transition:
        sql += " AND transition = ?"
        all_params.append(transition)
    else:
        sql += (
            " UNION ALL SELECT \"at\", 'escalation ' || level, severity, rule_id, source, "
            "NULL, 'notifier', NULL, 'not acknowledged: notified route ' || route || ' (' || "
            "target || ')', NULL, NULL, NULL, alarm_id, 0 "
            f"FROM notifications WHERE result = 'escalated' AND {where}"
        )
        all_params += params
    return f'{sql} ORDER BY "at" DESC, revision DESC LIMIT {ALARM_HISTORY_ROWS}', all_params


async def alarm_history(
    lake: Lake | Path, since: datetime, filters: dict[str, str], transition: str = ""
) -> list[tuple]:
    """The rows of `history_query`, newest first."""
    return (await lake_rows(lake, *history_query(since, filters, transition)))[1]


async def notification_attempts(
    lake: Lake | Path, columns: Sequence[str], alarm_id: str | None, limit: int = 100
) -> list[tuple]:
    """The newest notification attempts (of one alarm, or all), `columns` of `notifications`."""
    cols = ", ".join(f'"{k}"' for k in columns)
    where, params = ("WHERE alarm_id = ?", [alarm_id]) if alarm_id else ("", [])
    sql = f'SELECT {cols} FROM notifications {where} ORDER BY "at" DESC LIMIT {int(limit)}'
    return (await lake_rows(lake, sql, params))[1]


# --- video and attendance -------------------------------------------------------------------


async def camera_stats(lake: Lake | Path, columns: Sequence[str], limit: int) -> list[tuple]:
    """The newest per-camera statistics windows (`columns` of `camera_stats`), newest first."""
    cols = ", ".join(columns)
    sql = f"SELECT {cols} FROM camera_stats ORDER BY window_start DESC, camera_id LIMIT ?"
    return (await lake_rows(lake, sql, [limit]))[1]


def attendance_minutes(lake: Lake | Path, since: datetime) -> list[tuple[datetime, str, int]]:
    """Blocking: accepted entries per closed minute and gate since `since` (its own short
    connection: the live model reads this once at start)."""
    con = connect_memory(lake)
    try:
        con.execute("SET TimeZone = 'UTC'")
        _, rows = query(
            con,
            "SELECT minute, gate_id, count FROM attendance_per_minute "
            "WHERE direction = 'in' AND status = 'accepted' AND minute >= ?",
            [since],
        )
        return [(m, str(g), int(n)) for m, g, n in rows]
    finally:
        con.close()


def build_report(lake: Lake | Path) -> Report:
    """Blocking: run every section of the attendance report (`storage.reports`)."""
    try:
        return attendance_report(lake_connection(lake))
    except duckdb.Error as exc:
        raise LakeUnavailable(f"lake could not be read: {exc}") from exc
