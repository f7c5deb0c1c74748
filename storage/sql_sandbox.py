"""Free SQL runs in a child process that the kernel forbids to write anything, anywhere.

Why a child process and Landlock (measured on 2026-12-04, Linux 6.18, Landlock ABI 7):
the parser check in `storage.analytics.check_sql` is one layer, but a parser check is only as
good as its author's imagination (`EXPLAIN ANALYZE COPY ... TO '<lake>/...'` passed the old
one and DuckDB wrote a forged Parquet file into the lake). DuckDB's own settings cannot close
it either: the lake folder has to stay readable, and `allowed_directories` grants reads AND
writes beneath it. So every free query runs in a fresh `python -m storage.sandbox_main`:

1. while it has one thread, before DuckDB or PyArrow are imported, it confines itself with
   Landlock (`storage.landlock.restrict_to_reading`): from then on the kernel refuses every
   thread of it every file write, truncate, create, rename, link, delete and mkdir on every
   path, every `execve`, every TCP bind/connect, and signals outside the sandbox. (Landlock
   binds only the calling thread and what it starts later; confining after DuckDB had started
   its threads let `EXPLAIN ANALYZE COPY` write from one of them: measured, now tested.)
   Landlock binds root too (`no_new_privs` is set first), needs no privilege, no file
   ownership scheme and no mount, and cannot be undone by the process;
2. for analysts, a first DuckDB instance makes pseudonymised copies of the personal tables
   the query needs (`pseudonymised_copies`) and is closed again;
3. it narrows reading to the lake (analysts: the tables WITHOUT personal columns, so raw
   participant files cannot be opened even by `read_parquet`) plus the few `/proc`/`/sys`
   files DuckDB reads at start-up, then starts the query's DuckDB: the catalog's views
   (whatever they read: Parquet globs today, Delta tables tomorrow; nothing here depends on
   it; for analysts over the copies, `load_catalog`), locked down (`lock_down`);
4. only then does it run the SQL, with a row limit and a time limit (DuckDB's `interrupt()`;
   the parent also kills the child if it does not answer in time). `run_confined_each` runs
   several statements this way in one child, steps 3-4 afresh for each (a new DuckDB, views,
   lockdown): the tests check dozens of statements against the real sandbox that way.

The result goes back as an Arrow IPC stream (plain data, no pickle: nothing the sandbox says
is executed by the parent). Where Landlock is missing (kernel < 5.13, or a seccomp profile
that blocks it) free SQL is refused with that reason: it fails closed, never runs unsandboxed.

The child's code is `storage.sandbox_child`, which imports only DuckDB and PyArrow: the
parent sends it the views' SQL, the copies to make and the folders to read (`child_request`),
so the child does not import the catalog, the lake writer or the tables' models (that cut its
CPU per query from ~630 to ~350 ms, see `storage.sandbox_child`). A child still costs
~0.35-0.4 s of CPU (mostly importing DuckDB and PyArrow; 0.8-1.4 s wall on the loaded 2-core
test machine), which is why the ready-made queries (fixed SQL from this repository, not user
text) stay in the dashboard.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from storage.catalog import DUCKDB_CONFIG, delta_extension_path, scan_sql, view_sql
from storage.lake import ensure_lake
from storage.landlock import SandboxUnavailable
from storage.sandbox_child import lock_down, pseudonym, time_limit
from storage.tables import TABLES

__all__ = [
    "KEY_FILE",
    "PERSONAL",
    "SandboxError",
    "SandboxResult",
    "SandboxUnavailable",
    "lock_down",
    "pseudonym",
    "pseudonym_key",
    "run_confined",
    "run_confined_each",
    "time_limit",
]

#: Lake table → its personal columns (from `storage.tables.Table.personal`, the one place).
PERSONAL: dict[str, frozenset[str]] = {t.name: t.personal for t in TABLES.values() if t.personal}
KEY_FILE = "pseudonym.key"  #: under DATA_DIR, mode 0600
SETUP_GRACE_S = 20.0  #: start-up and masking allowance on top of the query's time limit
PROJECT_ROOT = Path(__file__).resolve().parents[1]


# --- pseudonyms ---------------------------------------------------------------------------------


def pseudonym_key(data_dir: Path, configured: str | None = None) -> bytes:
    """The pseudonym key: the `PSEUDONYM_KEY` setting if set, else `DATA_DIR/pseudonym.key`
    (32 random bytes as hex, created once with mode 0600). Never shown or logged."""
    if configured:
        return configured.encode()
    path = data_dir / KEY_FILE
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return bytes.fromhex(path.read_text().strip())
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return bytes.fromhex(path.read_text().strip())


def masked_table(table: str) -> str:
    return f"masked_{table}"


_WORD = re.compile(r"[a-z_][a-z0-9_]*")
#: Words that list the catalog: the analyst should then see every view.
_LISTING = frozenset(
    {"show", "information_schema", "duckdb_views", "duckdb_tables", "duckdb_columns"}
)


def tables_to_mask(sql: str, views: dict[str, str]) -> set[str]:
    """The personal tables a query may read (through any view): their pseudonymised copy is
    made for it. Over-inclusion only costs time; a table left out leaves its views undefined
    (an error), never unmasked."""
    seen: set[str] = set()
    todo = set(_WORD.findall(sql.lower()))
    if todo & _LISTING:
        return set(PERSONAL)
    while todo:
        word = todo.pop()
        if word in seen:
            continue
        seen.add(word)
        if word in views:
            todo |= set(_WORD.findall(views[word].lower()))
    return {t for t in PERSONAL if masked_table(t) in seen}


def masked_source(lake: Path) -> dict[str, str]:
    """The analysts' catalog: every view, reading personal tables through `masked_<table>`."""
    return view_sql(lake, source=lambda t: masked_table(t) if t in PERSONAL else scan_sql(lake, t))


