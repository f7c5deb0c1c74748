"""The analytics page's queries: ready-made ones with a chart each, and free SQL for analysts.

Free SQL (typed by a person) passes two independent fences:

- `check_sql`, before anything runs: exactly one statement, and only `SELECT` (incl. `FROM t`,
  `WITH`, `DESCRIBE`, `SHOW`, `SUMMARIZE`, `VALUES`, set operations) or `EXPLAIN [ANALYZE]` of
  one such SELECT (whatever follows EXPLAIN is checked as a statement of its own: `EXPLAIN
  ANALYZE COPY ... TO` runs the COPY). `COPY`, `ATTACH`, `EXPORT`, `INSTALL`, `LOAD`, `SET`,
  `PRAGMA`, `CALL`, `CREATE`, `INSERT`, `PIVOT` ... are refused with the reason;
- `storage.sql_sandbox.run_confined`: the query runs in a fresh child process that the kernel
  (Landlock) forbids to write, create or delete any file anywhere, in every thread, and to read
  outside the lake (for analysts: outside the tables without personal columns; they read
  pseudonymised copies of the others). DuckDB is locked down there too (`lock_down`). This
  fence holds whatever the parser check misses.

Ready-made queries (our SQL, not typed) run here on `safe_connect`: the same DuckDB lockdown,
fresh per query. Both have a row limit (`MAX_ROWS`, "truncated" is known) and a time limit
(`TIMEOUT_S`, DuckDB's `interrupt()`). `ADMISSION` lets each browser session run one free
query at a time and `SQL_MAX_CONCURRENT` in all; more is refused as busy, never queued.

No UI imports here: the page calls these functions through `run.io_bound`.
"""

from __future__ import annotations

import io
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import duckdb

from core import csv_safe
from storage.catalog import create_views, memory_connection
from storage.sql_sandbox import (
    SandboxError,
    SandboxUnavailable,
    lock_down,
    run_confined,
    time_limit,
)

MAX_ROWS = 5_000
TIMEOUT_S = 10.0
MEMORY_LIMIT = "512MB"
MAX_SQL_CHARS = 20_000
#: What the analytics page's editor holds when it opens.
EXAMPLE_SQL = (
    "SELECT source, level, count(*) AS events\n"
    "FROM events\n"
    "WHERE ts >= now() - INTERVAL 1 HOUR\n"
    "GROUP BY ALL ORDER BY events DESC\n"
    "LIMIT 50"
)
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
        """The result as CSV text (header + rows; None as empty, times ISO 8601; a text cell
        that a spreadsheet would run as a formula is neutralised by `core.csv_safe`)."""
        buf = io.StringIO()
        w = csv_safe.writer(buf)
        w.writerow(self.columns)
        for r in self.rows:
            w.writerow(
                ["" if v is None else v.isoformat() if hasattr(v, "isoformat") else v for v in r]
            )
        return buf.getvalue()


def safe_connect(lake_dir: Path, memory_limit: str = MEMORY_LIMIT) -> duckdb.DuckDBPyConnection:
    """An in-memory connection with the catalog's views that can read the lake folder only
    (the ready-made queries run here, in the dashboard: their SQL is ours, not typed)."""
    lake = lake_dir.resolve()
    con = memory_connection(threads=1)
    try:
        create_views(con, lake)  # before locking: `create_views` makes the empty tables
        lock_down(con, [lake], memory_limit)
    except BaseException:
        con.close()
        raise
    return con


_EXPLAIN = re.compile(r"EXPLAIN\b", re.IGNORECASE)
_ANALYZE = re.compile(r"ANALY[SZ]E\b", re.IGNORECASE)
_COMMENTS = re.compile(r"\s+|--[^\n]*(?:\n|$)|/\*.*?\*/", re.DOTALL)


def _skip_space(text: str) -> str:
    """`text` without leading whitespace and comments."""
    while m := _COMMENTS.match(text):
        if not m.group():
            break
        text = text[m.end() :]
    return text


