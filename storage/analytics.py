"""The analytics page's queries: ready-made ones with a chart each, and free SQL for analysts.

Both run on a *locked-down* in-memory DuckDB connection (`safe_connect`) holding the
catalog's views over the lake, so an analyst can read the lake and nothing else:

- exactly one statement, and only `SELECT` (incl. `FROM t`, `WITH`, `DESCRIBE`, `SHOW`,
  `SUMMARIZE`, `VALUES`, set operations) or `EXPLAIN`. `COPY`, `ATTACH`, `DETACH`, `EXPORT`,
  `INSTALL`, `LOAD`, `SET`, `PRAGMA`, `CALL`, `CREATE`, `INSERT`, `USE`, `CHECKPOINT`, `PIVOT`
  (a multi-statement) ... are refused before anything runs. This check matters even with the
  settings below: file access has to stay open for the lake folder itself, and a `COPY ... TO`
  into that folder would be a write into the system of record;
- `enable_external_access = false` with `allowed_directories = [<lake>]`: no file outside the
  lake can be read (`read_csv('/etc/passwd')`, `glob('/*')`, `../` tricks are refused by
  DuckDB), no database attached, no extension loaded; extension auto-install/auto-load off;
  no temp directory (nothing spills to disk), a memory limit, one thread;
- `lock_configuration = true` last: no statement can undo any of it;
- a fresh connection per query: nothing an analyst does survives into the next query;
- a row limit (`fetchmany(limit + 1)`, so "truncated" is known) and a time limit
  (`interrupt()` from a timer thread); errors come back as `SqlError` with DuckDB's message.

No UI imports here: the page calls these functions through `run.io_bound`.
"""

from __future__ import annotations

import csv
import io
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import duckdb

from storage.catalog import create_views, memory_connection

MAX_ROWS = 5_000
TIMEOUT_S = 10.0
MEMORY_LIMIT = "512MB"
MAX_SQL_CHARS = 20_000
#: Comments and blanks, then PRAGMA: refused like any PRAGMA, whatever type the parser gives.
_LEADING_PRAGMA = re.compile(r"^(?:\s+|--[^\n]*\n?|/\*.*?\*/)*pragma\b", re.I | re.S)
ALLOWED_STATEMENTS = frozenset({duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN})


class SqlRefused(ValueError):
    """The statement is not allowed (before anything ran); the message says why."""


class SqlError(RuntimeError):
    """DuckDB refused or failed the query (syntax, permission, time limit); its message."""


@dataclass(frozen=True, slots=True)
class SqlResult:
    columns: list[str]
    rows: list[tuple]
    truncated: bool  # more rows existed than the limit
    elapsed_s: float

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, r, strict=True)) for r in self.rows]

    def csv(self) -> str:
        """The result as CSV text (header + rows; None as empty, times ISO 8601)."""
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(self.columns)
        for r in self.rows:
            w.writerow(
                ["" if v is None else v.isoformat() if hasattr(v, "isoformat") else v for v in r]
            )
        return buf.getvalue()


def safe_connect(lake_dir: Path, memory_limit: str = MEMORY_LIMIT) -> duckdb.DuckDBPyConnection:
    """An in-memory connection with the catalog's views that can read the lake folder only."""
    lake = lake_dir.resolve()
    con = memory_connection(threads=1)
    try:
        create_views(con, lake)  # before locking: `create_views` makes the empty tables
        allowed = str(lake).rstrip("/") + "/"
        for stmt in (
            "SET TimeZone = 'UTC'",
            "SET autoinstall_known_extensions = false",
            "SET autoload_known_extensions = false",
            "SET temp_directory = ''",
            f"SET memory_limit = '{memory_limit}'",
            f"SET allowed_directories = ['{_quote(allowed)}']",
            "SET enable_external_access = false",
            "SET lock_configuration = true",
        ):
            con.execute(stmt)
    except BaseException:
        con.close()
        raise
    return con


def _quote(text: str) -> str:
    return text.replace("'", "''")


