"""The lake on S3-compatible object storage: a real `moto_server` (the `moto[server]` dev
dependency, its conditional writes made atomic as S3's: `tests.s3_server`) on loopback,
LAKE_URI=s3://…, the same code as on local files — resume by transaction, readers, maintenance,
time travel, and two writer processes on one table."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest

from connectors.lake_sink import LakeSink
from core.settings import Settings
from ops.processes import PROJECT_DIR, child_env
from storage.catalog import connect_memory, query
from storage.lake import LakeWriter
from storage.lake_maintenance import maintain, table_status, versions_as_of
from tests.conftest import free_port, wait_for
from tests.test_lake import rows

KEY = "test-key-id"
SECRET = "test-secret"


@pytest.fixture
def s3_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.s3_server", "-H", "127.0.0.1", "-p", str(port)],
        cwd=PROJECT_DIR,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
    )

    def up() -> bool:
        try:
            s3.create_bucket(Bucket="venue")
            return True
        except Exception:
            return False

    try:
        wait_for(up, 30, 0.2, "moto_server")
        yield {
            "DATA_DIR": str(tmp_path / "data"),
            "LAKE_URI": "s3://venue/lake",
            "LAKE_S3_ENDPOINT": endpoint,
            "LAKE_S3_ACCESS_KEY_ID": KEY,
            "LAKE_S3_SECRET_ACCESS_KEY": SECRET,
        }
    finally:
        server.kill()
        server.wait(10)


def settings(env: dict[str, str]) -> Settings:
    return Settings(**{k.lower(): v for k, v in env.items()})


def count(lake, sql: str = "SELECT count(*) FROM events", versions=None) -> int:
    con = connect_memory(lake, versions=versions)
    try:
        return query(con, sql)[1][0][0]
    finally:
        con.close()


def test_sink_resume_readers_maintenance_and_time_travel_on_s3(s3_env) -> None:
    lake = settings(s3_env).lake
    assert not lake.local and lake.storage_options["AWS_ALLOW_HTTP"] == "true"
    sink = LakeSink(lake, "events", flush_rows=10, flush_age=1e9)
    part = sink.build_part("s", "p0", None)
    part.write_batch([rows(10)])
    state = part.snapshot()
    time.sleep(1.1)
    mid = datetime.now(UTC)
    time.sleep(1.1)
    part.write_batch([rows(10, 10)])
    part.write_batch([rows(10, 20)])  # then kill -9: resume from `state`
    resumed = sink.build_part("s", "p0", state)
    resumed.write_batch([rows(20, 10)])
    assert count(lake) == 30
    assert count(lake, "SELECT count(DISTINCT id) FROM events") == 30
    assert count(lake, versions=versions_as_of(lake, mid)) == 10
    (r,) = maintain(lake, retention_h=0, tables=["events"])
    assert r.files_removed >= 2 and r.vacuumed >= 2
    st = table_status(lake, "events")
    assert (st.rows, st.files) == (30, 1)
    assert count(lake) == 30
    assert LakeWriter(lake, "events", "p0").committed() == 1


def test_two_writer_processes_on_one_s3_table(s3_env) -> None:
    s = settings(s3_env)
    env = child_env(s, "redis://127.0.0.1:1", **s3_env)
    flushes, n = 15, 200
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.lake", "writer", "-", w, str(flushes), str(n)],
            cwd=PROJECT_DIR,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for w in ("p0", "p1")
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert all(len(json.loads(o)) == flushes for o in outs)
    assert count(s.lake) == 2 * flushes * n
    assert count(s.lake, "SELECT count(DISTINCT id) FROM events") == 2 * flushes * n
    assert LakeWriter(s.lake, "events", "p1").committed() == flushes - 1


def test_run_py_query_and_lake_status_on_s3(s3_env) -> None:
    lake = settings(s3_env).lake
    LakeWriter(lake, "events", "p0").write(rows(7), 0)
    env = child_env(settings(s3_env), "redis://127.0.0.1:1", **s3_env)

    def run_py(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "run.py", *args], cwd=PROJECT_DIR, env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    q = run_py("query", "SELECT count(*) AS n FROM events", "--json")
    assert q.returncode == 0, q.stderr
    assert json.loads(q.stdout) == [{"n": 7}]
    st = run_py("lake", "status", "--json")
    assert st.returncode == 0, st.stderr
    assert next(t for t in json.loads(st.stdout) if t["table"] == "events")["rows"] == 7
    # The catalog file names the S3 tables but holds no secret.
    catalog = Path(s3_env["DATA_DIR"]) / "venue.duckdb"
    assert SECRET.encode() not in catalog.read_bytes()