def copy_sql(lake: Path, sql: str, views: dict[str, str]) -> dict[str, str]:
    """The pseudonymised copies the analysts' query needs: copy name → the SELECT the child
    runs (before its narrower confinement, `vf_pseudonym` holding the key) to make it."""
    out = {}
    for t in sorted(tables_to_mask(sql, views)):
        cols = ", ".join(f'vf_pseudonym("{c}") AS "{c}"' for c in sorted(PERSONAL[t]))
        out[masked_table(t)] = f"SELECT * REPLACE ({cols}) FROM {scan_sql(lake, t)}"
    return out


def allowed_dirs(lake: Path, masked: bool) -> list[Path]:
    """What the child may read once confined: the lake, or for analysts only the tables
    without personal columns (their pseudonymised copies are already in memory)."""
    if not masked:
        return [lake]
    return [lake / t for t in TABLES if t not in PERSONAL]


def child_request(
    lake: Path,
    sqls: list[str],
    key: bytes | None,
    max_rows: int,
    timeout_s: float,
    memory_limit: str,
) -> dict:
    """What the child (`storage.sandbox_child.child_main`) is told: the query and everything
    it would otherwise import the catalog and the tables for."""
    if key is None:
        views, copies = view_sql(lake), {}
    else:
        views = masked_source(lake)
        copies = copy_sql(lake, "\n;\n".join(sqls), views)
    return {
        "sqls": sqls,
        "max_rows": max_rows,
        "timeout_s": timeout_s,
        "memory_limit": memory_limit,
        "key": key.hex() if key is not None else None,
        "views": views,
        "copies": copies,
        "read": [str(d) for d in allowed_dirs(lake, masked=key is not None)],
        "extension": str(delta_extension_path()),
        "duckdb_config": DUCKDB_CONFIG,
    }


# --- the parent ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SandboxResult:
    columns: list[str]
    rows: list[tuple]
    truncated: bool


class SandboxError(RuntimeError):
    """The query failed in the sandbox; `timeout` when it ran out of time."""

    def __init__(self, message: str, timeout: bool = False):
        super().__init__(message)
        self.timeout = timeout


def run_confined(
    lake_dir: Path,
    sql: str,
    *,
    key: bytes | None,
    max_rows: int,
    timeout_s: float,
    memory_limit: str,
) -> SandboxResult:
    """Blocking: run `sql` in a fresh confined child. `key` set: the analysts' catalog
    (personal columns pseudonymised with it); None: in clear (organisers)."""
    (out,) = run_confined_each(
        lake_dir, [sql], key=key, max_rows=max_rows, timeout_s=timeout_s,
        memory_limit=memory_limit,
    )  # fmt: skip
    if isinstance(out, SandboxError):
        raise out
    return out


def run_confined_each(
    lake_dir: Path,
    sqls: list[str],
    *,
    key: bytes | None,
    max_rows: int,
    timeout_s: float,
    memory_limit: str,
) -> list[SandboxResult | SandboxError]:
    """Blocking: run each of `sqls` in its own fresh DuckDB, locked down, one after the other
    in ONE confined child (`run_confined` is this with one statement; the write-path test
    checks dozens of statements per child instead of paying a child's start-up for each).
    The child is confined before it reads the request and narrowed once before the first
    statement's DuckDB starts, exactly as for one; analysts get the pseudonymised copies every
    statement needs. Each statement's answer or error is returned in order; a child that
    fails as a whole (no Landlock, killed, timed out) raises for all."""
    lake = lake_dir.resolve()
    ensure_lake(lake)  # the empty tables' folders: made here, the child can write nothing
    req = child_request(lake, sqls, key, max_rows, timeout_s, memory_limit)
    proc = subprocess.Popen(
        [sys.executable, "-E", "-s", "-m", "storage.sandbox_main"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=PROJECT_ROOT,
    )
    try:
        out, err = proc.communicate(
            json.dumps(req).encode() + b"\n", timeout_s * len(sqls) + SETUP_GRACE_S
        )
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise SandboxError("timeout", timeout=True) from None
    results: list[SandboxResult | SandboxError] = []
    while len(results) < len(sqls):
        head, _, out = out.partition(b"\n")
        try:
            header = json.loads(head)
        except ValueError:
            tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no answer"]
            raise SandboxError(f"the SQL sandbox failed: {tail[0]}") from None
        body, out = out[: header.get("size", 0)], out[header.get("size", 0) :]
        if header.get("unavailable"):
            raise SandboxUnavailable(header["error"])
        results.append(_result(header, body))
    return results


def _result(header: dict, body: bytes) -> SandboxResult | SandboxError:
    if not header.get("ok"):
        return SandboxError(header["error"], timeout=header["error"] == "timeout")
    if not header["columns"]:
        return SandboxResult([], [], False)
    table = pa.ipc.open_stream(body).read_all()
    rows = list(zip(*(c.to_pylist() for c in table.columns), strict=True))
    return SandboxResult(header["columns"], rows, bool(header["truncated"]))
