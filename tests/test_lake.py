"""The lake on Delta tables: exactly-once resume by application transaction, fresh starts,
maintenance, time travel, migration of the old layout, and the catalog in the DuckDB CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from connectors.lake_sink import CHUNK_ROWS, Columns, LakeSink, LakeSinkState
from core.lake_location import Lake
from core.settings import Settings
from ops.processes import PROJECT_DIR
from run import prepare_lake
from storage.catalog import delta_extension_path, refresh_catalog
from storage.lake import (
    LakeWriter,
    OldLayoutError,
    as_lake,
    ensure_lake,
    old_layout_tables,
    open_table,
)
from storage.lake_maintenance import ROW_GROUP_ROWS, history, maintain, table_status
from storage.tables import TABLES
from tests.lake_helpers import event_rows, scalar

T = datetime(2026, 11, 21, 12, tzinfo=UTC)


def rows(n: int, start: int = 0, day: int = 0) -> list[dict]:
    ts = T + timedelta(days=day)
    return [
        {
            "id": f"{i}-0",
            "stream": "s",
            "source": "a",
            "type": "T",
            "level": "INFO",
            "payload": "{}",
            "ts": ts,
            "received_at": ts,
        }
        for i in range(start, start + n)
    ]


def run_py(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATA_DIR": str(data_dir), "PYTHONPATH": str(PROJECT_DIR)}
    return subprocess.run(
        [sys.executable, "run.py", *args],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_each_flush_is_one_commit_with_its_application_transaction(data_dir) -> None:
    w = LakeWriter(data_dir / "lake", "events", "p0")
    assert w.committed() is None
    w.write(rows(3), 0)
    w.write(rows(2, 3) + rows(2, 5, day=1), 1)  # one flush, two date partitions
    assert w.committed() == 1
    assert event_rows(data_dir) == 7
    parts = scalar(data_dir, "SELECT count(DISTINCT date) FROM events")
    assert parts == 2
    # The bookkeeping columns are hidden from readers.
    assert "_writer" not in str(scalar(data_dir, "SELECT list(column_name) FROM (DESCRIBE events)"))
    # Personal columns are kept out of file statistics.
    cfg = open_table(data_dir / "lake", "checkins").metadata().configuration
    assert "participant_name" not in cfg["delta.dataSkippingStatsColumns"].split(",")
    assert "checkin_id" in cfg["delta.dataSkippingStatsColumns"].split(",")


def test_resume_replaces_flushes_after_the_snapshot_in_one_commit(data_dir) -> None:
    """A replay that cuts its batches differently replaces the post-snapshot flushes exactly."""
    sink = LakeSink(data_dir / "lake", "events", flush_rows=10, flush_age=1e9)
    part = sink.build_part("s", "p0", None)
    part.write_batch([rows(10)])  # flush 0
    state = part.snapshot()  # the snapshot a crash resumes from: next flush is 1
    assert state.next_seq == 1
    part.write_batch([rows(10, 10)])  # flush 1
    part.write_batch([rows(10, 20)])  # flush 2 ... then kill -9
    assert event_rows(data_dir) == 30
    resumed = sink.build_part("s", "p0", state)
    before = DeltaTable(str(data_dir / "lake" / "events")).version()
    # The replay delivers the same 20 rows in other batches: 15 (one flush), then 5.
    resumed.write_batch([rows(7, 10), rows(8, 17)])
    assert event_rows(data_dir) == 25  # flushes 1 and 2 replaced by one flush of 15, atomically
    assert DeltaTable(str(data_dir / "lake" / "events")).version() == before + 1
    resumed.write_batch([rows(5, 25)])
    resumed.close()
    assert event_rows(data_dir) == 30
    assert scalar(data_dir, "SELECT count(DISTINCT id) FROM events") == 30
    # A second resume from the same snapshot (crashed again) gives the same table.
    again = sink.build_part("s", "p0", state)
    again.write_batch([rows(20, 10)])
    assert event_rows(data_dir) == 30
    assert scalar(data_dir, "SELECT count(DISTINCT id) FROM events") == 30


def columns(n: int, start: int = 0) -> Columns:
    r = rows(n, start)
    return Columns({k: [x[k] for x in r] for k in r[0]})


def test_columns_and_rows_mix_and_survive_a_pickled_snapshot(data_dir) -> None:
    """The events flow sends `Columns` per batch; consecutive ones are buffered as one, the
    item's own lists are never extended, and a snapshot (pickled by Bytewax) holding them
    resumes exactly — as does a snapshot of the old row-dict format."""
    import pickle

    sink = LakeSink(data_dir / "lake", "events", flush_rows=100, flush_age=1e9)
    part = sink.build_part("s", "p0", None)
    first = columns(3)
    part.write_batch([first, columns(2, 3), rows(1, 5), columns(4, 6), Columns()])
    assert len(first["id"]) == 3  # not extended by the sink
    state = pickle.loads(pickle.dumps(part.snapshot()))
    assert [type(p).__name__ for p in state.pending] == ["Columns", "dict", "Columns"]
    resumed = sink.build_part("s", "p0", state)
    resumed.write_batch([columns(90, 10)])  # 100 rows buffered: one flush
    assert event_rows(data_dir) == 100
    assert scalar(data_dir, "SELECT count(DISTINCT id) FROM events") == 100
    old_state = LakeSinkState(1, rows(5, 100))  # a snapshot taken by the row-dict version
    again = sink.build_part("s", "p0", old_state)
    again.write_batch([columns(95, 105)])
    assert event_rows(data_dir) == 200
    assert scalar(data_dir, "SELECT count(DISTINCT id) FROM events") == 200
    # Every CHUNK_ROWS buffered rows become one Arrow table, which a snapshot carries too.
    big = LakeSink(data_dir / "lake", "events", flush_rows=10**6, flush_age=1e9, prefix="b")
    part = big.build_part("s", "bp0", None)
    part.write_batch([columns(CHUNK_ROWS - 1, 1000), columns(2, 1000 + CHUNK_ROWS - 1)])
    state = pickle.loads(pickle.dumps(part.snapshot()))
    assert [type(p).__name__ for p in state.pending] == ["Table"]
    big.build_part("s", "bp0", state).close()
    assert event_rows(data_dir) == 200 + CHUNK_ROWS + 1


def test_fresh_start_replaces_an_uncommitted_run_but_refuses_to_guess(data_dir) -> None:
    sink = LakeSink(data_dir / "lake", "events", flush_rows=1)
    part = sink.build_part("s", "p0", None)  # first run: marks the writer as uncommitted
    part.write_batch([rows(5)])
    assert event_rows(data_dir) == 5  # committed, then the run dies before any snapshot
    again = sink.build_part("s", "p0", None)  # restart without state: the replay rewrites them
    again.write_batch([rows(5)])
    assert event_rows(data_dir) == 5

    other = LakeWriter(data_dir / "lake", "events", "p1")
    other.write(rows(3, 100), 0)  # rows of a run that did commit, but its recovery is gone
    with pytest.raises(RuntimeError, match="no recovery state"):
        sink.build_part("s", "p1", None)
    assert event_rows(data_dir) == 8  # nothing deleted
    sink.build_part("s", "p1", LakeSinkState(1))  # with its state it resumes normally
    assert event_rows(data_dir) == 8


def test_a_first_run_is_known_on_every_machine_of_a_cluster(data_dir, tmp_path) -> None:
    """The first-run mark is in the table's log, not in one machine's DATA_DIR: a cluster
    that dies before its first snapshot may bring its writer back on another machine."""
    lake_dir = data_dir / "lake"
    machine_a = LakeSink(
        Lake(str(lake_dir), tmp_path / "a" / "lake_writers"), "events", flush_rows=1
    )
    machine_b = LakeSink(
        Lake(str(lake_dir), tmp_path / "b" / "lake_writers"), "events", flush_rows=1
    )
    machine_a.build_part("s", "p0", None).write_batch([rows(5)])  # dies before a snapshot
    assert LakeWriter(Lake(str(lake_dir), tmp_path / "c"), "events", "p0").first_run()
    machine_b.build_part("s", "p0", None).write_batch([rows(5)])  # the replay, elsewhere
    assert event_rows(data_dir) == 5
    # Once the first run has snapshotted, rows without recovery state are refused anywhere.
    LakeWriter(lake_dir, "events", "p0").clear_first_run()
    for machine in (machine_a, machine_b):
        with pytest.raises(RuntimeError, match="no recovery state"):
            machine.build_part("s", "p0", None)
    assert event_rows(data_dir) == 5
    assert not any((tmp_path / m).exists() for m in "ab")  # nothing kept per machine

    # A marker file of the earlier design still counts, and goes with the first run's end.
    w = LakeWriter(lake_dir, "events", "p1")
    w.write(rows(3, 100), 0)
    w.legacy_marker.parent.mkdir(parents=True, exist_ok=True)
    w.legacy_marker.touch()
    part = LakeSink(lake_dir, "events", flush_rows=1).build_part("s", "p1", None)
    part.write_batch([rows(3, 100)])
    assert event_rows(data_dir) == 8
    w.clear_first_run()
    assert not w.legacy_marker.exists() and not w.first_run()


def test_maintenance_compacts_into_large_row_groups_and_keeps_every_row(data_dir) -> None:
    w = LakeWriter(data_dir / "lake", "events", "p0")
    for n in range(12):
        w.write(rows(10, n * 10), n)
    lake = as_lake(data_dir / "lake")
    before = table_status(lake, "events")
    assert (before.rows, before.files) == (120, 12)
    (r,) = maintain(lake, retention_h=0, tables=["events"])
    assert r.files_removed == 12 and r.files_added == 1 and r.vacuumed == 12
    after = table_status(lake, "events")
    assert (after.rows, after.files) == (120, 1)
    assert event_rows(data_dir) == 120
    assert w.committed() == 11  # the exactly-once marker survives compaction and vacuum
    (f,) = (data_dir / "lake" / "events").glob("date=*/*.parquet")
    assert pq.ParquetFile(f).metadata.row_group(0).num_rows <= ROW_GROUP_ROWS
    assert any((data_dir / "lake" / "events" / "_delta_log").glob("*.checkpoint.parquet"))
    ops = [h["operation"] for h in history(lake, "events")]
    assert "OPTIMIZE" in ops and ops.count("WRITE") == 12


def test_cli_status_history_maintain_and_time_travel(data_dir) -> None:
    w = LakeWriter(data_dir / "lake", "events", "p0")
    w.write(rows(10), 0)
    time.sleep(1.1)
    mid = datetime.now(UTC)
    time.sleep(1.1)
    w.write(rows(5, 10), 1)
    out = run_py(data_dir, "query", "SELECT count(*) AS n FROM events", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [{"n": 15}]
    past = run_py(data_dir, "query", "SELECT count(*) AS n FROM events", "--json", "--as-of",
                  mid.isoformat())  # fmt: skip
    assert past.returncode == 0, past.stderr
    assert json.loads(past.stdout) == [{"n": 10}]
    bad = run_py(data_dir, "query", "SELECT 1", "--as-of", "yesterday")
    assert bad.returncode == 2 and "ISO 8601" in bad.stderr
    m = run_py(data_dir, "lake", "maintain", "events", "--retention-hours", "1")
    assert m.returncode == 0, m.stderr
    assert re.search(r"^events: version \d+, compacted 2 files into 1", m.stdout, re.M), m.stdout
    st = run_py(data_dir, "lake", "status", "--json")
    events = next(t for t in json.loads(st.stdout) if t["table"] == "events")
    assert (events["rows"], events["files"]) == (15, 1)
    h = run_py(data_dir, "lake", "history", "events", "--json")
    versions = [v["version"] for v in json.loads(h.stdout)]
    assert versions == list(range(events["version"], -1, -1))
    assert json.loads(h.stdout)[-1]["operation"] == "CREATE TABLE"
    assert run_py(data_dir, "lake", "history", "nope").returncode == 2
    # Time travel still reads the version before the compaction (vacuum retention 1 h).
    past = run_py(data_dir, "query", "SELECT count(*) AS n FROM events", "--json", "--as-of",
                  mid.isoformat())  # fmt: skip
    assert json.loads(past.stdout) == [{"n": 10}]


def test_the_catalog_file_opens_in_the_duckdb_cli(data_dir) -> None:
    """An analyst's DuckDB CLI (the `duckdb-cli` package at the pinned version) opens
    venue.duckdb read-only and reads current data through its views."""
    cli = Path(sys.executable).parent / "duckdb"
    w = LakeWriter(data_dir / "lake", "events", "p0")
    w.write(rows(4), 0)
    catalog = data_dir / "venue.duckdb"
    refresh_catalog(catalog, data_dir / "lake")
    w.write(rows(3, 4), 1)  # written after the catalog: the view shows it
    ext = delta_extension_path()
    out = subprocess.run(
        [str(cli), "-readonly", "-csv", str(catalog), "-c",
         f"LOAD '{ext}'; SELECT count(*) AS n FROM events;"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["n", "7"]


def write_old_layout(lake_dir: Path) -> int:
    """Files as the old writer left them: numbered per part, a merged one, a half-done merge."""
    schema = TABLES["events"].schema
    d = lake_dir / "events" / "date=2026-11-21"
    d.mkdir(parents=True)
    (lake_dir / "events" / "date=1970-01-01").mkdir()
    pq.write_table(schema.empty_table(), lake_dir / "events" / "date=1970-01-01" / "empty.parquet")
    pq.write_table(pa.Table.from_pylist(rows(10), schema), d / "p0-0000000000-0000000003.parquet")
    pq.write_table(pa.Table.from_pylist(rows(5, 10), schema), d / "p0-0000000004.parquet")
    pq.write_table(pa.Table.from_pylist(rows(5, 100), schema), d / "checkins.p0-0000000000.parquet")
    # An interrupted compaction of 5 and 6: intent written, source 5 already deleted.
    pq.write_table(
        pa.Table.from_pylist(rows(6, 15), schema),
        d / ".p0-0000000005-0000000006.parquet.compacting",
    )
    pq.write_table(pa.Table.from_pylist(rows(3, 18), schema), d / "p0-0000000006.parquet")
    (lake_dir / "events" / ".checkins.p0.uncommitted").touch()  # its first run: no snapshot yet
    return 10 + 5 + 5 + 6


def test_old_layout_is_refused_then_imported_once_with_equal_counts(data_dir) -> None:
    lake_dir = data_dir / "lake"
    n = write_old_layout(lake_dir)
    with pytest.raises(OldLayoutError, match=r"run\.py lake migrate"):
        ensure_lake(lake_dir)
    q = run_py(data_dir, "query", "SELECT 1")
    assert q.returncode == 2 and "run.py lake migrate" in q.stderr
    out = run_py(data_dir, "lake", "migrate")
    assert out.returncode == 0, out.stderr
    assert f"events: {n} rows in the old files, {n} in the Delta table" in out.stdout
    assert event_rows(data_dir) == n
    assert LakeWriter(lake_dir, "events", "p0").committed() == 6
    assert LakeWriter(lake_dir, "events", "checkins.p0").committed() == 0
    assert LakeWriter(lake_dir, "events", "checkins.p0").first_run()  # the mark came along
    assert not LakeWriter(lake_dir, "events", "p0").first_run()
    assert (data_dir / "lake-old-layout" / "events" / "date=2026-11-21").is_dir()
    assert run_py(data_dir, "lake", "migrate").stdout.strip() == "nothing to import"
    # A flow resuming from an old snapshot (next file 4) replaces flushes 4.. (11 rows) as
    # the old design rewrote files 4.. .
    sink = LakeSink(lake_dir, "events", flush_rows=1)
    part = sink.build_part("s", "p0", LakeSinkState(4))
    part.write_batch([rows(6, 15)])
    assert event_rows(data_dir) == n - 11 + 6


def test_two_writers_in_threads_retry_conflicts(data_dir) -> None:
    """Replacing commits of one writer racing appends of another: every row once."""
    a = LakeWriter(data_dir / "lake", "events", "p0")
    b = LakeWriter(data_dir / "lake", "events", "p1")
    a.write(rows(50), 0)

    def run_b() -> None:
        for n in range(20):
            b.write(rows(5, 1000 + n * 5), n)

    t = threading.Thread(target=run_b)
    t.start()
    for n in range(1, 11):  # each flush replaces the previous one's rows, racing b's appends
        a.write(rows(50), n, replace_from=0)
    t.join()
    assert event_rows(data_dir) == 150
    assert scalar(data_dir, "SELECT count(DISTINCT id) FROM events") == 150


def test_run_py_up_imports_an_old_layout_lake_before_the_flows_start(data_dir) -> None:
    n = write_old_layout(data_dir / "lake")
    prepare_lake(Settings(data_dir=data_dir))  # what `run.py up` / `demo` do first
    assert event_rows(data_dir) == n
    assert not old_layout_tables(data_dir / "lake")
