"""Erasing a participant's personal data everywhere we keep it (`run.py participants erase`).

In order, so that nothing writes the data back behind us:
1. the check-in flow gets an `upsert` with the personal fields replaced by `ERASED` (and a
   `revoke`), so its state, `participants:index` and every later lake row hold no name;
2. once the flow has committed what it buffered, every lake table with personal columns tied to
   a participant (`Table.subject`) has them overwritten for that id with a Delta `update`, then
   the replaced files are vacuumed at once (retention 0), the log is checkpointed and old log
   entries cleaned. File statistics never held personal columns
   (`delta.dataSkippingStatsColumns`), so the log holds no copy;
3. Redis: stream entries that carry the old values are deleted (they have been consumed: the
   flow has applied the later erase operation), string and JSON values are rewritten, then the
   AOF is rewritten so its files no longer hold the old writes;
4. the flows' recovery stores (SQLite) are vacuumed, so freed pages holding old snapshots go;
5. the erasure is recorded in the lake table `erasures`: who, when, which id, rows per table —
   never the erased values.

A query reading an older table version at the moment of the vacuum can fail (that is the
price of erasing now rather than after `LAKE_VACUUM_RETENTION_H`). `DATA_DIR/lake-old-layout`
(left by a migration) is not touched: delete it.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import redis
from redis.cluster import RedisCluster

from core import keys
from core.participants import participant_digest, participant_index, send_ops
from core.records import Participant, ParticipantOp
from core.settings import Settings
from storage.catalog import connect_memory, query
from storage.lake import Lake, LakeWriter, open_table, retrying
from storage.lake_maintenance import checkpoint_table, vacuum_table
from storage.tables import TABLES

log = logging.getLogger(__name__)

ERASED = "(erased)"
_SCAN = 500
_PICKLE = b"\x80"  # pickled values (decider state) cannot be edited as text


class ErasureError(RuntimeError):
    pass


@dataclass
class ErasureResult:
    erasure_id: str
    participant_id: str
    by: str
    at: datetime
    lake_rows: dict[str, int] = field(default_factory=dict)
    redis_entries: int = 0


def _sql_str(v: str) -> str:
    return "'" + v.replace("'", "''") + "'"


def personal_values(lake: Lake, pid: str, index: dict | None) -> set[str]:
    """Every personal value this id has had in the lake (names, e-mails) and in the index."""
    con = connect_memory(lake)
    try:
        vals: set[str] = set()
        for t in TABLES.values():
            if not t.subject:
                continue
            for col in sorted(t.personal - {"extra"}):
                sql = f"SELECT DISTINCT {col} FROM delta_scan(?) WHERE {t.subject} = ?"
                _, rows = query(con, sql, [lake.table_uri(t.name), pid])
                vals.update(r[0] for r in rows if r[0])
    finally:
        con.close()
    if index and index.get("name"):
        vals.add(index["name"])
    vals.discard(ERASED)
    return vals


def _latest(lake: Lake, pid: str) -> dict:
    con = connect_memory(lake)
    try:
        cols, rows = query(con, "SELECT * FROM participants WHERE id = ?", [pid])
    finally:
        con.close()
    return dict(zip(cols, rows[0], strict=True)) if rows else {}


def erase_in_flow(r: redis.Redis, lake: Lake, pid: str, before: dict, wait: float) -> None:
    """Step 1: the flow's state and index forget the values (and the token is revoked)."""
    latest = _latest(lake, pid)
    p = Participant(
        id=pid,
        name=ERASED,
        organization=latest.get("organization"),
        category=latest.get("category"),
    )
    ops = [ParticipantOp(op="upsert", participant=p)]
    if not before.get("revoked"):
        ops.append(ParticipantOp(op="revoke", id=pid, reason="personal data erased"))
    send_ops(r, ops)
    digest = participant_digest(p)
    deadline = time.monotonic() + wait
    while True:
        now = participant_index(r, pid) or {}
        if now.get("digest") == digest and now.get("revoked") and now.get("name") == ERASED:
            return
        if time.monotonic() > deadline:
            raise ErasureError(
                f"the check-in flow did not apply the erasure of {pid} within {wait:g} s "
                "(is it running? `uv run run.py up`); nothing was erased yet"
            )
        time.sleep(0.1)


def erase_in_lake(lake: Lake, pid: str) -> dict[str, int]:
    """Step 2: overwrite the personal columns of the id's rows, then vacuum and clean the log."""
    out = {}
    for t in TABLES.values():
        if not t.subject or not t.personal:
            continue
        sets = {c: ("'{}'" if c == "extra" else _sql_str(ERASED)) for c in t.personal}
        if "email" in t.personal:
            sets["email"] = "NULL"
        pred = f"{t.subject} = {_sql_str(pid)}"

        def update(name=t.name, sets=sets, pred=pred) -> dict:
            return open_table(lake, name).update(updates=sets, predicate=pred)

        metrics = retrying(f"{t.name}: erasure", update)
        out[t.name] = int(metrics.get("num_updated_rows", 0))
        checkpoint_table(lake, t.name)
        vacuum_table(lake, t.name, 0)
    return out


def _hit(raw: bytes | str | None, needles: list[bytes]) -> bool:
    if raw is None:
        return False
    b = raw.encode() if isinstance(raw, str) else raw
    return any(n in b for n in needles)


def _hit_any(fields: dict, needles: list[bytes]) -> bool:
    return any(_hit(v, needles) for v in fields.values())


