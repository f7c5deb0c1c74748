"""The DuckDB catalog: views over the lake's Delta tables, for analysts, `run.py query`, the UI.

Every view reads its table through `delta_scan(...)` (DuckDB's delta extension, loaded from the
PyPI package `duckdb-extension-delta` pinned in uv.lock — never downloaded), so a query reads
one committed version of each table: never a missing file, a partial commit, or a count that
goes backwards while a flow commits or maintenance compacts and vacuums. The bookkeeping
columns of the exactly-once protocol (`_writer`, `_flush`) are hidden.

The `.duckdb` file holds only views (no data), so flows never open it. It is (re)created by
`refresh_catalog` when nothing reads it (at `run.py up`), and is otherwise opened read-only,
which any number of processes may do at once; it is written by the pinned DuckDB (1.5.5), so
the DuckDB 1.x CLI opens it. The dashboard does not open the file at all: it builds the same
views in an in-memory connection (`connect_memory`). `versions` pins each table to a version
(time travel: `run.py query --as-of`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import duckdb
import duckdb_extension_delta
import duckdb_extension_httpfs

from storage.lake import INTERNAL_COLUMNS, Lake, as_lake, ensure_lake
from storage.tables import TABLES

Versions = Mapping[str, int]
log = logging.getLogger(__name__)


@cache
def extension_path(package: ModuleType) -> Path:
    """The extension file a `duckdb-extension-<name>` package ships for our DuckDB."""
    root = Path(package.__file__ or "").parent
    found = sorted(root.rglob(f"v{duckdb.__version__}/*.duckdb_extension"))
    if not found:
        raise RuntimeError(
            f"{package.__name__} holds no extension for DuckDB {duckdb.__version__} under "
            f"{root}: keep duckdb pinned to the version it is built for (uv sync --frozen)"
        )
    return found[0]


def delta_extension_path() -> Path:
    return extension_path(duckdb_extension_delta)


#: Connection settings for every DuckDB connection that loads the delta extension. Checking
#: the extension's signature hashes its 82 MB at every LOAD: 1.9-2.6 s per connection on this
#: machine, 6 ms without. The file's integrity is already checked where it comes from: uv
#: installs the package only if it matches its hash in uv.lock. LOAD itself stays refused to
#: analysts (the free-SQL sandbox refuses the statement and disables external access).
#: Extensions are never downloaded (no network at run time): an extension we do not ship fails.
DUCKDB_CONFIG = {"allow_unsigned_extensions": True, "autoinstall_known_extensions": False}


def memory_connection(**config: Any) -> duckdb.DuckDBPyConnection:
    """A new in-memory DuckDB connection that can load the delta extension quickly."""
    return duckdb.connect(config={**DUCKDB_CONFIG, **config})


def load_delta(con: duckdb.DuckDBPyConnection, lake: Lake | None = None) -> None:
    """Load the delta extension from its package file; for a lake on S3 also httpfs (from its
    package) and a temporary secret with the lake's S3 settings."""
    con.execute(f"LOAD '{_quote(str(delta_extension_path()))}'")
    if lake is not None and not lake.local:
        con.execute(f"LOAD '{_quote(str(extension_path(duckdb_extension_httpfs)))}'")
        con.execute(s3_secret_sql(lake))


def s3_secret_sql(lake: Lake) -> str:
    """A temporary DuckDB secret with the lake's S3 settings (never stored in a file)."""
    o = lake.storage_options
    endpoint = o.get("AWS_ENDPOINT_URL", "")
    parts = [
        "TYPE S3",
        f"KEY_ID '{_quote(o.get('AWS_ACCESS_KEY_ID', ''))}'",
        f"SECRET '{_quote(o.get('AWS_SECRET_ACCESS_KEY', ''))}'",
        f"REGION '{_quote(o.get('AWS_REGION', 'us-east-1'))}'",
    ]
    if endpoint:
        host = endpoint.split("://", 1)[-1].rstrip("/")
        parts += [
            f"ENDPOINT '{_quote(host)}'",
            "URL_STYLE 'path'",
            f"USE_SSL {'false' if endpoint.startswith('http://') else 'true'}",
        ]
    return f"CREATE OR REPLACE TEMPORARY SECRET venueflow_lake ({', '.join(parts)})"


def _quote(text: str) -> str:
    return text.replace("'", "''")


def scan_sql(lake: Lake | Path, table: str, version: int | None = None) -> str:
    """The FROM item that reads one lake table at its current (or given) version, without
    the exactly-once bookkeeping columns (every view is built on these)."""
    lake = as_lake(lake)
    at = f", version => {int(version)}" if version is not None else ""
    uri = _quote(lake.table_uri(table))
    return f"(SELECT * EXCLUDE ({', '.join(INTERNAL_COLUMNS)}) FROM delta_scan('{uri}'{at}))"


