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
   the parent also kills the child if it does not answer in time).

The result goes back as an Arrow IPC stream (plain data, no pickle: nothing the sandbox says
is executed by the parent). Where Landlock is missing (kernel < 5.13, or a seccomp profile
that blocks it) free SQL is refused with that reason: it fails closed, never runs unsandboxed.

A child costs ~1-1.5 s of start-up on the loaded 2-core test machine (mostly importing DuckDB
and PyArrow), which is why the ready-made queries (fixed SQL from this repository, not user
text) stay in the dashboard.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from storage.catalog import scan_sql, view_sql
from storage.lake import ensure_lake
from storage.landlock import SYSTEM_FILES, SandboxUnavailable, restrict_to_reading
from storage.tables import TABLES

#: Lake table → its personal columns (from `storage.tables.Table.personal`, the one place).
PERSONAL: dict[str, frozenset[str]] = {t.name: t.personal for t in TABLES.values() if t.personal}
KEY_FILE = "pseudonym.key"  #: under DATA_DIR, mode 0600
SETUP_GRACE_S = 20.0  #: start-up and masking allowance on top of the query's time limit
PROJECT_ROOT = Path(__file__).resolve().parents[1]


# --- pseudonyms ---------------------------------------------------------------------------------


def pseudonym(key: bytes, value: str | None) -> str | None:
    """A stable keyed pseudonym (HMAC-SHA-256, 64 bits as hex): equal values give equal
    pseudonyms, so joins, `count(DISTINCT ...)` and grouping still work; without the key a
    guessed value cannot be checked against it."""
    if value is None:
        return None
    return "p_" + hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:16]


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
    return view_sql(lake, lambda t: masked_table(t) if t in PERSONAL else scan_sql(lake, t))


def pseudonymised_copies(lake: Path, key: bytes, sql: str) -> dict[str, pa.Table]:
    """The pseudonymised copies of the personal tables the query needs, read by a DuckDB
    instance that is closed again before the analyst's SQL runs (its threads may read the
    raw files; the analyst's instance is started only after the narrower confinement).

    The hash is a Python function of that closed instance, so the key is neither in any SQL
    text (`duckdb_views()` shows view SQL) nor callable by the analyst as a guess oracle."""
    needed = sorted(tables_to_mask(sql, masked_source(lake)))
    if not needed:
        return {}
    con = duckdb.connect(config={"threads": 1})
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.create_function(
            "vf_pseudonym", lambda v: pseudonym(key, v), [duckdb.sqltype("VARCHAR")], "VARCHAR"
        )
        out = {}
        for t in needed:
            cols = ", ".join(f'vf_pseudonym("{c}") AS "{c}"' for c in sorted(PERSONAL[t]))
            out[masked_table(t)] = con.sql(
                f"SELECT * REPLACE ({cols}) FROM {scan_sql(lake, t)}"
            ).to_arrow_table()
        return out
    finally:
        con.close()


def load_catalog(
    con: duckdb.DuckDBPyConnection, lake: Path, copies: dict[str, pa.Table] | None
) -> None:
    """The views on `con`: in clear (`copies` None), or for analysts over the pseudonymised
    copies (a view whose personal table the query did not need stays undefined: an error,
    never a leak)."""
    if copies is None:
        views = view_sql(lake)
    else:
        views = masked_source(lake)
        for name, table in copies.items():
            con.register("vf_copy", table)
            con.execute(f"CREATE TABLE {name} AS SELECT * FROM vf_copy")
            con.unregister("vf_copy")
    for name, text in views.items():
        try:
            con.execute(f"CREATE VIEW {name} AS {text}")
        except duckdb.CatalogException:
            if copies is None:
                raise


def allowed_dirs(lake: Path, masked: bool) -> list[Path]:
    """What the child may read once confined: the lake, or for analysts only the tables
    without personal columns (their pseudonymised copies are already in memory)."""
    if not masked:
        return [lake]
    return [lake / t for t in TABLES if t not in PERSONAL]


def lock_down(con: duckdb.DuckDBPyConnection, dirs: Iterable[Path], memory_limit: str) -> None:
    """DuckDB's own fence: read only beneath `dirs`, no extensions, no spill, locked."""
    listed = ", ".join("'" + (str(d).rstrip("/") + "/").replace("'", "''") + "'" for d in dirs)
    for stmt in (
        "SET TimeZone = 'UTC'",
        "SET python_enable_replacements = false",
        "SET autoinstall_known_extensions = false",
        "SET autoload_known_extensions = false",
        "SET temp_directory = ''",
        f"SET memory_limit = '{memory_limit}'",
        f"SET allowed_directories = [{listed}]",
        "SET enable_external_access = false",
        "SET lock_configuration = true",
    ):
        con.execute(stmt)