def needles_of(values: set[str]) -> list[bytes]:
    """The byte forms a value takes in Redis and files: UTF-8, JSON-escaped, pickled."""
    out = set()
    for v in values:
        out.add(v.encode())
        out.add(json.dumps(v)[1:-1].encode())
        out.add(json.dumps(v, ensure_ascii=False)[1:-1].encode())
    return sorted(out)


def _scrub_text(raw: bytes, values: set[str]) -> bytes:
    text = raw.decode("utf-8", errors="surrogateescape")
    for v in sorted(values, key=len, reverse=True):
        for form in {v, json.dumps(v)[1:-1], json.dumps(v, ensure_ascii=False)[1:-1]}:
            text = text.replace(form, ERASED)
    return text.encode("utf-8", errors="surrogateescape")


def erase_in_redis(r: redis.Redis, values: set[str]) -> int:
    """Step 3: delete stream entries and rewrite values that hold any of `values`; rewrite the
    AOF. Returns the entries/values changed."""
    needles = needles_of(values)
    changed = 0
    # Only this deployment's keys (REDIS_NAMESPACE): another's are not ours to change.
    for key in r.scan_iter(match=f"{keys.PREFIX}*" if keys.PREFIX else None, count=_SCAN):
        kind = r.type(key)
        if kind == b"stream":
            start = "-"
            while entries := r.xrange(key, min=start, count=_SCAN):
                gone = [eid for eid, fields in entries if _hit_any(fields, needles)]
                if gone:
                    changed += r.xdel(key, *gone)
                start = "(" + entries[-1][0].decode()  # exclusive: after the last one read
        elif kind == b"string":
            raw = r.get(key)
            if _hit(raw, needles):
                r.set(key, _scrub_text(raw, values), keepttl=True)
                changed += 1
        elif kind == b"hash":
            for f, v in r.hgetall(key).items():
                if _hit(v, needles) and v.startswith(_PICKLE):
                    log.warning("%s[%s] holds an erased value in a pickle; left", key, f)
                elif _hit(v, needles):
                    r.hset(key, f, _scrub_text(v, values))
                    changed += 1
        elif kind == b"list":
            for i, v in enumerate(r.lrange(key, 0, -1)):
                if _hit(v, needles):
                    r.lset(key, i, _scrub_text(v, values))
                    changed += 1
    rewrite_redis_files(r)
    return changed


def rewrite_redis_files(r: redis.Redis | RedisCluster, timeout: float = 60) -> None:
    """Rewrite the AOF (and the RDB, if one is kept) so old writes leave Redis's files: on
    each master of a Redis Cluster (each keeps its own files)."""
    if isinstance(r, RedisCluster):
        for node in r.get_primaries():
            _rewrite_files(r.get_redis_connection(node), timeout)
    else:
        _rewrite_files(r, timeout)


def _rewrite_files(r: redis.Redis, timeout: float) -> None:
    info = r.info("persistence")
    if info.get("aof_enabled"):
        r.bgrewriteaof()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = r.info("persistence")
        if not info.get("aof_rewrite_in_progress") and not info.get("aof_rewrite_scheduled"):
            break
        time.sleep(0.1)
    if r.config_get("save").get("save"):
        r.save()


def vacuum_recovery(s: Settings) -> None:
    """Step 4: VACUUM each flow's recovery store (old snapshots' freed pages go)."""
    for db in sorted(s.recovery_dir.glob("*/part-*.sqlite3")):
        for attempt in range(50):
            try:
                con = sqlite3.connect(db, timeout=5)
                try:
                    con.execute("VACUUM")
                    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                finally:
                    con.close()
                break
            except sqlite3.OperationalError as exc:  # the flow is writing its snapshot
                if attempt == 49:
                    log.warning("recovery store %s not vacuumed: %s", db, exc)
                time.sleep(0.1)


def record(lake: Lake, res: ErasureResult) -> None:
    """Step 5: the erasure's record in the lake (no erased values)."""
    w = LakeWriter(lake, "erasures", "erase")
    row = {
        "erasure_id": res.erasure_id,
        "participant_id": res.participant_id,
        "by": res.by,
        "at": res.at,
        "rows": json.dumps(res.lake_rows, sort_keys=True),
    }
    w.write([row], (w.committed() or -1) + 1)


def erase_participant(
    s: Settings, r: redis.Redis, pid: str, by: str, wait: float = 60.0
) -> ErasureResult:
    """Erase one participant's personal data (see the module docstring)."""
    before = participant_index(r, pid)
    if before is None:
        raise LookupError(f"no participant with id {pid!r}")
    lake = s.lake
    values = personal_values(lake, pid, before)
    res = ErasureResult(uuid.uuid4().hex, pid, by, datetime.now(UTC))
    erase_in_flow(r, lake, pid, before, wait)
    # What the flow buffered before the erasure reaches the lake within the flush age and a
    # snapshot; then the lake update covers it (and values seen only there).
    time.sleep(s.lake_flush_age_s + 2 * s.snapshot_interval_s + 0.5)
    values |= personal_values(lake, pid, None)
    res.lake_rows = erase_in_lake(lake, pid)
    res.redis_entries = erase_in_redis(r, values) if values else 0
    time.sleep(2 * s.snapshot_interval_s + 0.5)  # the flows snapshot their erased state
    vacuum_recovery(s)
    record(lake, res)
    return res