def check_sql(sql: str) -> str:
    """The statement if it is one SELECT, or EXPLAIN [ANALYZE] of one SELECT; else SqlRefused
    with the reason. Whatever follows EXPLAIN is checked like a statement of its own (an
    `EXPLAIN ANALYZE COPY ... TO` runs the COPY). The sandbox holds even if this check misses
    something (`storage.sql_sandbox`); the check gives the analyst a clear reason first."""
    text = (sql or "").strip()
    if not text:
        raise SqlRefused("the query is empty")
    if len(text) > MAX_SQL_CHARS:
        raise SqlRefused(f"the query is longer than {MAX_SQL_CHARS:,} characters")
    kind = _one_statement(text)
    if kind == duckdb.StatementType.EXPLAIN:
        rest = _skip_space(text)
        m = _EXPLAIN.match(rest)
        if m is None:
            raise SqlRefused("EXPLAIN could not be read; write `EXPLAIN [ANALYZE] SELECT ...`")
        rest = _skip_space(rest[m.end() :])
        if m := _ANALYZE.match(rest):
            rest = _skip_space(rest[m.end() :])
        if rest.startswith("("):
            raise SqlRefused("EXPLAIN options are not supported; write `EXPLAIN [ANALYZE] SELECT`")
        if _one_statement(rest) != duckdb.StatementType.SELECT:
            raise SqlRefused("EXPLAIN [ANALYZE] is allowed only of a SELECT")
    return text


def _one_statement(text: str) -> duckdb.StatementType:
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
    return kind


def run_sql(
    lake_dir: Path,
    sql: str,
    *,
    key: bytes | None,
    max_rows: int = MAX_ROWS,
    timeout_s: float = TIMEOUT_S,
) -> SqlResult:
    """Blocking (call via io_bound): an analyst's query, checked, then run in a fresh confined
    child process (`storage.sql_sandbox`). `key`: pseudonymise personal columns with it
    (analysts); None shows them in clear (only for roles that may see participants)."""
    text = check_sql(sql)
    t0 = time.monotonic()
    try:
        res = run_confined(
            lake_dir, text, key=key, max_rows=max_rows, timeout_s=timeout_s,
            memory_limit=MEMORY_LIMIT,
        )  # fmt: skip
    except SandboxUnavailable as exc:
        raise SqlRefused(str(exc)) from exc
    except SandboxError as exc:
        if exc.timeout:
            raise SqlError(f"the query took longer than {timeout_s:g} s and was stopped") from exc
        raise SqlError(str(exc)) from exc
    return SqlResult(res.columns, res.rows, res.truncated, time.monotonic() - t0)


def run_local(
    lake_dir: Path,
    sql: str,
    params: dict[str, Any] | list[Any] | None = None,
    max_rows: int = MAX_ROWS,
    timeout_s: float = TIMEOUT_S,
) -> SqlResult:
    """Blocking: one of OUR queries (the ready-made ones) on a fresh safe connection here."""
    t0 = time.monotonic()
    con = safe_connect(lake_dir)
    try:
        with time_limit(con, timeout_s) as timed_out:
            cur = con.execute(sql, params) if params is not None else con.execute(sql)
            columns = [d[0] for d in cur.description] if cur.description else []
            rows = cur.fetchmany(max_rows + 1) if columns else []
    except duckdb.Error as exc:
        if timed_out.is_set():
            raise SqlError(f"the query took longer than {timeout_s:g} s and was stopped") from exc
        raise SqlError(f"{type(exc).__name__}: {exc}") from exc
    finally:
        con.close()
    return SqlResult(columns, rows[:max_rows], len(rows) > max_rows, time.monotonic() - t0)


# --- one query in flight per session, a few in all --------------------------------------------


class SqlBusy(RuntimeError):
    """Not run: this session already has a query running, or all slots are taken."""


class SqlAdmission:
    """Free-SQL admission: at most one query in flight per holder (a browser session) and
    `limit` in all, so one analyst tab cannot occupy every worker thread with 10 s queries.
    Refuses at once (no queue): the caller answers "busy" and the user retries."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[str] = set()

    def enter(self, holder: str, limit: int) -> None:
        with self._lock:
            if holder in self._running:
                raise SqlBusy(
                    "busy: a query of yours is still running; wait for it to finish "
                    f"(at most {TIMEOUT_S:g} s)"
                )
            if len(self._running) >= limit:
                raise SqlBusy(
                    f"busy: {limit} queries are running (the most at once); try again in a "
                    "few seconds"
                )
            self._running.add(holder)

    def leave(self, holder: str) -> None:
        with self._lock:
            self._running.discard(holder)

    @contextmanager
    def slot(self, holder: str, limit: int) -> Iterator[None]:
        self.enter(holder, limit)
        try:
            yield
        finally:
            self.leave(holder)


#: The dashboard's one admission (page and API share it).
ADMISSION = SqlAdmission()


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
    return run_local(lake_dir, q.sql, params, timeout_s=timeout_s)
