"""`run.py lake …`: maintain, status, history, migrate (see docs/lake.md).

Exit codes: 0 done; 2 refused or failed (the message says why).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from cli.textout import format_table
from core.settings import Settings
from storage.lake import OldLayoutError, ensure_lake
from storage.lake_maintenance import history, maintain, table_status
from storage.lake_migrate import MigrationError, migrate
from storage.tables import TABLES

log = logging.getLogger("venueflow.lake")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lake", help="lake tables: maintain, status, history, migrate")
    lsub = p.add_subparsers(dest="lake_command", required=True)
    m = lsub.add_parser("maintain", help="compact, checkpoint, clean the log, vacuum (safe live)")
    m.add_argument("tables", nargs="*", help="tables (default: all)")
    m.add_argument(
        "--every", type=float, default=0, help="repeat every N seconds (0: once; `up` runs it)"
    )
    m.add_argument(
        "--retention-hours",
        type=int,
        default=None,
        help="vacuum retention (default LAKE_VACUUM_RETENTION_H)",
    )
    st = lsub.add_parser("status", help="tables, versions, rows, files, log size")
    st.add_argument("--json", action="store_true")
    h = lsub.add_parser("history", help="a table's versions, newest first")
    h.add_argument("table")
    h.add_argument("--limit", type=int, default=50)
    h.add_argument("--json", action="store_true")
    lsub.add_parser("migrate", help="import an old-layout lake (numbered Parquet files) once")


def main(args: argparse.Namespace) -> int:
    s = Settings()
    lake = s.lake
    if args.lake_command == "migrate":
        if not lake.local:
            print("migrate imports a local DATA_DIR/lake; LAKE_URI is set", file=sys.stderr)
            return 2
        try:
            done = migrate(s.lake_dir)
        except MigrationError as exc:
            print(f"migration refused: {exc}", file=sys.stderr)
            return 2
        for name, (before, after) in done.items():
            print(f"{name}: {before} rows in the old files, {after} in the Delta table")
        print(
            "nothing to import"
            if not done
            else f"old files moved to {s.data_dir / 'lake-old-layout'}"
        )
        return 0
    try:
        ensure_lake(lake)
    except OldLayoutError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if args.lake_command == "maintain":
        unknown = [t for t in args.tables if t not in TABLES]
        if unknown:
            print(f"no such table: {', '.join(unknown)}", file=sys.stderr)
            return 2
        retention = (
            s.lake_vacuum_retention_h if args.retention_hours is None else args.retention_hours
        )
        while True:
            t0 = time.monotonic()
            for r in maintain(lake, retention, args.tables or None):
                if r.files_removed or r.vacuumed or not args.every:
                    print(
                        f"{r.table}: version {r.version}, compacted {r.files_removed} files into "
                        f"{r.files_added}, vacuumed {r.vacuumed}",
                        flush=True,
                    )
            if not args.every:
                return 0
            time.sleep(max(0.0, args.every - (time.monotonic() - t0)))
    if args.lake_command == "status":
        rows = [table_status(lake, t).row() for t in TABLES]
        if args.json:
            print(json.dumps(rows))
        else:
            cols = list(rows[0])
            print(format_table(cols, [tuple(r.values()) for r in rows]))
        return 0
    if args.table not in TABLES:
        print(f"no such table: {args.table} (tables: {', '.join(TABLES)})", file=sys.stderr)
        return 2
    rows = history(lake, args.table, args.limit)
    if args.json:
        print(json.dumps(rows))
    elif rows:
        print(format_table(list(rows[0]), [tuple(r.values()) for r in rows]))
    return 0
