"""Issue 15: a lake writer's open Delta table carries a bounded number of commits.

delta-rs moves an open table forward commit by commit, and the state it keeps that way grew by
~135 KiB per commit (measured: `storage.lake.LakeWriter`'s docstring). So a writer
reopens its table once it has carried `reload_every` commits, its own or another writer's of
a shared table; these tests check that bound on real Delta tables, and that nothing a writer
relies on (its committed flush number, exactly-once resume) changes across a reopening."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

import storage.lake
from connectors.lake_sink import LakeSink
from storage.lake import RELOAD_EVERY, LakeWriter
from tests.lake_helpers import event_rows

T = datetime(2026, 12, 5, 12, tzinfo=UTC)


def rows(n: int, start: int = 0) -> list[dict]:
    return [
        {"id": f"{i}-0", "stream": "s", "source": "a", "type": "T", "level": "INFO",
         "payload": "{}", "ts": T, "received_at": T}
        for i in range(start, start + n)
    ]  # fmt: skip


def test_writer_reopens_its_table_every_reload_every_commits(data_dir) -> None:
    w = LakeWriter(data_dir / "lake", "events", "p0", reload_every=5)
    tables = [w.dt]  # held, so that a new table object is never mistaken for an old one
    for flush in range(23):
        w.write(rows(2, 2 * flush), flush)
        assert 0 <= w.carried() < 5
        if w.dt is not tables[-1]:
            tables.append(w.dt)
    # Versions 1..23 (0 created the table): reopened at 5, 10, 15 and 20.
    assert len(tables) == 5
    assert w.dt.version() == 23 and w.loaded_version == 20
    assert w.committed() == 22
    assert event_rows(data_dir) == 46


def test_commits_of_another_writer_count_too(data_dir) -> None:
    """A shared table (`dead_letters`, `late_records`): the other writer's commits are carried
    forward by this writer's next commit, and count towards its bound."""
    a = LakeWriter(data_dir / "lake", "events", "a", reload_every=5)
    b = LakeWriter(data_dir / "lake", "events", "b")
    a.write(rows(1), 0)
    for flush in range(6):
        b.write(rows(1, 100 + flush), flush)
    first = a.dt
    a.write(rows(1, 1), 1)  # carries b's six commits and its own: 8 > 5
    assert a.dt is not first and a.carried() == 0
    assert a.committed() == 1 and b.committed() == 5
    assert event_rows(data_dir) == 8


def test_lake_sink_resume_after_reopenings_is_exactly_once(data_dir, monkeypatch) -> None:
    """The sink's writers use the bound; a resume whose snapshot predates several reopenings
    still replaces exactly the flushes after it."""
    monkeypatch.setattr(storage.lake, "RELOAD_EVERY", 3)
    sink = LakeSink(data_dir / "lake", "events", flush_rows=5, flush_age=1e9)
    part = sink.build_part("s", "p0", None)  # its first-run mark is one commit
    part.write_batch([rows(5)])  # flush 0
    state = part.snapshot()
    for i in range(1, 9):  # flushes 1..8, then a crash
        part.write_batch([rows(5, 5 * i)])
    assert part._w.reload_every == 3 and part._w.carried() < 3
    assert event_rows(data_dir) == 45
    resumed = sink.build_part("s", "p0", state)
    # The replay: the same 40 rows after the snapshot, cut into other batches (two flushes,
    # the first replacing flushes 1..8 in one commit).
    resumed.write_batch([rows(20, 5)])
    resumed.write_batch([rows(20, 25)])
    resumed.close()
    assert event_rows(data_dir) == 45
    assert resumed._w.committed() == 2


@pytest.mark.parametrize("given", [0, None])
def test_reload_every_defaults_to_the_module_bound(data_dir, given) -> None:
    assert LakeWriter(data_dir / "lake", "events", "p0", given).reload_every == RELOAD_EVERY
