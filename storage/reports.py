"""The attendance report: every number is one SQL query over the catalog's views.

The dashboard's `/report` page, its CSV export (`/api/reports/attendance.csv`) and the
printable HTML (`/reports/attendance.html`) all run exactly the queries below, so an analyst
gets the same numbers with `uv run run.py query "<the SQL>"` (or `duckdb -readonly
data/venue.duckdb`). The views they read are defined in `storage.catalog`.

Sections: `SECTIONS` below, each with its key, title and SQL; `docs/gates.md` lists every
query for analysts (`tests/test_report.py` checks that page holds each one verbatim).

Freshness: `checkins` and `participants` are in the lake within seconds of the decision;
`attendance_per_minute` (arrival curve, peak minutes) holds a minute once it has closed,
`CHECKIN_ALLOWED_LATENESS_S` (default 120 s) after its end — so for the last two minutes of a
live event the curve lags behind `gate_totals`. Times are UTC `TIMESTAMPTZ`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import duckdb

from storage.catalog import query


@dataclass(frozen=True, slots=True)
class SectionDef:
    key: str
    title: str
    sql: str


def _sql(text: str) -> str:
    return " ".join(text.split())


SUMMARY_SQL = _sql("""
SELECT
  (SELECT count(*) FROM participants WHERE status = 'active') AS registered,
  (SELECT count(DISTINCT participant_id) FROM checkins
    WHERE status = 'accepted' AND direction = 'in') AS checked_in,
  (SELECT count(*) FROM no_shows) AS no_shows,
  (SELECT count(*) FROM participants WHERE status = 'revoked') AS revoked,
  (SELECT count(*) FROM checkins) AS scans,
  (SELECT count(*) FROM checkins WHERE status = 'accepted' AND direction = 'in') AS entries,
  (SELECT count(*) FROM checkins WHERE status = 'accepted' AND direction = 'out') AS exits,
  (SELECT count(*) FROM checkins WHERE status <> 'accepted') AS refused,
  (SELECT count(*) FROM checkins WHERE flagged) AS flagged
""")

GATE_TOTALS_SQL = "SELECT * FROM gate_totals ORDER BY gate_id"

ARRIVAL_CURVE_SQL = _sql("""
WITH per_minute AS (
  SELECT minute, sum(count)::BIGINT AS entries FROM attendance_per_minute
  WHERE direction = 'in' AND status = 'accepted' GROUP BY minute
), span AS (
  SELECT unnest(generate_series(min(minute), max(minute), INTERVAL 1 MINUTE)) AS minute
  FROM per_minute
)
SELECT span.minute, coalesce(per_minute.entries, 0)::BIGINT AS entries
FROM span LEFT JOIN per_minute USING (minute) ORDER BY span.minute
""")

PEAK_MINUTES_SQL = _sql("""
SELECT minute, sum(count)::BIGINT AS entries FROM attendance_per_minute
WHERE direction = 'in' AND status = 'accepted' GROUP BY minute HAVING sum(count) > 0
ORDER BY entries DESC, minute LIMIT 10
""")

REFUSALS_SQL = _sql("""
SELECT status, count(*)::BIGINT AS scans FROM checkins WHERE status <> 'accepted'
GROUP BY status ORDER BY scans DESC, status
""")

FLAGGED_SQL = _sql("""
SELECT ts, gate_id, direction, status, participant_id, participant_name, offline,
       revision, reason, nonce
FROM checkins WHERE flagged ORDER BY ts, nonce
""")

NO_SHOWS_SQL = "SELECT id, name, email, organization, category FROM no_shows ORDER BY id"

#: The report's sections, in the order the CSV and the printable page show them.
SECTIONS: dict[str, SectionDef] = {
    s.key: s
    for s in (
        SectionDef("summary", "Summary", SUMMARY_SQL),
        SectionDef("gate_totals", "Per-gate totals", GATE_TOTALS_SQL),
        SectionDef(
            "arrival_curve", "Arrival curve: accepted entries per minute", ARRIVAL_CURVE_SQL
        ),
        SectionDef("peak_minutes", "Peak minutes (top 10)", PEAK_MINUTES_SQL),
        SectionDef("refusals", "Refused scans by status", REFUSALS_SQL),
        SectionDef("flagged", "Flagged scans", FLAGGED_SQL),
        SectionDef("no_shows", "No-shows", NO_SHOWS_SQL),
    )
}


@dataclass(frozen=True, slots=True)
class Section:
    key: str
    title: str
    sql: str
    columns: list[str]
    rows: list[tuple]

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, r, strict=True)) for r in self.rows]


@dataclass
class Report:
    sections: dict[str, Section] = field(default_factory=dict)
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def summary(self) -> dict[str, int]:
        s = self.sections["summary"]
        return {c: int(v or 0) for c, v in zip(s.columns, s.rows[0], strict=True)}

    def __getitem__(self, key: str) -> Section:
        return self.sections[key]


def run_section(con: duckdb.DuckDBPyConnection, key: str) -> Section:
    d = SECTIONS[key]
    cols, rows = query(con, d.sql)
    return Section(d.key, d.title, d.sql, cols, rows)


def attendance_report(con: duckdb.DuckDBPyConnection, keys: list[str] | None = None) -> Report:
    """Run the report's queries (all sections, or those named) on a catalog connection.

    The connection should have `SET TimeZone = 'UTC'` (the UI's do) so times come back in UTC.
    Each query scans the lake once; while flows write, two sections may see files a few
    hundred milliseconds apart.
    """
    rep = Report()
    for key in keys or list(SECTIONS):
        rep.sections[key] = run_section(con, key)
    return rep
