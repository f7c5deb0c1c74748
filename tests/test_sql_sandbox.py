"""Free SQL's sandbox against real DuckDB over a real lake (issue 10, items 1 and 7):

- every write path we could think of, run in the sandbox *without* the parser check (so the
  kernel's confinement is what is proven), changes no byte under DATA_DIR; the same through
  `run_sql` is refused or fails with the reason;
- Landlock itself: a confined process cannot create, write, truncate, rename or delete any
  file, even as root, and cannot read outside what it was given;
- analysts read every view with personal columns pseudonymised (stable, so joins and counts
  agree with the organisers' clear view), cannot read the raw personal files, never see the key.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from storage.analytics import SqlError, SqlRefused, run_sql
from storage.catalog import view_sql
from storage.lake import LakeWriter
from storage.landlock import landlock_abi
from storage.sql_sandbox import (
    KEY_FILE,
    PERSONAL,
    SandboxError,
    SandboxResult,
    pseudonym,
    pseudonym_key,
    run_confined,
    run_confined_each,
)
from storage.tables import TABLES

pytestmark = pytest.mark.skipif(landlock_abi() < 1, reason="needs Linux Landlock")

#: Personal values planted in the lake; none may reach an analyst.
MARKERS = {
    "name": "Zelda Markerfield",
    "email": "zelda@marker.example",
    "extra": "phone +49-555-MARKER",
    "participant_name": "Zelda Markerfield",
    "ip": "203.0.113.77",
    "user_agent": "MarkerBrowser/9.9",
}
KEY = b"test-pseudonym-key"


def fill_lake(data_dir: Path) -> Path:
    """A lake with events, two participants (one a no-show), a check-in and an activity row."""
    lake = data_dir / "lake"
    now = datetime.now(UTC)
    events = [
        {"id": f"{i}-0", "stream": "events:in", "source": "gas-1", "type": "GAS",
         "level": "INFO", "payload": "{}", "ts": now, "received_at": now}
        for i in range(5)
    ]  # fmt: skip
    LakeWriter(lake, "events", "p0").write(events, 0)
    people = [
        {"id": "P1", "name": MARKERS["name"], "email": MARKERS["email"], "organization": "Org",
         "category": "speaker", "extra": MARKERS["extra"], "serial": 1, "status": "active",
         "revoked_at": None, "revoked_reason": None, "op": "import", "updated_at": now,
         "entry_id": "1-0"},
        {"id": "P2", "name": "Nora Noshow", "email": "nora@noshow.example", "organization": "Org",
         "category": "guest", "extra": None, "serial": 1, "status": "active",
         "revoked_at": None, "revoked_reason": None, "op": "import", "updated_at": now,
         "entry_id": "2-0"},
    ]  # fmt: skip
    LakeWriter(lake, "participants", "p0").write(people, 0)
    checkins = [
        {"checkin_id": "c1", "nonce": "n1", "gate_id": "main", "direction": "in",
         "status": "accepted", "reason": None, "participant_id": "P1",
         "participant_name": MARKERS["participant_name"], "ts": now, "received_at": now,
         "decided_at": now, "method": "qr_scan", "device_id": "d1", "offline": False,
         "flagged": False, "revision": 1, "token_fp": "fp"},
    ]  # fmt: skip
    LakeWriter(lake, "checkins", "p0").write(checkins, 0)
    logs = [
        {"id": "1-0", "origin": "activity:in", "ts": now, "event": "connect",
         "client_id": "c1", "ip": MARKERS["ip"], "user_agent": MARKERS["user_agent"],
         "room_id": None, "camera_id": None, "metadata": "{}", "received_at": now},
    ]  # fmt: skip
    LakeWriter(lake, "request_logs", "p0").write(logs, 0)
    return lake


def digest(root: Path) -> dict[str, str]:
    """Every file and folder under `root` with its bytes' hash (folders: "dir")."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture
def data(tmp_path: Path) -> Path:
    data_dir = tmp_path / "data"
    fill_lake(data_dir)
    return data_dir


def confined(lake: Path, sql: str, key: bytes | None = None, timeout_s: float = 10) -> object:
    return run_confined(lake, sql, key=key, max_rows=100, timeout_s=timeout_s, memory_limit="256MB")


def confined_each(lake: Path, sqls: list[str], key: bytes | None) -> list:
    """Each statement in its own fresh DuckDB, all in one confined child (one start-up)."""
    return run_confined_each(lake, sqls, key=key, max_rows=100, timeout_s=10, memory_limit="256MB")