def check_sql(sql: str) -> str:
    """The statement if it is one SELECT/EXPLAIN; else SqlRefused with the reason."""
    text = (sql or "").strip()
    if not text:
        raise SqlRefused("the query is empty")
    if len(text) > MAX_SQL_CHARS:
        raise SqlRefused(f"the query is longer than {MAX_SQL_CHARS:,} characters")
    try:
        statements = duckdb.extract_statements(text)
    except duckdb.Error as exc:
        raise SqlRefused(str(exc)) from exc
    if len(statements) != 1:
        raise SqlRefused(f"one statement at a time, please (got {len(statements)})")
    kind = statements[0].type
    if _LEADING_PRAGMA.match(text):  # DuckDB 1.5 parses PRAGMA into a SELECT
        kind = duckdb.StatementType.PRAGMA
    if kind not in ALLOWED_STATEMENTS:
        name = getattr(kind, "name", str(kind))
        raise SqlRefused(
            f"only read-only queries (SELECT, WITH, FROM, DESCRIBE, EXPLAIN) are allowed, "
            f"not {name}"
        )
    return text


def run_sql(
    lake_dir: Path,
    sql: str,
    params: dict[str, Any] | list[Any] | None = None,
    max_rows: int = MAX_ROWS,
    timeout_s: float = TIMEOUT_S,
) -> SqlResult:
    """Blocking: run one read-only query on a fresh safe connection (call via io_bound)."""
    text = check_sql(sql)
    t0 = time.monotonic()
    con = safe_connect(lake_dir)
    timed_out = threading.Event()

    def stop() -> None:
        timed_out.set()
        con.interrupt()

    timer = threading.Timer(timeout_s, stop)
    timer.daemon = True
    timer.start()
    try:
        cur = con.execute(text, params) if params is not None else con.execute(text)
        columns = [d[0] for d in cur.description] if cur.description else []
        rows = cur.fetchmany(max_rows + 1) if columns else []
    except duckdb.Error as exc:
        if timed_out.is_set():
            raise SqlError(f"the query took longer than {timeout_s:g} s and was stopped") from exc
        raise SqlError(f"{type(exc).__name__}: {exc}") from exc
    finally:
        timer.cancel()
        con.close()
    return SqlResult(columns, rows[:max_rows], len(rows) > max_rows, time.monotonic() - t0)


# --- ready-made queries ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Chart:
    """How the page draws a result: x column, value column(s), optional series column."""

    kind: Literal["bar", "line"]
    x: str
    y: list[str]
    series: str | None = None  # pivot: one series per distinct value of this column
    stack: bool = False


@dataclass(frozen=True, slots=True)
class ReadyQuery:
    key: str
    title: str
    description: str
    sql: str  # may use $since (TIMESTAMPTZ): the page's time range
    chart: Chart
    params: tuple[str, ...] = field(default=())


def _sql(text: str) -> str:
    return " ".join(text.split())


