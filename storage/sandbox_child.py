"""The free-SQL child's side of the sandbox (`storage.sql_sandbox` is the parent's): everything
the confined process runs, importing only DuckDB, PyArrow and `storage.landlock`.

The parent (`run_confined`) works out from the catalog and the tables what the child needs
(the views' SQL, which personal tables to copy pseudonymised and how, which folders it may
read, the delta extension's file) and sends it on stdin with the query, so the child never
imports `storage.catalog`, `storage.lake` or `storage.tables` (deltalake, pyarrow.compute,
pydantic and the record models). Measured on the shared 2-core test machine (load ~10),
interleaved runs, median CPU (user+sys) of the child: starting Python and importing its code
581 ms before (`python -E -s -c "import storage.sql_sandbox"`, which pulled them all in) vs
333 ms now (`... "import storage.sandbox_child"`), 15 runs each; a whole `run_confined` of one
query 633 -> 351 ms (organisers) and 644 -> 402 ms (analysts), 12 spawns each.
`tests/test_sql_sandbox.py` checks that the heavy modules stay out.

The request was already trusted (it named the lake the child confines itself to, and carries
the key); nothing in it widens what the kernel lets the child do: the first confinement
(`storage.sandbox_main`) forbids every write before this module is imported, and the folders
it narrows reading to are computed by the parent from `storage.tables` as before.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import duckdb
import pyarrow as pa

from storage.landlock import SYSTEM_FILES, SandboxUnavailable, restrict_to_reading

#: What the dynamic loader reads to load the delta extension (its DT_NEEDED libraries).
EXTENSION_LIBRARIES = ("/etc/ld.so.cache", "/lib", "/lib64", "/usr/lib", "/usr/lib64")


def pseudonym(key: bytes, value: str | None) -> str | None:
    """A stable keyed pseudonym (HMAC-SHA-256, 64 bits as hex): equal values give equal
    pseudonyms, so joins, `count(DISTINCT ...)` and grouping still work; without the key a
    guessed value cannot be checked against it."""
    if value is None:
        return None
    return "p_" + hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:16]


def _connect(req: dict) -> duckdb.DuckDBPyConnection:
    """A one-thread in-memory DuckDB with the delta extension loaded from its package file."""
    con = duckdb.connect(config={**req["duckdb_config"], "threads": 1})
    con.execute("LOAD '" + req["extension"].replace("'", "''") + "'")
    return con


def pseudonymised_copies(req: dict, key: bytes) -> dict[str, pa.Table]:
    """The pseudonymised copies of the personal tables the query needs (`req["copies"]`: copy
    name → its SELECT, with `vf_pseudonym` around each personal column), read by a DuckDB
    instance that is closed again before the analyst's SQL runs (its threads may read the
    raw files; the analyst's instance is started only after the narrower confinement).

    The hash is a Python function of that closed instance, so the key is neither in any SQL
    text (`duckdb_views()` shows view SQL) nor callable by the analyst as a guess oracle."""
    if not req["copies"]:
        return {}
    con = _connect(req)
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.create_function(
            "vf_pseudonym", lambda v: pseudonym(key, v), [duckdb.sqltype("VARCHAR")], "VARCHAR"
        )
        return {name: con.sql(select).to_arrow_table() for name, select in req["copies"].items()}
    finally:
        con.close()


def load_catalog(
    con: duckdb.DuckDBPyConnection, views: dict[str, str], copies: dict[str, pa.Table] | None
) -> None:
    """The views on `con`: in clear (`copies` None), or for analysts over the pseudonymised
    copies (a view whose personal table the query did not need stays undefined: an error,
    never a leak)."""
    for name, table in (copies or {}).items():
        con.register("vf_copy", table)
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM vf_copy")
        con.unregister("vf_copy")
    for name, text in views.items():
        try:
            con.execute(f"CREATE VIEW {name} AS {text}")
        except duckdb.CatalogException:
            if copies is None:
                raise


def lock_down(con: duckdb.DuckDBPyConnection, dirs: Iterable[Any], memory_limit: str) -> None:
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


def _answer(header: dict, body: bytes = b"") -> None:
    out = sys.stdout.buffer
    out.write(json.dumps({**header, "size": len(body)}).encode() + b"\n" + body)
    out.flush()


def child_main(req: dict) -> None:
    """Answer each statement of a request (a JSON line, then that many bytes of Arrow IPC, on
    stdout), each in its own fresh DuckDB. Called by `storage.sandbox_main` once the process
    is already confined to reading (no write anywhere, in every thread)."""
    key = bytes.fromhex(req["key"]) if req.get("key") else None
    max_rows, timeout_s = int(req["max_rows"]), float(req["timeout_s"])
    dirs = req["read"]
    try:
        copies = None if key is None else pseudonymised_copies(req, key)
        del key
        # The delta extension's file and the system libraries it links (libresolv, libstdc++:
        # dlopen reads them at LOAD, below) may be read too; they hold no data.
        restrict_to_reading([*dirs, req["extension"], *EXTENSION_LIBRARIES, *SYSTEM_FILES])
    except SandboxUnavailable as exc:
        _answer({"ok": False, "error": str(exc), "unavailable": True})
        return
    except duckdb.Error as exc:
        for _ in req["sqls"]:
            _answer({"ok": False, "error": f"the lake could not be read: {exc}"})
        return
    for sql in req["sqls"]:
        con = None
        try:
            con = _connect(req)
            load_catalog(con, req["views"], copies)
            lock_down(con, dirs, str(req["memory_limit"]))
        except duckdb.Error as exc:
            _answer({"ok": False, "error": f"the lake could not be read: {exc}"})
        else:
            _answer(*_run(con, sql, max_rows, timeout_s))
        finally:
            if con is not None:
                con.close()


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