# --- the child ----------------------------------------------------------------------------------


def _answer(header: dict, body: bytes = b"") -> None:
    out = sys.stdout.buffer
    out.write(json.dumps(header).encode() + b"\n" + body)
    out.flush()


def child_main(req: dict) -> None:
    """Answer one request (JSON line + Arrow IPC on stdout). Called by `storage.sandbox_main`
    once the process is already confined to reading (no write anywhere, in every thread)."""
    lake = Path(req["lake"])
    key = bytes.fromhex(req["key"]) if req.get("key") else None
    sql, max_rows, timeout_s = req["sql"], int(req["max_rows"]), float(req["timeout_s"])
    try:
        copies = None if key is None else pseudonymised_copies(lake, key, sql)
        del key
        dirs = allowed_dirs(lake, copies is not None)
        restrict_to_reading([*dirs, *SYSTEM_FILES])  # this thread + DuckDB's, started below
        con = duckdb.connect(config={"threads": 1})
        load_catalog(con, lake, copies)
        del copies
        lock_down(con, dirs, str(req["memory_limit"]))
    except SandboxUnavailable as exc:
        _answer({"ok": False, "error": str(exc), "unavailable": True})
        return
    except duckdb.Error as exc:
        _answer({"ok": False, "error": f"the lake could not be read: {exc}"})
        return
    _answer(*_run(con, sql, max_rows, timeout_s))


@contextmanager
def time_limit(con: duckdb.DuckDBPyConnection, timeout_s: float) -> Iterator[threading.Event]:
    """Interrupt `con`'s query after `timeout_s`; the event yielded says whether it did (so a
    `duckdb.Error` can be told apart as "took too long"). Free SQL and our own queries."""
    timed_out = threading.Event()

    def stop() -> None:
        timed_out.set()
        con.interrupt()

    timer = threading.Timer(timeout_s, stop)
    timer.daemon = True
    timer.start()
    try:
        yield timed_out
    finally:
        timer.cancel()


def _run(
    con: duckdb.DuckDBPyConnection, sql: str, max_rows: int, timeout_s: float
) -> tuple[dict, bytes]:
    with time_limit(con, timeout_s) as timed_out:
        return _fetch(con, sql, max_rows, timed_out)


def _fetch(
    con: duckdb.DuckDBPyConnection, sql: str, max_rows: int, timed_out: threading.Event
) -> tuple[dict, bytes]:
    try:
        cur = con.execute(sql)
        if not cur.description:
            return {"ok": True, "columns": [], "truncated": False}, b""
        columns = [d[0] for d in cur.description]
        reader = cur.to_arrow_reader(max_rows + 1)
        batches, n = [], 0
        for batch in reader:
            batches.append(batch)
            n += batch.num_rows
            if n > max_rows:
                break
    except duckdb.Error as exc:
        if timed_out.is_set():
            return {"ok": False, "error": "timeout"}, b""
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}, b""
    table = pa.Table.from_batches(batches, schema=reader.schema).slice(0, max_rows)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return {"ok": True, "columns": columns, "truncated": n > max_rows}, sink.getvalue().to_pybytes()


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
    lake = lake_dir.resolve()
    ensure_lake(lake)  # the empty tables' folders: made here, the child can write nothing
    req = {
        "lake": str(lake),
        "key": key.hex() if key is not None else None,
        "sql": sql,
        "max_rows": max_rows,
        "timeout_s": timeout_s,
        "memory_limit": memory_limit,
    }
    proc = subprocess.Popen(
        [sys.executable, "-E", "-s", "-m", "storage.sandbox_main"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=PROJECT_ROOT,
    )
    try:
        out, err = proc.communicate(json.dumps(req).encode() + b"\n", timeout_s + SETUP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise SandboxError("timeout", timeout=True) from None
    head, _, body = out.partition(b"\n")
    try:
        header = json.loads(head)
    except ValueError:
        tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no answer"]
        raise SandboxError(f"the SQL sandbox failed: {tail[0]}") from None
    if not header.get("ok"):
        if header.get("unavailable"):
            raise SandboxUnavailable(header["error"])
        raise SandboxError(header["error"], timeout=header["error"] == "timeout")
    if not header["columns"]:
        return SandboxResult([], [], False)
    table = pa.ipc.open_stream(body).read_all()
    rows = list(zip(*(c.to_pylist() for c in table.columns), strict=True))
    return SandboxResult(header["columns"], rows, bool(header["truncated"]))