READY: dict[str, ReadyQuery] = {
    q.key: q
    for q in (
        ReadyQuery(
            "events_per_hour",
            "Events per hour by level",
            "Stored events per hour of event time, stacked by level.",
            _sql("""
                SELECT date_trunc('hour', ts) AS hour, level, count(*)::BIGINT AS events
                FROM events WHERE ts >= $since GROUP BY ALL ORDER BY hour, level
            """),
            Chart("bar", "hour", ["events"], series="level", stack=True),
            ("since",),
        ),
        ReadyQuery(
            "top_sources",
            "Top sources",
            "The 20 sources that sent the most events, with their warnings and errors.",
            _sql("""
                SELECT source, count(*)::BIGINT AS events,
                  count(*) FILTER (WHERE level = 'WARN')::BIGINT AS warnings,
                  count(*) FILTER (WHERE level IN ('ERROR', 'CRITICAL'))::BIGINT AS errors
                FROM events WHERE ts >= $since GROUP BY source
                ORDER BY events DESC, source LIMIT 20
            """),
            Chart("bar", "source", ["events", "warnings", "errors"]),
            ("since",),
        ),
        ReadyQuery(
            "arrivals_per_gate",
            "Arrivals per gate per minute",
            "Accepted entries per closed minute and gate (late corrections included).",
            _sql("""
                SELECT minute, gate_id, sum(count)::BIGINT AS arrivals
                FROM attendance_per_minute
                WHERE direction = 'in' AND status = 'accepted' AND minute >= $since
                GROUP BY ALL ORDER BY minute, gate_id
            """),
            Chart("line", "minute", ["arrivals"], series="gate_id"),
            ("since",),
        ),
        ReadyQuery(
            "no_shows",
            "No-shows by category",
            "Active participants never accepted in, per category (whole event).",
            _sql("""
                SELECT coalesce(category, '(none)') AS category,
                  count(*)::BIGINT AS no_shows
                FROM no_shows GROUP BY ALL ORDER BY no_shows DESC, category
            """),
            Chart("bar", "category", ["no_shows"]),
        ),
        ReadyQuery(
            "alarm_counts",
            "Alarms per rule: count, mean time to acknowledge and to clear",
            "From the alarm history (lake `alarms`): alarms raised per rule and severity, how "
            "many were acknowledged, and the mean seconds from raised to acknowledged/cleared.",
            _sql("""
                WITH a AS (
                  SELECT alarm_id, any_value(rule_id) AS rule_id,
                    arg_max(severity, "at") AS severity,
                    min("at") FILTER (WHERE transition = 'raised') AS raised_at,
                    min("at") FILTER (WHERE transition = 'acknowledged') AS acked_at,
                    min("at") FILTER (WHERE transition = 'cleared') AS cleared_at
                  FROM alarms GROUP BY alarm_id
                )
                SELECT rule_id, severity, count(*)::BIGINT AS alarms,
                  count(acked_at)::BIGINT AS acknowledged,
                  round(avg(epoch(acked_at) - epoch(raised_at)), 1) AS mean_s_to_ack,
                  round(avg(epoch(cleared_at) - epoch(raised_at)), 1) AS mean_s_to_clear
                FROM a WHERE raised_at >= $since GROUP BY ALL ORDER BY alarms DESC, rule_id
            """),
            Chart("bar", "rule_id", ["alarms", "acknowledged"]),
            ("since",),
        ),
        ReadyQuery(
            "camera_uptime",
            "Camera uptime",
            "Share of measured time each camera was streaming, reconnects and mean fps out.",
            _sql("""
                SELECT camera_id,
                  least(100.0, round(100 * sum(uptime_s) / nullif(sum(observed_s), 0), 1))
                    AS uptime_pct,
                  sum(reconnects)::BIGINT AS reconnects,
                  round(sum(frames_out) / nullif(sum(observed_s), 0), 2) AS fps_out
                FROM camera_stats WHERE window_start >= $since
                GROUP BY camera_id ORDER BY camera_id
            """),
            Chart("bar", "camera_id", ["uptime_pct"]),
            ("since",),
        ),
        ReadyQuery(
            "dead_letters",
            "Rejected input by origin and reason",
            "Dead letters (refused events, check-ins, commands) per origin and reason.",
            _sql("""
                SELECT origin, left(reason, 80) AS reason, count(*)::BIGINT AS rejected
                FROM dead_letters WHERE received_at >= $since
                GROUP BY ALL ORDER BY rejected DESC LIMIT 20
            """),
            Chart("bar", "reason", ["rejected"], series="origin", stack=True),
            ("since",),
        ),
    )
}

#: The page's time ranges (label → how far back); None means everything.
RANGES: dict[str, timedelta | None] = {
    "1 h": timedelta(hours=1),
    "6 h": timedelta(hours=6),
    "24 h": timedelta(hours=24),
    "7 days": timedelta(days=7),
    "all": None,
}


def since_for(range_label: str, now: datetime | None = None) -> datetime:
    span = RANGES.get(range_label, RANGES["24 h"])
    if span is None:
        return datetime(1970, 1, 1, tzinfo=UTC)
    return (now or datetime.now(UTC)) - span


def run_ready(
    lake_dir: Path, key: str, range_label: str = "24 h", timeout_s: float = TIMEOUT_S
) -> SqlResult:
    """Blocking: one ready-made query over the chosen time range (same safe connection)."""
    q = READY[key]
    params = {"since": since_for(range_label)} if "since" in q.params else None
    return run_sql(lake_dir, q.sql, params, timeout_s=timeout_s)
