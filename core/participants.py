"""Participants in: CSV parsing with a reason per bad line, and the import into the check-in flow.

Every way in (`run.py participants import`, the dashboard's upload, `POST /api/participants`)
uses these functions. An import never writes state itself: it sends `ParticipantOp`s to the
`participants:in` stream, and the check-in flow applies them (so the flow's decision state and
the lake's `participants` table can never disagree). Rows whose digest equals what the flow
already holds (`participants:index`) are not even sent: re-importing a file changes nothing,
and an edited row is sent as an update.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import redis
from pydantic import ValidationError
from pydantic_core import to_json

from core import keys
from core.records import Participant, ParticipantOp, reason_of

#: CSV header names accepted for each field (case-insensitive); other columns go to `extra`.
COLUMNS: dict[str, tuple[str, ...]] = {
    "id": ("id", "participant_id", "participantid", "ticket_id"),
    "name": ("name", "full_name", "fullname"),
    "email": ("email", "e-mail", "mail"),
    "organization": ("organization", "organisation", "company"),
    "category": ("category", "ticket_type", "type"),
}
CHUNK = 2_000
#: Bad rows an import reports with line and reason; beyond these it only counts them. 50 MB of
#: bad rows made a 134 MB JSON answer and +530 MB of dashboard memory before (issue 10).
MAX_REPORTED_BAD = 1_000


def participant_digest(p: Participant) -> str:
    """Same data → same digest: how an import and the flow tell an update from a repeat."""
    return hashlib.sha256(to_json(p.model_dump())).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class BadRow:
    line: int
    reason: str


@dataclass
class ParsedCsv:
    """Good participants, the first `MAX_REPORTED_BAD` bad rows, and how many were bad."""

    participants: list[Participant] = field(default_factory=list)
    bad: list[BadRow] = field(default_factory=list)
    rows: int = 0
    bad_total: int = 0

    def add_bad(self, line: int, reason: str | Callable[[], str]) -> None:
        """Count a bad row; keep its line and reason while fewer than `MAX_REPORTED_BAD` are
        kept (`reason` may be a function, then only called for a kept row)."""
        self.bad_total += 1
        if len(self.bad) < MAX_REPORTED_BAD:
            self.bad.append(BadRow(line, reason if isinstance(reason, str) else reason()))

    def take(self, line: int, doc: object, first: dict[str, int], where: str) -> None:
        """Validate one row (`line`: its line or item number): keep it, or count it bad with the
        reason — a repeated id names where the first one was (`first` maps id → `line`)."""
        try:
            p = Participant.model_validate(doc)
        except ValidationError as exc:
            self.add_bad(line, lambda exc=exc: reason_of(exc))
            return
        if p.id in first:
            self.add_bad(line, f"duplicate id {p.id!r}, first {where} {first[p.id]}")
            return
        first[p.id] = line
        self.participants.append(p)


def parse_csv(data: str | bytes) -> ParsedCsv:
    """Parse a participants CSV (header row first). Each bad row is reported with its line
    number and reason; the good rows are still returned. A file-level problem (no header, no
    `id`/`name` column) raises ValueError with the reason."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ValueError(f"the file is not UTF-8 text: {exc}") from None
    elif data.startswith("\ufeff"):
        data = data[1:]
    try:
        dialect = csv.Sniffer().sniff(data[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(data), dialect)
    try:
        header = next(reader)
    except StopIteration:
        raise ValueError("the file is empty: expected a header row (id,name,...)") from None
    mapping: dict[int, str] = {}
    extra_cols: dict[int, str] = {}
    for i, col in enumerate(header):
        norm = col.strip().lower()
        target = next((f for f, names in COLUMNS.items() if norm in names), None)
        if target and target not in mapping.values():
            mapping[i] = target
        elif norm:
            extra_cols[i] = col.strip()
    missing = [f for f in ("id", "name") if f not in mapping.values()]
    if missing:
        raise ValueError(f"the header has no {' or '.join(missing)} column (got: {header})")
    out = ParsedCsv()
    first_line: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        if not any(c.strip() for c in row):
            continue
        out.rows += 1
        if len(row) > len(header):
            out.add_bad(line, f"{len(row)} fields, the header has {len(header)}")
            continue
        doc: dict[str, object] = {f: row[i] for i, f in mapping.items() if i < len(row)}
        doc["extra"] = {n: row[i] for i, n in extra_cols.items() if i < len(row) and row[i]}
        out.take(line, doc, first_line, "on line")
    return out


@dataclass
class ImportResult:
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    bad: list[BadRow] = field(default_factory=list)  # the first MAX_REPORTED_BAD
    bad_total: int = 0  # every bad row
    applied: bool = False  # the flow had applied every change when we stopped waiting

    @property
    def sent(self) -> int:
        return self.new + self.updated

    def as_dict(self) -> dict[str, object]:
        return {
            "new": self.new,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "bad": [{"line": b.line, "reason": b.reason} for b in self.bad],
            "bad_total": self.bad_total,
            "applied": self.applied,
        }


Progress = Callable[[str, int, int], None]  # (phase, done, total)


def _index(r: redis.Redis, ids: list[str]) -> list[dict | None]:
    out: list[dict | None] = []
    for i in range(0, len(ids), CHUNK):
        for raw in r.hmget(keys.PARTICIPANTS_INDEX, ids[i : i + CHUNK]):
            out.append(json.loads(raw) if raw else None)
    return out


def send_ops(r: redis.Redis, ops: list[ParticipantOp], progress: Progress | None = None) -> None:
    """XADD the ops to `participants:in`, pipelined in chunks."""
    for i in range(0, len(ops), CHUNK):
        pipe = r.pipeline(transaction=False)
        for op in ops[i : i + CHUNK]:
            data = op.model_dump_json(exclude_none=True)
            pipe.xadd(keys.participants_in(op.id), {"data": data})
        pipe.execute()
        if progress:
            progress("send", min(i + CHUNK, len(ops)), len(ops))


def wait_applied(
    r: redis.Redis,
    expected: dict[str, str],
    timeout: float,
    progress: Progress | None = None,
) -> bool:
    """Wait until `participants:index` shows each id with its expected digest."""
    pending = dict(expected)
    total = len(pending)
    deadline = time.monotonic() + timeout
    while pending:
        ids = list(pending)
        for pid, cur in zip(ids, _index(r, ids), strict=True):
            if cur and cur.get("digest") == pending[pid]:
                del pending[pid]
        if progress:
            progress("apply", total - len(pending), total)
        if not pending:
            break
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def import_participants(
    r: redis.Redis,
    participants: Iterable[Participant],
    bad: Iterable[BadRow] = (),
    wait: float = 60.0,
    progress: Progress | None = None,
    bad_total: int | None = None,
) -> ImportResult:
    """Send new and changed participants to the check-in flow; wait up to `wait` s for it.
    `bad` are the reported bad rows, `bad_total` how many there were (default: `len(bad)`)."""
    res = ImportResult(bad=list(bad))
    res.bad_total = len(res.bad) if bad_total is None else bad_total
    todo = list(participants)
    digests = [participant_digest(p) for p in todo]
    current = _index(r, [p.id for p in todo])
    ops, expected = [], {}
    for p, d, cur in zip(todo, digests, current, strict=True):
        if cur is None:
            res.new += 1
        elif cur.get("digest") == d:
            res.unchanged += 1
            continue
        else:
            res.updated += 1
        ops.append(ParticipantOp(op="upsert", participant=p))
        expected[p.id] = d
    send_ops(r, ops, progress)
    res.applied = wait_applied(r, expected, wait, progress) if wait > 0 else not expected
    return res


def participant_index(r: redis.Redis, pid: str) -> dict | None:
    """What the flow holds for one participant: digest, serial, revoked, name (or None)."""
    raw = r.hget(keys.PARTICIPANTS_INDEX, pid)
    return json.loads(raw) if raw else None