def write_attempts(data_dir: Path) -> list[str]:
    lake = (data_dir / "lake").resolve()
    day = f"{lake}/events/date={datetime.now(UTC).date()}"
    return [
        f"COPY (SELECT 1 AS a) TO '{day}/forged.parquet' (FORMAT parquet)",
        f"EXPLAIN ANALYZE COPY (SELECT * FROM events) TO '{day}/forged.parquet' (FORMAT parquet)",
        f"COPY (SELECT 'x,y' AS a) TO '{lake}/checkins/date=2020-01-01/bad.parquet'",
        f"COPY events TO '{data_dir}/stolen.csv'",
        f"COPY (SELECT 1) TO '{day}/p0-0000000000.parquet' (FORMAT parquet)",  # overwrite
        f"ATTACH '{lake}/new.duckdb' AS newdb",
        f"ATTACH '{lake}/x.duckdb' AS x; CREATE TABLE x.t AS SELECT * FROM events",
        f"ATTACH '{data_dir}/venue.duckdb' AS v; CREATE TABLE v.t AS SELECT 1",
        f"EXPORT DATABASE '{lake}/export'",
        f"EXPORT DATABASE '{data_dir}/export' (FORMAT parquet)",
        "INSTALL httpfs",
        "LOAD httpfs; SELECT 1",
        f"SET enable_external_access = true; COPY (SELECT 1) TO '{data_dir}/x.csv'",
        f"RESET allowed_directories; COPY (SELECT 1) TO '{data_dir}/x.csv'",
        f"SET allowed_directories = ['{data_dir}/']; COPY (SELECT 1) TO '{data_dir}/y.csv'",
        f"SET temp_directory = '{lake}/tmp'; SELECT * FROM range(1e7) ORDER BY random()",
        f"PRAGMA enable_profiling = 'json'; PRAGMA profiling_output = '{lake}/prof.json'; "
        "SELECT count(*) FROM events",
        f"SET profiling_output = '{data_dir}/prof.json'",
        f"SELECT * FROM query('COPY (SELECT 1) TO ''{day}/q.parquet''')",
        f"CALL pragma_version(); COPY (SELECT 1) TO '{day}/c.parquet'",
        f"/* x */ EXPLAIN /* y */ ANALYZE -- z\n COPY (SELECT 1) TO '{day}/cm.parquet'",
        f"SELECT 1; COPY (SELECT 1) TO '{day}/multi.parquet' (FORMAT parquet)",
        "CHECKPOINT",
        f"CREATE TABLE t AS SELECT 1; COPY t TO '{lake}/events/t.parquet'",
        f"SELECT * FROM read_text('{lake}/../pseudonym.key')",
        f"ATTACH '{lake}/events' AS e (TYPE parquet)",
        f"CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b'); COPY (SELECT 1) TO '{day}/s.parquet'",
        f"COPY (SELECT 1) TO '{lake}/events' (FORMAT parquet, PARTITION_BY (a), OVERWRITE)",
    ]


def test_no_write_path_changes_a_byte_under_data_dir(data: Path) -> None:
    lake = data / "lake"
    pseudonym_key(data)  # the key file exists before, like in a running deployment
    (data / "venue.duckdb").write_bytes(b"")  # something else to protect, next to the lake
    confined(lake, "SELECT 1")  # the first query makes the empty tables' folders
    before = digest(data)
    attempts = write_attempts(data)
    outcomes: dict[tuple[str, bool], str] = {}
    # Organisers' and analysts' sandboxes alike (their write bans are the same first
    # confinement; the analysts' is tried on the first few to keep the test short). The
    # sandbox alone, no parser check in front: each statement in its own fresh locked-down
    # DuckDB, all of one role in one confined child (`run_confined_each`: one child start-up,
    # ~0.35 s of CPU, instead of one per statement).
    for key, sqls in ((None, attempts), (KEY, attempts[:6])):
        each = confined_each(lake, sqls, key)
        assert len(each) == len(sqls)
        for sql, out in zip(sqls, each, strict=True):
            assert isinstance(out, SandboxResult | SandboxError), out
            outcomes[sql, key is not None] = "ran" if isinstance(out, SandboxResult) else str(out)
        for sql in sqls:
            with pytest.raises((SqlRefused, SqlError)):  # with the check: refused/failed
                run_sql(lake, sql, key=key, timeout_s=5)
    assert digest(data) == before, outcomes
    # The statements DuckDB itself allows are stopped by the kernel, not by a setting:
    for masked in (False, True):
        assert "Permission denied" in outcomes[attempts[0], masked], outcomes[attempts[0], masked]
    # ... and a statement runs in a fresh DuckDB, not in what the one before it left behind:
    # the same child answers a query after a failed one and a successful one alike.
    each = confined_each(
        lake,
        ["SELECT nope", "CREATE TABLE t AS SELECT 1", "SELECT count(*) FROM t", "SELECT 42"],
        None,
    )
    assert isinstance(each[0], SandboxError) and isinstance(each[1], SandboxResult)
    assert isinstance(each[2], SandboxError) and "Table with name t does not exist" in str(each[2])
    assert isinstance(each[3], SandboxResult) and each[3].rows == [(42,)]


