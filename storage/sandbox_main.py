"""Entry of the free-SQL child (`python -m storage.sandbox_main`, started by
`storage.sql_sandbox.run_confined`): read the request, confine the process, then import.

Landlock confines only the calling thread and what it starts later, so the first confinement
(nothing may be written, created, removed, executed or connected; reading is allowed) is made
here, while the process has a single thread: before DuckDB or PyArrow are imported (importing
PyArrow starts allocator threads, connecting DuckDB starts eight). Every thread of the child
is thereby unable to write, whatever any later code does. `child_main` narrows the reading to
the lake (or, for analysts, its tables without personal columns) before it starts DuckDB.
The child's code is `storage.sandbox_child` (DuckDB and PyArrow only; the parent sends the
views' SQL and the folders in the request, so the catalog, the lake writer and the tables'
pydantic models are never imported here).
"""

from __future__ import annotations

import json
import sys

from storage.landlock import SandboxUnavailable, restrict_to_reading, thread_count


def main() -> None:
    req = json.loads(sys.stdin.buffer.readline())
    try:
        if thread_count() != 1:
            raise SandboxUnavailable("the sandbox started with more than one thread")
        restrict_to_reading(["/"])  # read anything (the interpreter, libraries); write nothing
    except SandboxUnavailable as exc:
        sys.stdout.write(json.dumps({"ok": False, "error": str(exc), "unavailable": True}) + "\n")
        return
    from storage.sandbox_child import child_main  # only now: it imports DuckDB and PyArrow

    child_main(req)


if __name__ == "__main__":
    main()
