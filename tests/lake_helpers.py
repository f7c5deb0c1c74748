"""Reading the real lake from tests (DuckDB over the Delta tables the flows wrote), and
running its maintenance as `run.py up` does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ops.processes import spawn
from storage.catalog import connect_memory, query


def rows(data_dir: Path, sql: str) -> list[tuple]:
    con = connect_memory(data_dir / "lake")
    try:
        return query(con, sql)[1]
    finally:
        con.close()


def scalar(data_dir: Path, sql: str):
    return rows(data_dir, sql)[0][0]


def event_rows(data_dir: Path) -> int:
    return scalar(data_dir, "SELECT count(*) FROM events")


def windows_match_events(data_dir: Path, window_s: int) -> list[tuple]:
    """Windows whose summed `event_counts` differ from a recount of `events` (empty = exact)."""
    return rows(
        data_dir,
        f"""
        WITH recount AS (
            SELECT to_timestamp(floor(epoch(ts) / {window_s}) * {window_s}) AS window_start,
                   type, level, count(*) AS n
            FROM events GROUP BY ALL
        )
        SELECT coalesce(r.window_start, c.window_start), coalesce(r.type, c.type),
               coalesce(r.level, c.level), r.n, c.count
        FROM recount r FULL OUTER JOIN event_counts c
          ON r.window_start = c.window_start AND r.type = c.type AND r.level = c.level
        WHERE r.n IS DISTINCT FROM c.count
        """,
    )


class Maintainer:
    """`run.py lake maintain --every S` as a real process (what `run.py up` supervises)."""

    def __init__(self, env: dict[str, str], log: Path, every: float = 0.5, retention_h: int = 1):
        self.env, self.log = env, log
        self.argv = [sys.executable, "run.py", "lake", "maintain", "--every", str(every)]
        self.argv += ["--retention-hours", str(retention_h)]
        self.proc: subprocess.Popen | None = None

    def start(self) -> Maintainer:
        self.proc = spawn(self.argv, self.env, self.log)
        return self

    def kill(self) -> None:
        """kill -9."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