def test_landlock_confines_even_root_and_any_code(tmp_path: Path) -> None:
    """Not DuckDB's settings: the confined process itself may not write or read elsewhere."""
    allowed = tmp_path / "lake"
    (allowed / "t").mkdir(parents=True)
    (allowed / "t" / "f.parquet").write_bytes(b"data")
    (tmp_path / "secret").write_text("hunter2")
    script = f"""
import os, socket, sys
from pathlib import Path
from storage.landlock import restrict_to_reading
lake = Path({str(allowed)!r})
restrict_to_reading([lake])
assert (lake / "t" / "f.parquet").read_bytes() == b"data"  # reading: allowed
assert os.listdir(lake / "t") == ["f.parquet"]
def refused(fn, *a):
    try:
        fn(*a)
    except OSError:
        return True
    return False
checks = {{
    "write": refused(lambda: open(lake / "t" / "f.parquet", "r+b")),
    "create": refused(lambda: open(lake / "t" / "new", "wb")),
    "truncate": refused(os.truncate, lake / "t" / "f.parquet", 0),
    "rename": refused(os.rename, lake / "t" / "f.parquet", lake / "t" / "g.parquet"),
    "unlink": refused(os.unlink, lake / "t" / "f.parquet"),
    "mkdir": refused(os.mkdir, lake / "t" / "d"),
    "tmp": refused(lambda: open("/tmp/landlock-probe", "wb")),
    "read-elsewhere": refused(lambda: open({str(tmp_path / "secret")!r}).read()),
    "exec": refused(os.execv, "/bin/true", ["/bin/true"]),
    "tcp": refused(lambda: socket.create_connection(("127.0.0.1", 9), timeout=1)),
}}
print(checks)
sys.exit(0 if all(checks.values()) else 1)
"""
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert (allowed / "t" / "f.parquet").read_bytes() == b"data"


