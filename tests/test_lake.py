"""The lake writer on real Parquet files: idempotent resume, compaction, crash recovery."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connectors.lake_sink import LakeSink, LakeSinkState
from core import keys
from storage.lake import LakeWriter, _atomic_write
from tests.conftest import FlowProcess, wait_for
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


def test_resume_discards_files_after_the_snapshot_and_spans_dates(data_dir) -> None:
    w = LakeWriter(data_dir / "lake", "events", "p0")
    w.write(rows(3), 0)
    paths = w.write(rows(2, 3) + rows(2, 5, day=1), 1)  # one batch, two date partitions
    assert len(paths) == 2
    (paths[0].parent / f".{paths[0].name}.tmp").write_bytes(b"half a file")
    assert w.discard_from(1) == 2  # both date files of number 1; the temp file is gone too
    assert not list((data_dir / "lake" / "events").glob("*/.*"))
    assert event_rows(data_dir) == 3
    assert w.next_seq_on_disk() == 1


def test_compaction_merges_small_files_once(data_dir) -> None:
    w = LakeWriter(data_dir / "lake", "events", "p0")
    for seq in range(6):
        w.write(rows(10, seq * 10), seq)
    assert w.compact(below=4, min_files=3, small_rows=1000) == 4  # files 0..3 only
    names = sorted(f.path.name for f in w.own_files())
    assert names == [
        "p0-0000000000-0000000003.parquet",
        "p0-0000000004.parquet",
        "p0-0000000005.parquet",
    ]
    assert event_rows(data_dir) == 60
    assert scalar(data_dir, "SELECT count(DISTINCT id) FROM events") == 60
    # A resume at 4 keeps the merged file and rewrites 4 and 5.
    assert w.discard_from(4) == 2
    assert event_rows(data_dir) == 40


def test_interrupted_compaction_is_finished_on_recovery(data_dir) -> None:
    w = LakeWriter(data_dir / "lake", "events", "p0")
    files = [w.write(rows(5, seq * 5), seq)[0] for seq in range(4)]
    merged = pa.concat_tables([pq.read_table(f) for f in files[:3]])
    # Crash after the intent was written and one source deleted, before the rename.
    intent = files[0].parent / ".p0-0000000000-0000000002.parquet.compacting"
    _atomic_write(merged, intent)
    files[0].unlink()
    assert event_rows(data_dir) == 15  # readers may miss rows meanwhile, never double them
    w.recover()
    assert sorted(f.path.name for f in w.own_files()) == [
        "p0-0000000000-0000000002.parquet",
        "p0-0000000003.parquet",
    ]
    assert event_rows(data_dir) == 20
    assert scalar(data_dir, "SELECT count(DISTINCT id) FROM events") == 20


def test_the_flow_compacts_its_small_files(flow_env, data_dir, r) -> None:
    env = {**flow_env, "LAKE_COMPACT_AFTER_S": "1", "LAKE_COMPACT_MIN_FILES": "3"}
    flow = FlowProcess("events", env, data_dir / "flow.log").start()
    try:
        ev = json.dumps({"source": "s", "type": "GAS", "level": "INFO", "payload": {}})
        for _ in range(8):
            r.xadd(keys.EVENTS_IN, {"data": ev})
            time.sleep(1.2)  # one small file per snapshot
        wait_for(lambda: event_rows(data_dir) == 8, 30, 0.3, "8 rows")
        events_dir = data_dir / "lake" / "events"
        wait_for(
            lambda: any(len(p.stem.split("-")) == 3 for p in events_dir.glob("date=2*/*.parquet")),
            30,
            0.3,
            "a merged file",
        )
        assert event_rows(data_dir) == 8
        assert scalar(data_dir, "SELECT count(DISTINCT id) FROM events") == 8
    finally:
        flow.kill()


def test_fresh_start_discards_uncommitted_files_but_refuses_to_guess(data_dir) -> None:
    sink = LakeSink(data_dir / "lake", "events")
    part = sink.build_part("s", "p0", None)  # first run: marks the part as uncommitted
    part.write_batch([rows(5)])
    part.close()  # a file, then the run dies before any snapshot was committed
    assert event_rows(data_dir) == 5
    sink.build_part("s", "p0", None)  # restart without state: the replay rewrites them
    assert event_rows(data_dir) == 0

    w = LakeWriter(data_dir / "lake", "events", "p0")
    w.write(rows(5), 0)
    w.fresh_marker.unlink()  # files of a run that did commit, but the recovery store is gone
    with pytest.raises(RuntimeError, match="no recovery state"):
        sink.build_part("s", "p0", None)
    assert event_rows(data_dir) == 5  # nothing deleted
    sink.build_part("s", "p0", LakeSinkState(1))  # with its state it resumes normally
    assert event_rows(data_dir) == 5
