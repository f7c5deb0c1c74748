"""`run.py participants …`: import a CSV, revoke/reissue/restore, tokens and QR codes.

Every command talks to the same Redis as the flows (REDIS_URL, or the embedded one a running
`run.py up` started for this DATA_DIR) and never writes state itself: changes go to
`participants:in` and the check-in flow applies them (see `core.participants`).

Exit codes: 0 done; 1 done but something was refused (bad rows, unknown or revoked id);
2 nothing done (unreadable file, no header, Redis unreachable).
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from core import keys
from core.settings import Settings

if TYPE_CHECKING:
    import redis

# Redis, pydantic records, cryptography and segno are imported by the commands that use them:
# run.py builds this parser for every command, and `run.py query` should not pay for them.

CHECKINS_FLOW = "checkins"


class ProgressBar:
    """`\\r[#####     ] 52% sending 52000/100000` on a terminal line (stderr), no package."""

    LABELS = {"send": "sending", "apply": "applied", "render": "rendering"}

    def __init__(self, stream: TextIO = sys.stderr, width: int = 30, enabled: bool = True):
        self.stream, self.width, self.enabled = stream, width, enabled
        self._shown = 0
        self._last: tuple[str, int] | None = None

    def __call__(self, phase: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        frac = done / total if total else 1.0
        pct = int(frac * 100)
        if self._last == (phase, pct) and done != total:
            return  # one update per percent is plenty (a pipe or a log file gets ~200 lines)
        self._last = (phase, pct)
        filled = int(frac * self.width)
        label = self.LABELS.get(phase, phase)
        text = f"[{'#' * filled}{' ' * (self.width - filled)}] {pct:3d}% {label} {done}/{total}"
        self.stream.write("\r" + text.ljust(self._shown))
        self.stream.flush()
        self._shown = len(text)

    def close(self) -> None:
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = 0


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def connect(s: Settings) -> redis.Redis | None:
    """A Redis client that answered PING, or None after saying why on stderr."""
    from redis.exceptions import RedisError

    from core.redis_conn import connect as connect_url

    try:
        url = s.effective_redis_url
    except RuntimeError as exc:  # no REDIS_URL and no embedded Redis for this DATA_DIR
        _err(f"error: {exc}")
        return None
    r = connect_url(url, socket_connect_timeout=3, socket_timeout=60)
    try:
        r.ping()
    except (RedisError, OSError) as exc:
        _err(
            f"error: cannot reach Redis at {url} ({exc}); "
            "start `uv run run.py up` first or set REDIS_URL"
        )
        return None
    return r


Command = Callable[[argparse.Namespace], int]


def with_redis(cmd: Callable[[argparse.Namespace, Settings, redis.Redis], int]) -> Command:
    """The command given the settings and a Redis that answered; exit 2 (said why) if none."""

    @functools.wraps(cmd)
    def run(args: argparse.Namespace) -> int:
        s = Settings()
        r = connect(s)
        return 2 if r is None else cmd(args, s, r)

    return run


def _flow_alive(r: redis.Redis) -> bool:
    return bool(r.exists(keys.heartbeat_key(CHECKINS_FLOW)))


def cmd_import(args: argparse.Namespace) -> int:
    from redis.exceptions import RedisError

    from core.participants import import_participants, parse_csv

    path = Path(args.file)
    try:
        data = path.read_bytes()
    except OSError as exc:
        _err(f"error: cannot read {path}: {exc.strerror or exc}")
        return 2
    try:
        parsed = parse_csv(data)
    except ValueError as exc:
        _err(f"error: {path}: {exc}")
        return 2
    for b in parsed.bad:
        _err(f"line {b.line}: {b.reason}")
    if parsed.bad_total > len(parsed.bad):
        _err(
            f"... and {parsed.bad_total - len(parsed.bad)} more bad rows "
            f"(the first {len(parsed.bad)} are listed)"
        )
    s = Settings()
    r = connect(s)
    if r is None:
        return 2
    wait = 0.0 if args.no_wait else args.wait
    if wait and not _flow_alive(r):
        _err(
            "warning: the check-in flow is not running (no heartbeat): the changes are queued "
            "in participants:in and applied when it starts (`uv run run.py up`)"
        )
        wait = 0.0
    bar = ProgressBar(enabled=not args.quiet)
    started = time.monotonic()
    try:
        res = import_participants(
            r, parsed.participants, parsed.bad, wait=wait, progress=bar, bad_total=parsed.bad_total
        )
    except (RedisError, OSError) as exc:
        bar.close()
        _err(f"error: Redis failed during the import: {exc}")
        return 2
    finally:
        bar.close()
    took = time.monotonic() - started
    print(
        f"imported: {res.new} new, {res.updated} updated, {res.unchanged} unchanged, "
        f"{res.bad_total} bad rows  ({parsed.rows} rows read, {took:.1f} s)"
    )
    if res.sent == 0:
        print("nothing to send: the check-in flow already holds every row as it is")
    elif res.applied:
        print(f"the check-in flow applied all {res.sent} changes")
    elif wait == 0:
        print(
            f"sent {res.sent} changes to {keys.PARTICIPANTS_IN}; not waiting for the check-in "
            "flow to apply them"
        )
    else:
        print(
            f"sent {res.sent} changes to {keys.PARTICIPANTS_IN}; the check-in flow had not "
            f"applied them all after {wait:g} s (it carries on; see `run.py participants` "
            "again or the dashboard)"
        )
    return 1 if res.bad else 0


@with_redis
def cmd_admin(args: argparse.Namespace, s: Settings, r: redis.Redis) -> int:
    from core.participant_admin import no_op, send_admin_op, wait_admin_op
    from core.participants import participant_index

    op = args.participants_command
    before = participant_index(r, args.id)
    if before is None:
        _err(f"error: no participant with id {args.id!r} (import it first)")
        return 1
    if no_op(op, before):
        state = "revoked" if before.get("revoked") else "active"
        print(f"{args.id}: already {state}; nothing to do")
        return 0
    send_admin_op(r, op, args.id, getattr(args, "reason", None))
    after = wait_admin_op(r, op, args.id, before, args.wait)
    if after is None:
        print(
            f"{args.id}: {op} sent to {keys.PARTICIPANTS_IN}; the check-in flow has not "
            f"applied it within {args.wait:g} s (is it running? `uv run run.py up`)"
        )
        return 0
    what = {
        "revoke": "revoked: its token is refused from now on",
        "restore": "restored: its token is accepted again",
        "reissue": f"reissued: new token serial {after.get('serial')}, the old token is refused "
        "as revoked (`run.py participants token ID` prints the new one)",
    }[op]
    print(f"{args.id}: {what} (applied by the check-in flow)")
    return 0


@with_redis
def cmd_erase(args: argparse.Namespace, s: Settings, r: redis.Redis) -> int:
    import getpass

    from storage.erasure import ErasureError, erase_participant

    by = args.by or f"cli:{getpass.getuser()}"
    try:
        res = erase_participant(s, r, args.id, by, args.wait)
    except LookupError as exc:
        _err(f"error: {exc}")
        return 1
    except ErasureError as exc:
        _err(f"error: {exc}")
        return 2
    rows = ", ".join(f"{t} {n}" for t, n in res.lake_rows.items())
    print(
        f"{args.id}: personal data erased (lake rows: {rows}; Redis entries: "
        f"{res.redis_entries}); recorded as erasure {res.erasure_id} by {by}"
    )
    return 0


@with_redis
def cmd_token(args: argparse.Namespace, s: Settings, r: redis.Redis) -> int:
    from core.participant_admin import mint_token
    from core.participants import participant_index

    entry = participant_index(r, args.id)
    if entry is None:
        _err(f"error: no participant with id {args.id!r}")
        return 1
    if entry.get("revoked"):
        _err(f"error: {args.id!r} is revoked; its token would be refused (restore it first)")
        return 1
    print(mint_token(s, args.id, entry))
    return 0


def cmd_public_key(args: argparse.Namespace) -> int:
    from core.tokens import PUBLIC_NAME, key_dir, load_signer

    s = Settings()
    load_signer(s.data_dir)  # creates the key pair on first use
    sys.stdout.write((key_dir(s.data_dir) / PUBLIC_NAME).read_text())
    return 0


@with_redis
def cmd_qr(args: argparse.Namespace, s: Settings, r: redis.Redis) -> int:
    from core.qr_export import FORMATS, badges, export_dir, export_zip

    items, revoked = badges(r, s)
    formats = FORMATS[args.format]
    bar = ProgressBar(enabled=not args.quiet)

    def progress(done: int, total: int) -> None:
        bar("render", done, total)

    started = time.monotonic()
    try:
        if args.zip == "-":
            res = export_zip(items, sys.stdout.buffer, formats, progress)
            sys.stdout.buffer.flush()
            where = "stdout"
        elif args.zip:
            with open(args.zip, "wb") as fh:
                res = export_zip(items, fh, formats, progress)
            where = args.zip
        else:
            res = export_dir(items, Path(args.out), formats, progress)
            where = args.out
    finally:
        bar.close()
    if not args.quiet or args.zip != "-":
        out = sys.stderr if args.zip == "-" else sys.stdout
        print(
            f"wrote {res.written} QR codes ({'+'.join(formats)}) and index.csv to {where} "
            f"in {time.monotonic() - started:.1f} s; skipped {revoked} revoked",
            file=out,
        )
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The `participants` command group (called from run.py's parser)."""
    p = sub.add_parser(
        "participants",
        help="import a CSV, revoke/reissue/restore, tokens and QR codes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ps = p.add_subparsers(dest="participants_command", required=True)
    imp = ps.add_parser(
        "import",
        help="import a participants CSV (header: id,name[,email,organization,category,...])",
        description="Each bad row is reported as `line N: reason` on stderr; the good rows are "
        "imported. Re-importing a file changes nothing; an edited row is an update. "
        "Exit 0: no bad rows; 1: some bad rows (good rows imported); 2: file-level error.",
    )
    imp.add_argument("file", help="CSV file (UTF-8; comma, semicolon or tab separated)")
    imp.add_argument(
        "--no-wait", action="store_true", help="send the changes and return without waiting"
    )
    imp.add_argument(
        "--wait", type=float, default=120.0, help="seconds to wait for the flow (default 120)"
    )
    imp.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    for name, text in (
        ("revoke", "revoke a participant: its token is refused from now on"),
        ("reissue", "issue a new token (new serial); the old one is refused as revoked"),
        ("restore", "undo a revocation"),
    ):
        a = ps.add_parser(name, help=text, description=text)
        a.add_argument("id", help="participant id")
        if name == "revoke":
            a.add_argument("--reason", help="shown at the gate (default: revoked by the organiser)")
        a.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the flow")
    er = ps.add_parser(
        "erase",
        help="erase a participant's personal data everywhere (lake, Redis, recovery stores)",
        description="Replaces name, e-mail and extra columns of the id in every lake table and "
        "in Redis, revokes its token, vacuums the replaced files and records the erasure "
        "(who, when, id) in the lake table `erasures`. Needs the check-in flow running.",
    )
    er.add_argument("id", help="participant id")
    er.add_argument("--by", default=None, help="who asks (recorded; default: the OS user)")
    er.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the flow")
    t = ps.add_parser("token", help="print a participant's current token")
    t.add_argument("id", help="participant id")
    ps.add_parser("public-key", help="print the public key (PEM) gates verify tokens with")
    qr = ps.add_parser(
        "qr",
        help="write every participant's QR code (and index.csv) to a folder or a zip",
        description="One file per participant that may enter (revoked ones are skipped), named "
        "after its id, plus index.csv (id,name,token,file). Rendered on all CPUs.",
    )
    dest = qr.add_mutually_exclusive_group(required=True)
    dest.add_argument("--out", help="folder to write the files into")
    dest.add_argument("--zip", help="zip file to write ('-': standard output)")
    qr.add_argument("--format", choices=["png", "svg", "both"], default="png")
    qr.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    handlers = {
        "import": cmd_import,
        "revoke": cmd_admin,
        "reissue": cmd_admin,
        "restore": cmd_admin,
        "token": cmd_token,
        "erase": cmd_erase,
        "public-key": cmd_public_key,
        "qr": cmd_qr,
    }
    return handlers[args.participants_command](args)
