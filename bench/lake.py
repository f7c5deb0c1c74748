"""Lake benchmark: Delta commit latency per number of writer processes, and query time over
many rows against a plain Parquet glob of the same data.

    uv run python -m bench.lake                      # 1, 2, 4 writers; 2M rows queried
    uv run python -m bench.lake --query-rows 10000000
    uv run python -m bench.lake writer DIR|- ID FLUSHES ROWS   # one writer (tests use it)

Prints `ratio=` lines: query time on the Delta table (after `lake maintain`) / on one plain
Parquet glob of the same rows (the floor: no log to read, no isolation). Run by hand; never a
timed assertion in a test. The machine is shared: compare figures of the same run only.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq

from bench.harness import quantile
from core.settings import Settings
from storage.catalog import load_delta, memory_connection
from storage.lake import Lake, LakeWriter, as_lake, to_arrow
from storage.lake_maintenance import maintain
from storage.tables import TABLES

T0 = datetime(2026, 12, 4, 9, tzinfo=UTC)


def event_rows(writer: str, flush: int, n: int) -> list[dict]:
    ts = T0 + timedelta(seconds=flush)
    return [
        {
            "id": f"{writer}-{flush}-{i}",
            "stream": "events:in",
            "source": f"sensor-{i % 50}",
            "type": ("TEMP", "GAS", "DOOR", "CROWD")[i % 4],
            "level": ("INFO", "WARN", "ALERT")[i % 3],
            "payload": '{"v": 1}',
            "ts": ts,
            "received_at": ts,
        }
        for i in range(n)
    ]


def run_writer(lake: Lake | Path, writer: str, flushes: int, rows: int) -> list[float]:
    """Commit `flushes` flushes of `rows` events as writer `writer`; return commit seconds."""
    w = LakeWriter(lake, "events", writer)
    start = (w.committed() or -1) + 1
    lat = []
    for n in range(start, start + flushes):
        data = event_rows(writer, n, rows)
        t = time.perf_counter()
        w.write(data, n)
        lat.append(time.perf_counter() - t)
    return lat


def bench_commits(lake_dir: Path, writers: int, flushes: int, rows: int) -> dict:
    argv = [sys.executable, "-m", "bench.lake", "writer", str(lake_dir)]
    procs = [
        subprocess.Popen(
            [*argv, f"w{i}", str(flushes), str(rows)], stdout=subprocess.PIPE, text=True
        )
        for i in range(writers)
    ]
    t = time.perf_counter()
    lat = [x for p in procs for x in json.loads(p.communicate()[0])]
    wall = time.perf_counter() - t
    return {
        "writers": writers,
        "commits": len(lat),
        "p50_ms": round(statistics.median(lat) * 1e3, 1),
        "p99_ms": round(quantile(lat, 0.99) * 1e3, 1),
        "rows_per_s": round(len(lat) * rows / wall),
    }


def bench_query(root: Path, total: int) -> list[str]:
    lake = as_lake(root / "qlake")
    plain = root / "plain"
    plain.mkdir()
    table = TABLES["events"]
    w = LakeWriter(lake, "events", "q0")
    per = 500_000
    for n in range(0, total // per):
        data = to_arrow(table, event_rows("q0", n, per), "q0", n)
        w.write_arrow(data, n)
        pq.write_table(data, plain / f"f{n:04d}.parquet", row_group_size=122_880)
    maintain(lake, retention_h=0, tables=["events"])
    con = memory_connection()
    load_delta(con)
    uri = lake.table_uri("events")
    out = []
    for name, q in (
        ("count", "SELECT count(*) FROM {src}"),
        ("group_by", "SELECT type, level, count(*) FROM {src} GROUP BY ALL"),
    ):
        times = {}
        for kind, src in (
            ("delta", f"delta_scan('{uri}')"),
            ("parquet", f"read_parquet('{plain}/*.parquet')"),
        ):
            sql = q.format(src=src)
            con.execute(sql).fetchall()  # warm
            ts = []
            for _ in range(5):
                t = time.perf_counter()
                con.execute(sql).fetchall()
                ts.append(time.perf_counter() - t)
            times[kind] = statistics.median(ts)
        out.append(
            f"query {name} over {total:,} rows: delta {times['delta'] * 1e3:.1f} ms, "
            f"plain parquet glob {times['parquet'] * 1e3:.1f} ms, "
            f"ratio={times['delta'] / times['parquet']:.2f}"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "writer":
        # DIR, or "-" for the settings' lake (LAKE_URI and its S3 settings).
        where, writer, flushes, rows = argv[1], argv[2], int(argv[3]), int(argv[4])
        lake = Settings().lake if where == "-" else Path(where)
        print(json.dumps(run_writer(lake, writer, flushes, rows)))
        return 0
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--flushes", type=int, default=100, help="commits per writer")
    p.add_argument("--rows", type=int, default=2000, help="rows per commit")
    p.add_argument("--query-rows", type=int, default=2_000_000)
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bench-lake-"))
    try:
        for n in (1, 2, 4):
            d = root / f"w{n}"
            r = bench_commits(d, n, args.flushes, args.rows)
            print(
                f"commit, {n} writer(s): {r['commits']} commits of {args.rows} rows, "
                f"p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, {r['rows_per_s']:,} rows/s",
                flush=True,
            )
        for line in bench_query(root, args.query_rows):
            print(line, flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