def view_sql(
    lake: Lake | Path,
    versions: Versions | None = None,
    source: Callable[[str], str] | None = None,
) -> dict[str, str]:
    """Name → SELECT for every view of the catalog.

    Each table is read at `versions[t]` if given (time travel). `source(table)` gives the FROM
    item each view reads a lake table through (default: `scan_sql`). The analysts' sandbox
    passes one that reads a pseudonymised copy of the tables holding personal columns, so
    every view built on them (`participants`, `no_shows`, `checkins`, ...) inherits the
    masking: nothing per view to keep in step.
    """

    def scan(t: str) -> str:
        if source is not None:
            return source(t)
        return scan_sql(lake, t, versions.get(t) if versions else None)

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


def create_views(
    con: duckdb.DuckDBPyConnection, lake: Lake | Path, versions: Versions | None = None
) -> None:
    lake = as_lake(lake)
    ensure_lake(lake)
    load_delta(con, lake)
    for name, sql in view_sql(lake, versions).items():
        con.execute(f"CREATE OR REPLACE VIEW {name} AS {sql}")


def install_for_analysts() -> None:
    """Install the packaged delta extension into this user's DuckDB extension directory
    (`INSTALL '<file>'`, offline), so a plain `duckdb -readonly venue.duckdb` of the pinned
    version autoloads it instead of trying to download it. Once; a failure only warns."""
    con = duckdb.connect()
    try:
        rows = con.execute(
            "SELECT installed FROM duckdb_extensions() WHERE extension_name = 'delta'"
        ).fetchall()
        if not (rows and rows[0][0]):
            con.execute(f"INSTALL '{_quote(str(delta_extension_path()))}'")
    except duckdb.Error as exc:
        log.warning("delta extension not installed for analysts' DuckDB: %s", exc)
    finally:
        con.close()


def refresh_catalog(catalog_path: Path, lake: Lake | Path) -> None:
    """(Re)write the catalog file's views and make the delta extension available to an
    analyst's DuckDB. Call when no process holds the file.

    A file another DuckDB version wrote (2.0 before the pin) is replaced: it holds only views."""
    install_for_analysts()
    catalog_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(str(catalog_path), config=DUCKDB_CONFIG)
    except duckdb.SerializationException:
        catalog_path.unlink()
        Path(f"{catalog_path}.wal").unlink(missing_ok=True)
        con = duckdb.connect(str(catalog_path), config=DUCKDB_CONFIG)
    try:
        create_views(con, lake)
        if not as_lake(lake).local:  # the secret was temporary; the views stay
            con.execute("DROP SECRET IF EXISTS venueflow_lake")
    finally:
        con.close()


def connect_catalog(catalog_path: Path, lake: Lake | Path) -> duckdb.DuckDBPyConnection:
    """Open the catalog read-only (delta extension loaded), creating it first if needed."""
    if not catalog_path.exists():
        refresh_catalog(catalog_path, lake)
    con = duckdb.connect(str(catalog_path), read_only=True, config=DUCKDB_CONFIG)
    load_delta(con, as_lake(lake))
    return con


def connect_memory(
    lake: Lake | Path, threads: int = 1, versions: Versions | None = None
) -> duckdb.DuckDBPyConnection:
    """An in-memory connection with the catalog's views (for the dashboard's worker threads)."""
    con = memory_connection(threads=threads)
    create_views(con, lake, versions)
    return con


#: How often a read is retried when a Delta log file vanished under its scan.
LOG_RACE_RETRIES = 3


def query(con: duckdb.DuckDBPyConnection, sql: str, params: Any = None) -> tuple[list[str], list]:
    """Run a query over the lake; return column names and rows.

    Every query of the dashboard and the CLI comes here. A scan lists the table's `_delta_log`
    and then reads those files; lake maintenance may delete log files older than the log
    retention between the two (seen in tests/test_lake_readers.py with maintenance every 0.1 s
    and a 1 s retention: DuckDB's "No files found" / "Cannot open file" on a `_delta_log`
    checkpoint or JSON under parallel load). The next scan lists the log anew and sees the
    checkpoint that replaced them, so such a read is retried (a read changes nothing).
    """
    for attempt in range(LOG_RACE_RETRIES + 1):
        try:
            cur = con.execute(sql, params) if params is not None else con.execute(sql)
            cols = [d[0] for d in cur.description] if cur.description else []
            return cols, cur.fetchall()
        except duckdb.Error as exc:
            if attempt == LOG_RACE_RETRIES or "_delta_log" not in str(exc):
                raise
            log.warning("lake read retried: a Delta log file vanished under it: %s", exc)
    raise AssertionError("unreachable")