def test_the_child_imports_neither_the_lake_writer_nor_the_models() -> None:
    """Every free query pays for what its child imports: the child's code stays on DuckDB and
    PyArrow (deltalake, pyarrow.compute, pydantic and the record models cost it ~40% more CPU
    per query when it imported `storage.sql_sandbox`; see `storage.sandbox_child`)."""
    root = Path(__file__).resolve().parents[1]
    heavy = ["storage.catalog", "storage.lake", "storage.tables", "deltalake", "pydantic",
             "pyarrow.compute", "storage.sql_sandbox"]  # fmt: skip
    script = (
        "import sys, storage.sandbox_main, storage.sandbox_child\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    r = subprocess.run(
        [sys.executable, "-E", "-s", "-c", script],
        cwd=root, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


# --- personal data ------------------------------------------------------------------------------


def every_view_as_json(lake: Path, key: bytes | None) -> dict[str, list[str]]:
    """Each view's rows as JSON text, from one sandboxed query (one child per role)."""
    parts = [
        f"SELECT '{v}' AS view, to_json(x)::VARCHAR AS row FROM {v} AS x" for v in view_sql(lake)
    ]
    res = confined(lake, " UNION ALL ".join(parts), key)
    out: dict[str, list[str]] = {v: [] for v in view_sql(lake)}
    for view, row in res.rows:
        out[view].append(row)
    return out


def test_every_view_is_pseudonymised_for_analysts(data: Path) -> None:
    lake = data / "lake"
    masked, clear = every_view_as_json(lake, KEY), every_view_as_json(lake, None)
    seen_clear = set()
    for view in view_sql(lake):
        assert len(masked[view]) == len(clear[view]), view
        for marker in MARKERS.values():
            assert marker not in repr(masked[view]), f"{view} shows {marker!r} to analysts"
            if marker in repr(clear[view]):
                seen_clear.add(marker)
    # The test can fail: the organisers' views do carry every planted value.
    assert seen_clear == set(MARKERS.values())
    assert any(
        pseudonym(KEY, MARKERS["email"]) in row
        for row in masked["no_shows"] + masked["participants"]
    )
    # The one place: the tables say which columns are personal.
    assert {
        "participants": {"name", "email", "extra"},
        "checkins": {"participant_name"},
        "request_logs": {"ip", "user_agent"},
    } == PERSONAL
    assert all(TABLES[t].personal == cols for t, cols in PERSONAL.items())


def test_pseudonyms_are_stable_so_joins_and_counts_agree(data: Path) -> None:
    lake = data / "lake"
    join = (
        "SELECT count(*) AS n, count(DISTINCT p.email) AS emails FROM participants p "
        "JOIN checkins c ON c.participant_name = p.name"
    )
    analyst = [
        join,
        "SELECT email, name FROM no_shows",
        "SELECT ip, user_agent FROM request_logs",
        "SELECT organization, category FROM participants ORDER BY id",
    ]  # each in its own DuckDB, in one analysts' child
    res = confined_each(lake, analyst, KEY)
    assert all(isinstance(r, SandboxResult) for r in res), res
    joined, no_shows, ip, unrelated = (r.rows for r in res)  # type: ignore[union-attr]
    assert joined == confined(lake, join, None).rows == [(1, 1)]
    assert no_shows == [(pseudonym(KEY, "nora@noshow.example"), pseudonym(KEY, "Nora Noshow"))]
    assert ip[0] == (pseudonym(KEY, MARKERS["ip"]), pseudonym(KEY, MARKERS["user_agent"]))
    # Unrelated columns are untouched.
    assert unrelated[0] == ("Org", "speaker")


RAW_READS = [
    "SELECT * FROM read_parquet('{lake}/participants/**/*.parquet')",
    "SELECT * FROM '{lake}/checkins/*/*.parquet'",
    "SELECT * FROM parquet_metadata('{lake}/request_logs/*/*.parquet')",
    "SELECT * FROM read_blob('{lake}/participants/*/*.parquet')",
    "SELECT * FROM glob('{lake}/participants/*')",
    "SELECT vf_pseudonym('probe')",
    "SELECT * FROM read_text('{data}/pseudonym.key')",
]


def test_analysts_cannot_read_the_raw_personal_files(data: Path) -> None:
    """Each read in its own fresh DuckDB, all in one analysts' child (one start-up)."""
    lake = (data / "lake").resolve()
    pseudonym_key(data)
    sqls = [sql.format(lake=lake, data=data.resolve()) for sql in RAW_READS]
    each = confined_each(lake, sqls, KEY)
    for sql, err in zip(sqls, each, strict=True):
        assert isinstance(err, SandboxError), (sql, err)
        for marker in MARKERS.values():
            assert marker not in str(err), sql
        assert pseudonym(KEY, "probe") not in str(err), sql
    # The same reads in clear (organisers) do find the files: the refusals above are the
    # analysts' narrower confinement, not paths that do not exist.
    clear = confined_each(lake, sqls[:4], None)
    assert all(isinstance(r, SandboxResult) and r.rows for r in clear), clear


def test_the_key_is_kept_secret(data: Path) -> None:
    key = pseudonym_key(data)
    path = data / KEY_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    assert pseudonym_key(data) == key  # stable across calls (and restarts)
    assert pseudonym_key(data, "from-a-setting") == b"from-a-setting"
    lake = data / "lake"
    catalog = confined(
        lake,
        "SELECT string_agg(sql, ' ') FROM (SELECT sql FROM duckdb_views() UNION ALL "
        "SELECT sql FROM duckdb_tables() UNION ALL SELECT macro_definition FROM "
        "duckdb_functions() WHERE macro_definition IS NOT NULL)",
        key,
    )
    text = str(catalog.rows)
    assert key.hex() not in text and (data / KEY_FILE).read_text().strip() not in text
    assert "masked_participants" in text  # the views read the pseudonymised copies


def test_environment_of_the_child_holds_no_key(data: Path) -> None:
    """The key reaches the child on stdin, not in its argv or environment (readable in /proc)."""
    lake = data / "lake"
    res = confined(lake, "SELECT 1", KEY)
    assert res.rows == [(1,)]
    assert KEY.hex() not in os.environ.get("PSEUDONYM_KEY", "")


def test_time_limit_still_holds_in_the_sandbox(data: Path) -> None:
    t0 = datetime.now(UTC)
    with pytest.raises(SqlError, match=r"longer than 1 s"):
        run_sql(
            data / "lake",
            "SELECT count(*) FROM range(1000000000000) a, range(1000) b",
            key=KEY,
            timeout_s=1,
        )
    assert datetime.now(UTC) - t0 < timedelta(seconds=30)
