"""Check-in benchmark: the check-in flow (+ its deciders) against the floor, same check-ins.

    uv run python -m bench.checkins --rounds 3          # 50,000 participants, 200,000 check-ins
    uv run python -m bench.checkins --checkins 50000 --participants 10000 --latency-seconds 10
    uv run python -m bench.checkins --profile /tmp/checkins.pyspy   # + where ours spends its time
    uv run python -m bench.checkins --shards 2           # ours with STREAM_SHARDS=2
    uv run python -m bench.checkins --shards 2 --processes 2   # ours as a 2-process cluster
    uv run python -m bench.checkins --help               # --workers, --deciders, --flow, ...

One run starts its own redis-server (never the shared one) and measures, on the same data:

* **ours**: `python -m bytewax.run flows.checkins:flow` started exactly as run.py starts it
  (`flow_argv` + `spawn` + `child_env`, recovery on, default settings except DATA_DIR,
  REDIS_URL and VENUE_CONFIG), `-w --workers`, with the decider processes it starts; with
  `--processes N` as an N-process Bytewax cluster on loopback (`run.py up --processes N`),
  its CPU summed over every process's tree;
* **the floor** (`--floor-worker`, in this file): the same check-in decision in the plain
  loop a strong engineer would write — XREAD COUNT 1000 of `checkins:in` / `participants:in`
  → `orjson.loads` → the scan's rules (dead letter with a named reason) → the nonce seen
  before? (replay the verdict / `nonce_conflict`) → Ed25519 signature check with
  `cryptography` (verified tokens cached) → event, gate, direction, opening hours → a dict of
  participant state (serial, revoked at, entered, inside) → the verdict: PUBLISH to the gate,
  SET `verdict:<nonce>`, XADD `checkins:verdicts`, one pipeline per batch; totals
  (`attendance:totals`) ≤ 4 Hz. No Bytewax, no lake, no minute windows, no recovery:
  state lives in the process (a restart would have to re-read the streams).

Setup: N participants (`sim.gates.synthetic_participants`, a few revoked) and M check-ins are
generated once into Redis DB 1 (`bench:participants`, `bench:checkins`). Each run starts from an
empty DB 0: `COPY bench:participants participants:in`, start the process, wait until every
participant is applied (`participants:index`), then `COPY bench:checkins checkins:in` — atomic,
so the clock starts with all M check-ins waiting and the process warm (start-up excluded). The
run is done when the verdicts of the last 200 check-ins exist (`verdict:<nonce>`); the totals
(`attendance:totals`) must then equal the statuses the generator expects, for ours and the
floor alike (the same decisions, counted once). CPU per check-in counts every process
involved: the measured process and its children (ours: the deciders) plus redis-server.

Latency: a producer XADDs at --rate (1,000/s) for --latency-seconds, a subscriber on
`checkins:verdict:*` measures XADD → verdict per scan (send time kept per nonce).

Output: both side by side (check-ins/s, CPU µs per check-in, peak RSS), then the summary line
ending with `ratio=<floor CPU per check-in / ours CPU per check-in>` (medians over --rounds,
order alternated).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from bench import harness as h
from bench.ingest import group_cpu, group_hwm_mib
from core import keys
from core.records import ParticipantOp
from core.settings import Settings
from core.tokens import TokenSigner, load_signer
from ops.processes import FLOWS, PROJECT_DIR, child_env, cluster_addresses, flow_argv, spawn
from ops.supervisor import ProcessGroup
from sim.gates import participant_id, synthetic_participants, tamper

FLOW = "checkins"
TUNING = (
    "snapshot_interval_s",
    "stream_retention_s",
    "max_checkin_bytes",
    "checkin_allowed_lateness_s",
    "checkin_deciders",
    "stream_shards",
    "lake_flush_rows",
    "lake_flush_age_s",
)
XREAD_COUNT = 1000  # RedisStreamSource's default
IDLE_MS = 10  # RedisStreamSource's XREAD BLOCK once drained
MASTER_DB = 1
MASTER_PARTICIPANTS = keys.name("bench:participants")
MASTER_CHECKINS = keys.name("bench:checkins")
SENTINELS = 200
EVENT_RATE = 1000  # preloaded check-ins per second of event time (a busy venue)
EVENT_ID = "bench-2026"
VENUE_YAML = f"""\
# Written by bench/checkins.py: six gates open around the clock (results never depend on the
# time of day), four scanning entries and three exits.
event:
  id: {EVENT_ID}
  name: Check-in benchmark
  start: 2026-01-01T00:00:00+00:00
  end: 2030-12-31T23:59:00+00:00
  timezone: Europe/Berlin
gates:
  - {{id: g1, name: Gate 1, capacity_per_minute: 60}}
  - {{id: g2, name: Gate 2, capacity_per_minute: 60}}
  - {{id: g3, name: Gate 3, capacity_per_minute: 40}}
  - {{id: g4, name: Gate 4, capacity_per_minute: 40}}
  - {{id: x1, name: Exit 1, capacity_per_minute: 60}}
  - {{id: x2, name: Exit 2, capacity_per_minute: 60}}
checkin_rules:
  allow_multiple_entries: false
  allow_entry_after_exit: true
  entry_gates: [g1, g2, g3, g4]
  exit_gates: [g1, x1, x2]
"""
ENTRY_GATES = ("g1", "g2", "g3", "g4")
EXIT_GATES = ("g1", "x1", "x2")


# --------------------------------------------------------------------------------------------
# Settings


#: Settings changed on the command line (--snapshot-interval); the rest stay at their defaults.
OVERRIDES: dict[str, Any] = {}


def tuning_values() -> dict[str, Any]:
    return {n: OVERRIDES.get(n, Settings.model_fields[n].default) for n in TUNING}


def default_tuning() -> dict[str, str]:
    """The flow's tuning settings (defaults unless overridden here), as environment variables:
    forced, so neither our environment nor a `.env` file changes what is measured."""
    return {n.upper(): str(v) for n, v in tuning_values().items()}


def shards() -> int:
    """STREAM_SHARDS of ours (--shards); the floor always reads the one plain stream."""
    return int(tuning_values()["stream_shards"])


def master(base: str, shard: int | None = None) -> str:
    """A master stream in DB 1: the whole input (`shard` None, the floor's), or ours' shard."""
    return base if shard is None else f"{base}:{keys.shard_tag(shard)}"


def copy_inputs(b: Bench, kind: str, base_master: str, base: str) -> None:
    """The preloaded input `base` into DB 0, as the side reads it: one stream for the floor
    (and ours with one shard), ours' `STREAM_SHARDS` streams otherwise, in one MULTI."""
    n = shards() if kind == "ours" else 1
    pipe = b.r1.pipeline(transaction=True)
    for k in range(n):
        src = master(base_master, k if n > 1 else None)
        pipe.execute_command("COPY", src, keys.sharded(base, k, n), "DB", 0, "REPLACE")
    if not all(pipe.execute()):
        raise h.BenchError(f"COPY {base_master} → DB 0 failed")


def bench_settings(data_dir: Path, url: str, venue: Path) -> Settings:
    return Settings(
        _env_file=None, data_dir=data_dir, redis_url=url, venue_config=venue, **tuning_values()
    )


# --------------------------------------------------------------------------------------------
# Test data


@dataclass
class Generator:
    """Scans of a crowd: first entries, exits, re-entries, and the rare refusals. Knows who
    is inside, so it knows each scan's verdict (`expected`)."""

    signer: TokenSigner
    ids: list[str]
    revoked: list[str]
    rng: random.Random
    tokens: dict[str, str] = field(default_factory=dict)
    unseen: list[str] = field(default_factory=list)
    inside: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    recent: list[str] = field(default_factory=list)  # JSON of recent accepted scans (retries)
    expected: Counter[str] = field(default_factory=Counter)  # status → scans (not replays)
    kinds: Counter[str] = field(default_factory=Counter)
    seq: int = 0
    retries: bool = True  # resend an earlier scan's JSON now and then (same nonce → replayed)
    with_ts: bool = True  # the gate's scan time in `ts` (else the flow uses the arrival time)

    def __post_init__(self) -> None:
        self.unseen = list(self.ids)
        self.rng.shuffle(self.unseen)

    def token(self, pid: str) -> str:
        t = self.tokens.get(pid)
        if t is None:
            t = self.tokens[pid] = self.signer.mint(EVENT_ID, pid, 0)
        return t

    def _take(self, pool: list[str]) -> str:
        i = self.rng.randrange(len(pool))
        pool[i], pool[-1] = pool[-1], pool[i]
        return pool.pop()

    def scan(self, nonce: str | None = None, ts_ms: int | None = None) -> str:
        """One check-in as JSON (its `data` field); `ts` is `ts_ms`, or now."""
        rng = self.rng
        self.seq += 1
        nonce = nonce or f"b{self.seq:08d}-{rng.getrandbits(32):08x}"
        r = rng.random()
        gate, direction, status = rng.choice(ENTRY_GATES), "in", "accepted"
        if r < 0.01 and self.recent and self.retries:
            self.kinds["retry (same nonce)"] += 1
            return self.rng.choice(self.recent)  # replayed: not counted again
        if r < 0.015:
            kind, status = "forged", "invalid_signature"
            token = tamper(self.token(rng.choice(self.ids)), rng)
        elif r < 0.018:
            kind, status = "garbage", "unknown_token"
            token = f"TICKET-{rng.randrange(10**9):09d}"
        elif r < 0.021:
            kind, status = "other event", "wrong_event"
            token = self.signer.mint("other-event-2025", rng.choice(self.ids), 0)
        elif r < 0.024 and self.revoked:
            kind, status = "revoked", "revoked"
            token = self.token(rng.choice(self.revoked))
        elif r < 0.044 and self.inside:
            kind, status = "duplicate", "duplicate"
            token = self.token(rng.choice(self.inside))
        else:
            r = rng.random()
            if self.unseen and (r < 0.55 or not self.inside):
                kind, pid = "entry", self._take(self.unseen)
                self.inside.append(pid)
            elif self.inside and (r < 0.8 or not self.left):
                kind, pid = "exit", self._take(self.inside)
                self.left.append(pid)
                gate, direction = rng.choice(EXIT_GATES), "out"
            else:
                kind, pid = "re-entry", self._take(self.left)
                self.inside.append(pid)
            token = self.token(pid)
        self.kinds[kind] += 1
        self.expected[status] += 1
        c = {"gate_id": gate, "token": token, "device_id": f"{gate}-scanner-1"}
        c |= {"method": "qr_scan", "direction": direction, "nonce": nonce}
        if self.with_ts:
            at = datetime.now(UTC) if ts_ms is None else datetime.fromtimestamp(ts_ms / 1000, UTC)
            c["ts"] = at.isoformat(timespec="milliseconds")
        doc = json.dumps(c, separators=(",", ":"))
        if status == "accepted" and rng.random() < 0.05:
            self.recent.append(doc)
            if len(self.recent) > 500:
                self.recent.pop(0)
        return doc


def preload(
    r1: redis.Redis, signer: TokenSigner, n_participants: int, n_checkins: int, seed: int
) -> tuple[Generator, list[str], list[str], int, float]:
    """Participants (+ revocations) and check-ins into DB 1. Returns the generator (expected
    verdicts), the revoked ids, the nonces of the last SENTINELS distinct check-ins, bytes, and
    the event-time span of the check-ins.

    Event time is spread as at a venue, not squeezed into the seconds the preload takes: the
    check-ins arrive at EVENT_RATE per second of event time (their stream entry ids, set
    explicitly, are their arrival times; `ts` is 30 ms earlier), ending now; the participants
    were registered (and the few revoked) a minute before the first scan. Squeezed, the
    flow's minute windows would see a backlog whose event time stands still while the wall
    clock runs, and after CHECKIN_ALLOWED_LATENESS_S every count would become a late
    correction — work a live venue never causes."""
    r1.flushdb()
    n = shards()
    people = synthetic_participants(n_participants, seed)
    ids = [p.id for p in people]
    rng = random.Random(seed)
    revoked = sorted(rng.sample(ids, max(1, n_participants // 500)))
    step_ms = 1000 / EVENT_RATE
    end_ms = int(time.time() * 1000) - 1000
    start_ms = end_ms - int(n_checkins * step_ms)
    reg_ms = start_ms - 60_000
    pipe = r1.pipeline(transaction=False)
    seq = 0
    for p in people:
        seq += 1
        op = ParticipantOp(op="upsert", participant=p).model_dump_json(exclude_none=True)
        pipe.execute_command("XADD", MASTER_PARTICIPANTS, f"{reg_ms}-{seq}", "data", op)
        if n > 1:
            k = keys.shard_of(f"p:{p.id}", n)
            pipe.execute_command(
                "XADD", master(MASTER_PARTICIPANTS, k), f"{reg_ms}-{seq}", "data", op
            )
        if len(pipe) >= 2000:
            pipe.execute()
    for pid in revoked:
        seq += 1
        op = ParticipantOp(op="revoke", id=pid, reason="bench").model_dump_json(exclude_none=True)
        pipe.execute_command("XADD", MASTER_PARTICIPANTS, f"{reg_ms + 1}-{seq}", "data", op)
        if n > 1:
            k = keys.shard_of(f"p:{pid}", n)
            pipe.execute_command(
                "XADD", master(MASTER_PARTICIPANTS, k), f"{reg_ms + 1}-{seq}", "data", op
            )
    pipe.execute()
    gen = Generator(signer, [i for i in ids if i not in set(revoked)], revoked, rng)
    size = 0
    docs: list[str] = []
    for i in range(n_checkins):
        at_ms = start_ms + int(i * step_ms)
        doc = gen.scan(ts_ms=at_ms - 30)
        size += len(doc)
        docs.append(doc)
        pipe.execute_command("XADD", MASTER_CHECKINS, f"{at_ms}-{i + 1}", "data", doc)
        if n > 1:
            pipe.execute_command(
                "XADD", master(MASTER_CHECKINS, scan_shard(doc, n)), f"{at_ms}-{i + 1}", "data", doc
            )
        if len(pipe) >= 2000:
            pipe.execute()
    pipe.execute()
    sentinels: list[str] = []
    pat = re.compile(r'"nonce":"([^"]+)"')
    for doc in reversed(docs):
        m = pat.search(doc)
        if m and m.group(1) not in sentinels:
            sentinels.append(m.group(1))
        if len(sentinels) >= SENTINELS:
            break
    return gen, revoked, sentinels, size, (end_ms - start_ms) / 1000


def scan_shard(doc: str | bytes, n: int) -> int:
    """The input shard of a scan's JSON (`keys.checkin_shard`, as the API computes it)."""
    try:
        c = json.loads(doc)
        return keys.checkin_shard(str(c.get("token")), str(c.get("gate_id")), n)
    except (ValueError, AttributeError):
        return keys.shard_of("", n)


# --------------------------------------------------------------------------------------------
# The floor: the same decision in a plain loop (runs as a subprocess: --floor-worker)

_NONCE_RE = re.compile(r"[A-Za-z0-9_.:\-]{8,128}")
_CHECKIN_FIELDS = frozenset(
    ("gate_id", "token", "ts", "device_id", "method", "direction", "nonce", "offline")
)
_METHODS = frozenset(("qr_scan", "manual", "beacon"))


def _checkin_reason(c: Any, id_match: Callable[[str], Any]) -> str | None:
    """The rules of a scan (`CheckIn`), each refusal with a named reason."""
    if type(c) is not dict:
        return "body: not a JSON object"
    if not c.keys() <= _CHECKIN_FIELDS:
        return f"{sorted(c.keys() - _CHECKIN_FIELDS)[0]}: extra field not permitted"
    g, tok, nonce = c.get("gate_id"), c.get("token"), c.get("nonce")
    if type(g) is not str or not id_match(g):
        return "gate_id: missing, or not an id"
    if type(tok) is not str or not 0 < len(tok) <= 1024:
        return "token: missing, or not 1-1024 characters"
    if type(nonce) is not str or not _NONCE_RE.fullmatch(nonce):
        return "nonce: missing, or not 8-128 of [A-Za-z0-9_.:-]"
    if c.get("direction", "in") not in ("in", "out"):
        return "direction: not 'in' or 'out'"
    if c.get("method", "qr_scan") not in _METHODS:
        return "method: not qr_scan, manual or beacon"
    d = c.get("device_id")
    if d is not None and (type(d) is not str or not 0 < len(d) <= 128):
        return "device_id: not 1-128 characters"
    if type(c.get("offline", False)) is not bool:
        return "offline: not a boolean"
    return None


def floor_worker() -> int:
    """XREAD both streams → orjson → rules → Ed25519 verify (cached per token) → decide
    against a dict of participants → SET + PUBLISH + XADD per verdict, totals ≤ 4 Hz."""
    import base64
    import hashlib

    import orjson
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization

    from core.records import CHECKIN_OUTCOMES, ID_PATTERN
    from core.settings import get_settings
    from core.shutdown import install_stop_handlers, stop_requested
    from core.tokens import PUBLIC_NAME, key_dir
    from core.venue import venue_for

    s = get_settings()
    install_stop_handlers()
    venue = venue_for(s.venue_config)
    zone, event_id = venue.event.zone, venue.event.id
    rules = venue.checkin_rules
    key = serialization.load_pem_public_key((key_dir(s.data_dir) / PUBLIC_NAME).read_bytes())
    r = redis.Redis.from_url(s.effective_redis_url, socket_timeout=5, socket_connect_timeout=5)
    id_match = re.compile(ID_PATTERN).match
    last = {keys.CHECKINS_IN: "0-0", keys.PARTICIPANTS_IN: "0-0"}
    # participant id → [name, serial, revoked_at (datetime|None), entered, inside]
    people: dict[str, list[Any]] = {}
    verified: dict[str, tuple[str, str, int] | str] = {}
    nonces: dict[str, tuple[tuple[str, str, str], dict[str, Any]]] = {}
    statuses: Counter[str] = Counter()
    inside = 0
    dirty = False
    next_tick = 0.0
    drained = False

    def check_token(token: str) -> tuple[str, str, int] | str:
        hit = verified.get(token)
        if hit is not None:
            return hit
        head, dot, tail = token.partition(".")
        got: tuple[str, str, int] | str
        try:
            payload = base64.urlsafe_b64decode(head + "=" * (-len(head) % 4))
            sig = base64.urlsafe_b64decode(tail + "=" * (-len(tail) % 4))
            ev, pid, serial = payload.decode().split("\x1f")
            claims = (ev, pid, int(serial))
            if not (dot and ev and pid and serial.isdigit() and len(serial) <= 9):
                raise ValueError
        except ValueError:
            return "unknown_token"  # not cached: garbage is cheap to refuse again
        canonical = base64.urlsafe_b64encode(payload).rstrip(b"=").decode() == head
        if (
            len(sig) != 64
            or not canonical
            or base64.urlsafe_b64encode(sig).rstrip(b"=").decode() != tail
        ):
            got = "invalid_signature"
        else:
            try:
                key.verify(sig, payload)
                got = claims
            except InvalidSignature:
                got = "invalid_signature"
        if len(verified) >= 100_000:
            verified.clear()
        verified[token] = got
        return got

    def decide(
        c: dict[str, Any], eid: str, received: datetime
    ) -> tuple[str, str | None, str | None]:
        """(status, participant id, name) of a new scan; updates the participant."""
        nonlocal inside
        claims = check_token(c["token"])
        if type(claims) is str:
            return claims, None, None
        ev, pid, serial = claims
        if ev != event_id:
            return "wrong_event", pid, None
        gate_id, direction = c["gate_id"], c.get("direction", "in")
        gate = venue.gate(gate_id)
        if gate is None:
            return "unknown_gate", pid, None
        if not venue.may_scan(gate_id, direction):
            return "wrong_direction", pid, None
        ts = c["_ts"]
        if not gate.is_open(ts, zone):
            return "gate_closed", pid, None
        p = people.get(pid)
        if p is None:
            return "unknown_token", pid, None
        name, cur, revoked_at, entered, is_in = p
        if serial < cur or (revoked_at is not None and ts >= revoked_at):
            return "revoked", pid, name
        if serial > cur:
            return "unknown_token", pid, name
        if direction == "in":
            if (
                not entered
                or rules.allow_multiple_entries
                or (not is_in and rules.allow_entry_after_exit)
            ):
                p[3] = p[4] = True
                inside += 0 if is_in else 1
                return "accepted", pid, name
            return ("duplicate" if is_in else "reentry_not_allowed"), pid, name
        if is_in:
            p[4] = False
            inside -= 1
            return "accepted", pid, name
        return "exit_without_entry", pid, name

    def dead(cmds: list[tuple], reason: str, stream: str, eid: str, data: bytes | None) -> None:
        cmds.append(
            ("XADD", keys.CHECKINS_DEAD, "MAXLEN", "~", keys.DEAD_MAXLEN, "*", "reason", reason,
             "origin", stream, "origin_id", eid, "data", data or b"")
        )  # fmt: skip

    def verdict_out(cmds: list[tuple], v: dict[str, Any], store: bool = True) -> None:
        doc = orjson.dumps(v)
        cmds.append(("PUBLISH", keys.verdict_channel(v["gate_id"]), doc))
        if store:
            cmds.append(("SET", keys.verdict_key(v["nonce"]), doc, "EX", keys.VERDICT_TTL_S))
            cmds.append(
                ("XADD", keys.CHECKINS_VERDICTS, "MAXLEN", "~", keys.CHECKINS_VERDICTS_MAXLEN,
                 "*", "data", doc)
            )  # fmt: skip

    while not stop_requested():
        reply = r.xread(last, count=XREAD_COUNT, block=IDLE_MS if drained else None)
        drained = not reply
        cmds: list[tuple] = []
        now = datetime.now(UTC)
        for skey, entries in reply or []:
            stream = skey.decode()
            for eid_b, fields in entries:
                eid = eid_b.decode()
                data = fields.get(b"data")
                received = datetime.fromtimestamp(int(eid.partition("-")[0]) / 1000, UTC)
                try:
                    doc = orjson.loads(data) if data else None
                except orjson.JSONDecodeError as exc:
                    dead(cmds, f"body: {exc}", stream, eid, data)
                    continue
                if stream == keys.PARTICIPANTS_IN:
                    op = doc.get("op") if type(doc) is dict else None
                    part = doc.get("participant") if op == "upsert" else None
                    pid = part.get("id") if type(part) is dict else doc.get("id") if op else None
                    if type(pid) is not str or not pid:
                        dead(cmds, "participant op without an id", stream, eid, data)
                        continue
                    p = people.get(pid)
                    if op == "upsert":
                        name = part.get("name")
                        if p is None:
                            people[pid] = p = [name, 0, None, False, False]
                        p[0] = name
                    elif p is None:
                        dead(cmds, f"{op}: no participant with id {pid!r}", stream, eid, data)
                        continue
                    elif op == "revoke":
                        p[2] = p[2] or received
                    elif op == "restore":
                        p[2] = None
                    elif op == "reissue":
                        p[1] += 1
                    else:
                        dead(cmds, f"op: unknown {op!r}", stream, eid, data)
                        continue
                    idx = {"serial": p[1], "revoked": p[2] is not None, "name": p[0]}
                    cmds.append(("HSET", keys.PARTICIPANTS_INDEX, pid, orjson.dumps(idx)))
                    continue
                reason = _checkin_reason(doc, id_match)
                ts = received
                if reason is None and doc.get("ts") is not None:
                    try:
                        ts = datetime.fromisoformat(doc["ts"])
                        ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts
                    except (TypeError, ValueError):
                        reason = "ts: not an ISO 8601 time"
                if reason is not None:
                    dead(cmds, reason, stream, eid, data)
                    continue
                doc["_ts"] = ts
                use = (doc["token"], doc["gate_id"], doc.get("direction", "in"))
                seen = nonces.get(doc["nonce"])
                if seen is not None:
                    first, v = seen
                    if first == use:  # a retried upload: the verdict it got, counted once
                        verdict_out(cmds, {**v, "replayed": True, "decided_at": now}, False)
                    else:
                        status = "nonce_conflict"
                        answer = {**v, "status": status, "reason": CHECKIN_OUTCOMES[status]}
                        answer |= {"checkin_id": eid, "gate_id": use[1], "direction": use[2]}
                        verdict_out(cmds, answer, False)
                        dead(cmds, f"{status}: nonce {doc['nonce']!r}", stream, eid, data)
                    continue
                status, pid, name = decide(doc, eid, received)
                statuses[status] += 1
                dirty = True
                offline = bool(doc.get("offline", False))
                v = {
                    "checkin_id": eid,
                    "nonce": doc["nonce"],
                    "gate_id": doc["gate_id"],
                    "direction": use[2],
                    "status": status,
                    "reason": CHECKIN_OUTCOMES[status],
                    "participant_id": pid
                    if name is not None or status != "unknown_token"
                    else None,
                    "participant_name": name,
                    "ts": ts,
                    "received_at": received,
                    "decided_at": now,
                    "method": doc.get("method", "qr_scan"),
                    "device_id": doc.get("device_id"),
                    "offline": offline,
                    "flagged": offline and status != "accepted",
                    "revision": 0,
                    "replayed": False,
                    "token_fp": hashlib.sha256(doc["token"].encode()).hexdigest()[:16],
                }
                nonces[doc["nonce"]] = (use, v)
                verdict_out(cmds, v)
            if entries:
                last[stream] = entries[-1][0].decode()
        mono = time.monotonic()
        if dirty and mono >= next_tick:  # totals at most 4 times a second
            doc = {"inside": inside, "statuses": dict(statuses), "updated_at": now}
            cmds.append(("SET", keys.ATTENDANCE_TOTALS, orjson.dumps(doc)))
            dirty, next_tick = False, mono + 0.25
        if cmds:
            pipe = r.pipeline(transaction=False)
            for c in cmds:
                pipe.execute_command(*c)
            pipe.execute(raise_on_error=False)
    r.close()
    return 0


# --------------------------------------------------------------------------------------------
# Running ours or the floor


@dataclass
class Bench:
    workdir: Path
    url: str
    redis_pid: int
    r0: redis.Redis  # DB 0: what the processes use
    r1: redis.Redis  # DB 1: the preloaded masters
    venue: Path
    keys_dir: Path
    n_participants: int
    revoked: list[str]
    workers: int
    flow: str | None = None  # another import string for ours (to measure a change)
    processes: int = 1  # ours as a Bytewax cluster of this many processes


def start(b: Bench, kind: str, phase: str) -> h.Run:
    """A fresh DB 0 with the participants waiting, then ours or the floor."""
    b.r0.flushdb()
    copy_inputs(b, kind, MASTER_PARTICIPANTS, "participants:in")
    h.wait_aof_idle(b.r0)
    b.r0.bgrewriteaof()  # a small AOF: no rewrite starts during the measurement
    time.sleep(0.1)
    h.wait_aof_idle(b.r0)
    data_dir = b.workdir / phase
    data_dir.mkdir(parents=True)
    shutil.copytree(b.keys_dir, data_dir / "keys")  # the tokens' key pair
    s = bench_settings(data_dir, b.url, b.venue)
    extra = {"VENUE_CONFIG": str(b.venue), **default_tuning()}
    if kind == "ours":
        argv = flow_argv(s, FLOW, b.workers)
        if b.flow:  # `module:attr`, or `path/to/file.py:attr`
            target, _, attr = b.flow.rpartition(":")
            if target.endswith(".py"):
                path = Path(target).resolve()
                extra["PYTHONPATH"] = f"{PROJECT_DIR}{os.pathsep}{path.parent}"
                target = path.stem
            argv[argv.index(FLOWS[FLOW])] = f"{target}:{attr}"
    else:
        argv = [sys.executable, "-m", "bench.checkins", "--floor-worker"]
    env = child_env(s, b.url, **extra)
    log = b.workdir / f"{phase}.log"
    ru0 = h.children_cpu()
    t0 = time.perf_counter()
    if kind == "ours" and b.processes > 1:  # a cluster, as `run.py up --processes N` starts it
        addrs = cluster_addresses(b.processes)
        argvs = [flow_argv(s, FLOW, b.workers, i, addrs) for i in range(len(addrs))]
        group = ProcessGroup([spawn(a, env, log) for a in argvs])
        return h.Run(kind, data_dir, group, log, argvs[0], t0, ru0)  # type: ignore[arg-type]
    return h.Run(kind, data_dir, spawn(argv, env, log), log, argv, t0, ru0)


def wait_participants(b: Bench, run: h.Run, timeout: float = 600) -> float:
    """Until every participant (and revocation) is applied; returns the seconds it took."""
    deadline = time.perf_counter() + timeout
    while True:
        if run.proc.poll() is not None:
            raise h.fail(run, f"exited with {run.proc.returncode} while applying participants")
        if b.r0.hlen(keys.PARTICIPANTS_INDEX) >= b.n_participants:
            raws = b.r0.hmget(keys.PARTICIPANTS_INDEX, b.revoked)
            if all(raw and json.loads(raw).get("revoked") for raw in raws):
                return time.perf_counter() - run.t0
        if time.perf_counter() > deadline:
            raise h.fail(run, f"participants not applied after {timeout:.0f} s")
        time.sleep(0.05)


def wait_idle(run: h.Run, below: float = 0.6, timeout: float = 120) -> tuple[float, float]:
    """Until the process stays under `below` of a core for two seconds in a row (after
    applying the participants ours still writes them to the lake and snapshots their states).
    Returns (seconds waited, share of a core it used in the last second). Not 0: an idle
    check-in flow holding 50,000 participants keeps ~40 % of a core busy (see README)."""
    t0 = time.perf_counter()
    last = group_cpu(run.proc) or 0.0
    quiet, used = 0, 1.0
    while time.perf_counter() - t0 < timeout and quiet < 2:
        time.sleep(1.0)
        cpu = group_cpu(run.proc)
        if cpu is None:
            raise h.fail(run, f"exited with {run.proc.poll()} while settling")
        used, last = cpu - last, cpu
        quiet = quiet + 1 if used < below else 0
    return time.perf_counter() - t0, used


def totals_doc(r: redis.Redis) -> dict[str, Any]:
    raw = r.get(keys.ATTENDANCE_TOTALS)
    return json.loads(raw) if raw else {}


def throughput(
    b: Bench,
    kind: str,
    phase: str,
    n: int,
    sentinels: list[str],
    expected: Counter[str],
    profile: Path | None = None,
) -> dict[str, Any]:
    """Participants applied, then all check-ins at once; until the last ones have verdicts."""
    run = start(b, kind, phase)
    spy: subprocess.Popen | None = None
    try:
        apply_s = wait_participants(b, run)
        settle_s, idle_cpu = wait_idle(run)
        if profile is not None:
            spy = start_profiler(run.proc.pid, profile)
        sentinel_keys = [keys.verdict_key(x) for x in sentinels]
        first_key = None
        mcpu = h.MachineCpu(b.redis_pid)
        cpu0 = group_cpu(run.proc) or 0.0
        t_copy = time.perf_counter()
        copy_inputs(b, kind, MASTER_CHECKINS, "checkins:in")
        t_start = time.perf_counter()
        first_entry = b.r0.xrange(keys.sharded("checkins:in", 0, shards()), count=1)
        if first_entry:
            m = re.search(rb'"nonce":"([^"]+)"', first_entry[0][1][b"data"])
            first_key = keys.verdict_key(m.group(1).decode()) if m else None
        t_first = None
        timeout = max(300.0, n / 500)
        while True:
            now = time.perf_counter()
            if t_first is None and first_key and b.r0.exists(first_key):
                t_first = now
            if b.r0.exists(*sentinel_keys) == len(sentinel_keys):
                t_done = now
                break
            if run.proc.poll() is not None:
                raise h.fail(run, f"exited with {run.proc.returncode} before the end")
            if now - t_start > timeout:
                got = b.r0.exists(*sentinel_keys)
                raise h.fail(run, f"not done after {timeout:.0f} s ({got}/{len(sentinel_keys)})")
            time.sleep(0.005)
        cpu = (group_cpu(run.proc) or 0.0) - cpu0
        machine = mcpu.since(cpu)
        hwm = group_hwm_mib(run.proc)
        if spy is not None:
            stop_profiler(spy)
            spy = None
        # The totals must add up to what the generator expects (emitted at most every 250 ms).
        want = {k: v for k, v in expected.items() if v}
        deadline = time.perf_counter() + 15
        doc = totals_doc(b.r0)
        while doc.get("statuses") != want and time.perf_counter() < deadline:
            time.sleep(0.1)
            doc = totals_doc(b.r0)
        t_totals = time.perf_counter()
        rc = h.stop(run)
    finally:
        if spy is not None:
            stop_profiler(spy)
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait(10)
    got = doc.get("statuses") or {}
    return {
        "n": n,
        "apply_s": apply_s,
        "settle_s": settle_s,
        "idle_cpu": idle_cpu,
        "copy_s": t_start - t_copy,
        "first_s": (t_first - t_start) if t_first else None,
        "done_s": t_done - t_start,
        "cps": n / (t_done - t_start),
        "cpu_s": cpu,
        "us_per": 1e6 * cpu / n,
        "us_per_all": 1e6 * (cpu + machine["redis_s"]) / n,
        "rss": hwm,
        "machine": machine,
        "totals_ok": got == want,
        "totals_s": t_totals - t_start,
        "statuses": got,
        "rc": rc,
        "argv": run.argv,
    }


class Verdicts(h.Listener):
    """Subscribed to `checkins:verdict:*`: receive time of each `lat-<seq>` verdict."""

    PAT = re.compile(rb'"nonce":"lat-(\d+)"')

    def __init__(self, url: str, n: int):
        super().__init__(url, keys.verdict_channel("*"), pattern=True)
        self.recv_ns: list[int] = [0] * n
        self.received = self.other = 0

    def on_message(self, data: bytes) -> None:
        now = time.time_ns()
        m = self.PAT.search(data)
        seq = int(m.group(1)) if m else len(self.recv_ns)
        if seq < len(self.recv_ns) and not self.recv_ns[seq]:
            self.recv_ns[seq] = now
            self.received += 1
        else:
            self.other += 1


def latency(
    b: Bench,
    kind: str,
    phase: str,
    gen: Generator,
    rate: float,
    seconds: float,
    timeline: Path | None = None,
) -> dict[str, Any]:
    """Participants applied; then XADD at `rate` for `seconds`; XADD → verdict per scan.

    `timeline`: also write `sent_s,latency_ms` per scan there (CSV), to see *when* the slow
    verdicts happen (e.g. at every epoch boundary)."""
    n = max(1, int(rate * seconds))
    subs = Verdicts(b.url, n)
    subs.start()
    subs.ready.wait(10)
    run = start(b, kind, phase)
    try:
        wait_participants(b, run)
        wait_idle(run)  # settled, as a venue is between two scans
        cpu0 = group_cpu(run.proc) or 0.0
        mcpu = h.MachineCpu(b.redis_pid)
        docs = [gen.scan(nonce=f"lat-{i:08d}") for i in range(n)]  # made before timing
        sent_ns = [0] * n
        n_in = shards() if kind == "ours" else 1
        streams = [keys.sharded("checkins:in", scan_shard(d, n_in), n_in) for d in docs]

        def send(i: int, due: int) -> None:
            pipe = b.r0.pipeline(transaction=False)
            for j in range(i, due):
                sent_ns[j] = time.time_ns()
                pipe.execute_command("XADD", streams[j], "*", "data", docs[j])
            pipe.execute()

        t_start = time.perf_counter()
        h.paced(n, rate, send)
        produce_s = time.perf_counter() - t_start
        cpu = (group_cpu(run.proc) or 0.0) - cpu0
        machine = mcpu.since(cpu)
        deadline = time.perf_counter() + 15
        while subs.received < n and time.perf_counter() < deadline:
            if run.proc.poll() is not None:
                raise h.fail(run, "exited during the latency run")
            time.sleep(0.05)
        rc = h.stop(run)
    finally:
        subs.stop()
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait(10)
    lat = sorted(
        (subs.recv_ns[i] - sent_ns[i]) / 1e6 for i in range(n) if subs.recv_ns[i] and sent_ns[i]
    )
    if timeline is not None:
        with timeline.open("w") as fh:
            fh.write("sent_s,latency_ms\n")
            for i in range(n):
                if subs.recv_ns[i] and sent_ns[i]:
                    sent_s = (sent_ns[i] - sent_ns[0]) / 1e9
                    fh.write(f"{sent_s:.4f},{(subs.recv_ns[i] - sent_ns[i]) / 1e6:.3f}\n")
    return {
        "n": n,
        "rate": n / produce_s,
        "received": subs.received,
        "other": subs.other,
        "ms": {p: h.pct(lat, p) for p in (50, 95, 99, 100)} if lat else {},
        "over_20": sum(1 for x in lat if x >= 20.0),
        "cpu_pct": 100 * cpu / produce_s,
        "machine": machine,
        "rc": rc,
    }


# --------------------------------------------------------------------------------------------
# Profiling (py-spy) of ours during a throughput run


def _py_spy() -> list[str]:
    exe = shutil.which("py-spy")
    return [exe] if exe else ["uv", "run", "--with", "py-spy", "py-spy"]


def start_profiler(pid: int, out: Path) -> subprocess.Popen:
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [*_py_spy(), "record", "--format", "raw", "-r", "250", "-o", str(out)]
    argv += ["--subprocesses", "-p", str(pid)]  # + the flow's decider process
    if not os.environ.get("BENCH_PYSPY_ACTIVE"):  # only on-CPU samples: where the CPU goes
        argv.append("--idle")
    if os.environ.get("BENCH_PYSPY_NATIVE"):  # also the Rust/C frames (slower sampling)
        argv.append("--native")
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # py-spy attaches
    return proc


def stop_profiler(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


#: What each sample is charged to (first match from the leaf up), for the profile summary.
PROFILE_BUCKETS = (
    ("redis: XREAD (incl. BLOCK when drained)", ("xread",)),
    ("decider: MULTI/EXEC commit (states, verdicts, outcomes)", ("CheckinDecider._commit",)),
    ("dataflow: unpickle committed outcomes", ("unpickle", "_loads")),
    ("redis: sink pipelines (PUBLISH/SET/HSET)", ("_Partition.write_batch",)),
    ("lake: Parquet writes (LakeSink)", ("_LakePartition",)),
    ("parse: CheckIn JSON validation", ("model_validate_json",)),
    ("parse: token check (Ed25519, cache)", ("TokenVerifier.check", "_split")),
    ("decide: _verdict dicts", ("_verdict",)),
    ("decide: other (history, replay, summary)", ("decide", "_replay", "summary", "step")),
    ("participants: apply_op", ("apply_op",)),
    ("verdict_commands (to_json)", ("verdict_commands",)),
    ("totals_step / add", ("totals_step", "attendance_totals")),
    ("minute windows", ("counts_by_window", "TumblingCounter", "_window_row", "late_rows")),
    ("lambdas in flows/checkins.py", ("<lambda>",)),
    ("parse_input (rest)", ("parse_input",)),
)


def summarize_profile(path: Path) -> list[tuple[str, float]]:
    """Share of samples per bucket; the rest is Bytewax/timely (Rust, pickling snapshots)."""
    counts: Counter[str] = Counter()
    total = 0
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    for line in lines:
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        frames = [f.split(" (")[0] for f in stack.split(";")[1:]]
        total += int(n)
        bucket = "Bytewax runtime / other (Rust, snapshots, exchange)"
        for f in reversed(frames):
            hit = next((name for name, pats in PROFILE_BUCKETS if any(p in f for p in pats)), None)
            if hit:
                bucket = hit
                break
        counts[bucket] += int(n)
    return [(k, 100 * v / total) for k, v in counts.most_common()] if total else []


# --------------------------------------------------------------------------------------------
# Output


def fmt_tp(x: dict[str, Any]) -> dict[str, str]:
    return {
        "apply": f"{x['apply_s']:.1f} s; settled {x['settle_s']:.0f} s later",
        "idle": f"{100 * x['idle_cpu']:.0f} % of a core",
        "copy": f"{x['copy_s'] * 1000:.0f} ms",
        "first": "?" if x["first_s"] is None else f"{x['first_s'] * 1000:.0f} ms",
        "done": f"{x['done_s']:.2f} s",
        "cps": f"{x['cps']:,.0f}",
        "cpu": f"{x['cpu_s']:.2f} s = {x['us_per']:.0f} µs/check-in",
        "rss": h.mib(x["rss"]),
        "redis": f"{x['machine']['redis_s']:.2f} s",
        "cpu_all": f"{x['us_per_all']:.0f} µs/check-in",
        "machine": h.machine_line(x["machine"]),
        "totals": ("yes" if x["totals_ok"] else f"NO: {x['statuses']}")
        + f" (at {x['totals_s']:.2f} s)",
        "rc": str(x["rc"]),
    }


TP_ROWS = h.rows(
    """
apply          start → all participants applied (excluded)
idle           CPU while idle, before the check-ins
copy           COPY of the check-ins into checkins:in
first          COPY → first verdict
done           COPY → last verdicts (all decided)
cps            check-ins/s (sustained, excl. start-up)
cpu            CPU of the process (+ children) for them
rss            peak RSS of the process (+ children)
redis          redis-server CPU meanwhile
cpu_all        CPU per check-in, all processes (ratio=)
machine        machine CPU, avg cores busy
totals         totals = expected statuses
rc             exit code after SIGINT
"""
)


def fmt_lat(x: dict[str, Any]) -> dict[str, str]:
    ms = x["ms"]
    return {
        "sent": f"{x['n']:,} at {x['rate']:,.0f}/s",
        "received": f"{x['received']:,}" + (f" (+{x['other']} other)" if x["other"] else ""),
        "pcts": h.latency_ms(ms),
        "over": f"{x['over_20']:,} ({100 * x['over_20'] / max(1, x['received']):.1f} %)",
        **h.tail_cells(x),
    }


LAT_ROWS = (
    h.rows(
        """
sent           check-ins sent
received       verdicts received
pcts           XADD → verdict ms p50 / p95 / p99 / max
over           verdicts ≥ 20 ms
"""
    )
    + h.TAIL_ROWS
)


# --------------------------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = h.parser(
        "bench.checkins",
        "Check-ins/s, CPU per check-in and verdict latency of the check-in flow "
        "against the floor (a plain loop making the same decisions), on a private "
        "redis-server. Last line: ratio=<floor CPU per check-in / ours>.",
    )
    p.add_argument("--checkins", type=int, default=200_000, help="check-ins preloaded (200,000)")
    p.add_argument("--participants", type=int, default=50_000, help="participants (50,000)")
    h.add_common_args(p, "check-ins", 1000.0, 20.0)
    p.add_argument("--workers", type=int, default=1, help="Bytewax workers of ours, -w (1)")
    p.add_argument(
        "--timeline",
        metavar="PREFIX",
        help="latency: write each scan's send time and latency to PREFIX.<ours|floor>.csv",
    )
    p.add_argument(
        "--profile",
        type=Path,
        help="py-spy the flow during the first throughput round into this file (raw format) "
        "and print where its time goes",
    )
    p.add_argument(
        "--snapshot-interval",
        type=int,
        help="SNAPSHOT_INTERVAL_S for ours (Bytewax epoch/snapshot interval, whole seconds; "
        "default: the setting's default)",
    )
    p.add_argument(
        "--deciders", type=int, help="CHECKIN_DECIDERS for ours (default: the setting's default)"
    )
    p.add_argument(
        "--shards",
        type=int,
        help="STREAM_SHARDS for ours (default: the setting's default, 1): N > 1 preloads "
        "checkins:in:{k} / participants:in:{k} and runs N deciders, one per shard",
    )
    p.add_argument(
        "--flow",
        help="run this flow as ours instead of flows.checkins:flow (module:attr or "
        "path/to/file.py:attr), to measure a change against the same floor",
    )
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        help="ours as a Bytewax cluster of N processes on loopback, as `run.py up --processes "
        "N` starts it (1); its CPU: every process's tree (the deciders included)",
    )
    p.add_argument("--floor-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.checkins < SENTINELS or args.participants < 10:
        p.error(f"--checkins must be ≥ {SENTINELS} and --participants ≥ 10")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.floor_worker:
        return floor_worker()
    if args.snapshot_interval is not None:
        OVERRIDES["snapshot_interval_s"] = args.snapshot_interval
    if args.deciders is not None:
        OVERRIDES["checkin_deciders"] = args.deciders
    if args.shards is not None:
        OVERRIDES["stream_shards"] = args.shards

    started = time.perf_counter()
    return h.run_bench(
        lambda work: _bench(args, work, started),
        args.workdir,
        args.keep,
        "venueflow-bench-checkins-",
    )


def _bench(args: argparse.Namespace, workdir: Path, started: float) -> int:
    h.print_header("Venueflow check-in benchmark (bench/checkins.py): ours against the floor")
    venue = workdir / "venue.yaml"
    venue.write_text(VENUE_YAML)
    signer = load_signer(workdir / "signer")
    keys_dir = workdir / "signer" / "keys"

    redis_proc, url = h.start_redis(workdir / "redis-data")
    try:
        r0 = redis.Redis.from_url(url)
        # (a `db=` argument loses against the URL's "/0")
        r1 = redis.Redis.from_url(f"{url.rsplit('/', 1)[0]}/{MASTER_DB}")
        r0.config_set("auto-aof-rewrite-percentage", 0)
        info = {**r0.info("server"), **r0.info("memory")}
        print(
            f"redis     private redis-server {info['redis_version']} ({info['mem_allocator']}, "
            f"{info['executable']}) at {url}, "
            "AOF + fsync everysec as ops.embedded_redis runs it; automatic AOF rewrites off "
            "(one BGREWRITEAOF before each run instead, so none runs during a measurement)"
        )
        tuning = " ".join(f"{k}={v}" for k, v in default_tuning().items())
        what = "defaults" if not OVERRIDES else f"defaults except {', '.join(OVERRIDES)}"
        print(f"settings  {what} (forced, ignoring env and .env): {tuning}")
        print(
            f"          venue {venue} (6 gates, open 24 h); ours: -w {args.workers}, "
            f"{args.processes} process(es), recovery on"
        )
        print(f"work dir  {workdir}{'' if args.keep or args.workdir else ' (deleted at exit)'}")

        print(
            f"\npreloading {args.participants:,} participants and {args.checkins:,} check-ins "
            f"into DB {MASTER_DB} ...",
            flush=True,
        )
        t = time.perf_counter()
        gen, revoked, sentinels, size, span = preload(
            r1, signer, args.participants, args.checkins, args.seed
        )
        h.wait_aof_idle(r0)
        mix = ", ".join(f"{k} {v:,}" for k, v in gen.kinds.most_common())
        exp = ", ".join(f"{k} {v:,}" for k, v in gen.expected.most_common())
        print(
            f"preloaded in {time.perf_counter() - t:.1f} s; {len(revoked)} participants revoked; "
            f"check-ins avg {size / args.checkins:.0f} B, spread over {span:.0f} s of event "
            f"time ({EVENT_RATE:,}/s)\n  mix: {mix}\n  expected: {exp} "
            f"(+ {gen.kinds['retry (same nonce)']:,} replayed)",
            flush=True,
        )
        b = Bench(
            workdir, url, redis_proc.pid, r0, r1, venue, keys_dir, args.participants, revoked,
            args.workers, args.flow, args.processes,
        )  # fmt: skip

        tp: dict[str, list[dict[str, Any]]] = {"ours": [], "floor": []}
        for rnd in range(args.rounds):
            order = ("ours", "floor") if rnd % 2 == 0 else ("floor", "ours")
            for kind in order:
                print(f"throughput round {rnd + 1}: {kind} ...", flush=True)
                prof = args.profile if (kind == "ours" and rnd == 0) else None
                x = throughput(
                    b, kind, f"tp{rnd + 1}-{kind}", args.checkins, sentinels, gen.expected, prof
                )
                tp[kind].append(x)
                print(
                    f"  {x['cps']:,.0f} check-ins/s, {x['us_per']:.0f} CPU µs each, totals "
                    f"{'ok' if x['totals_ok'] else 'WRONG'}, exit {x['rc']}",
                    flush=True,
                )
        r1.unlink(MASTER_CHECKINS)  # frees the preload's memory before the latency part

        lat: dict[str, dict[str, Any]] = {}
        if not args.no_latency:
            for kind in ("ours", "floor"):
                print(
                    f"latency: {kind}, {args.rate:,.0f} check-ins/s for "
                    f"{args.latency_seconds:.0f} s ...",
                    flush=True,
                )
                lat[kind] = _latency_run(b, args, kind, signer)
        r0.close()
        r1.close()
    finally:
        h.stop_redis(redis_proc)

    report(args, tp, lat, started)
    return 0


def _latency_run(b: Bench, args: argparse.Namespace, kind: str, signer: TokenSigner) -> dict:
    """One latency run over fresh scans: no retries (every nonce is new), no `ts` (the gate's
    clock is Redis's: `ts` = arrival), the same participants."""
    revoked = set(b.revoked)
    ids = [participant_id(i) for i in range(1, args.participants + 1)]
    gen = Generator(
        signer, [i for i in ids if i not in revoked], b.revoked, random.Random(args.seed + 1)
    )
    gen.retries, gen.with_ts = False, False
    timeline = Path(f"{args.timeline}.{kind}.csv") if args.timeline else None
    return latency(b, kind, f"lat-{kind}", gen, args.rate, args.latency_seconds, timeline)


def report(
    args: argparse.Namespace,
    tp: dict[str, list[dict[str, Any]]],
    lat: dict[str, dict[str, Any]],
    started: float,
) -> None:
    names = {
        "ours": f"ours (Bytewax flow, {args.processes} process(es) -w {args.workers}, + deciders)",
        "floor": "floor (plain loop, --floor-worker)",
    }
    for rnd in range(args.rounds):
        title = (
            f"Throughput: {args.checkins:,} check-ins, {args.participants:,} participants "
            "applied first (start-up excluded)"
        )
        title += f" (round {rnd + 1})" if args.rounds > 1 else ""
        cols = [fmt_tp(tp["ours"][rnd]), fmt_tp(tp["floor"][rnd])]
        print(h.side_by_side(title, [names["ours"], names["floor"]], TP_ROWS, cols))
    if lat:
        title = (
            f"Latency: {args.rate:,.0f} check-ins/s for {args.latency_seconds:.0f} s, "
            "XADD checkins:in → verdict on checkins:verdict:<gate>"
        )
        cols = [fmt_lat(v) for v in lat.values()]
        print(h.side_by_side(title, [names[k] for k in lat], LAT_ROWS, cols))

    if args.profile is not None:
        shares = summarize_profile(args.profile)
        print(f"\n== Where ours spends its time (py-spy, round 1, {args.profile}) ==")
        if shares:
            print(h.table(["bucket", "% of samples"], [[k, f"{v:.1f}"] for k, v in shares]))
        else:
            print("no samples (py-spy not available or not allowed to attach)")

    print("\nnotes")
    print(f"  ours ran as: python {' '.join(tp['ours'][0]['argv'][1:])}")
    print(
        "  floor: python -m bench.checkins --floor-worker: XREAD COUNT 1000 → orjson → rules → "
        "nonce book → Ed25519 (cached) → dict of participants → PUBLISH + SET + XADD per "
        "verdict, one pipeline per batch; totals ≤ 4 Hz; no Bytewax, no lake, no windows."
    )
    warn = h.busy_warning(
        [x["machine"] for v in tp.values() for x in v] + [x["machine"] for x in lat.values()]
    )
    if warn:
        print(warn)
    print(f"\ntotal run time {time.perf_counter() - started:.0f} s")
    if "ours" in lat and lat["ours"]["ms"]:
        p99 = lat["ours"]["ms"][99]
        verdict = "met" if p99 < 20 else "NOT met"
        print(f"goal verdict p99 < 20 ms at {args.rate:,.0f}/s: ours {p99:.1f} ms → {verdict}")
    side = {
        k: {
            "rate": h.median([x["cps"] for x in v]),
            "cpu_us": h.median([x["us_per_all"] for x in v]),
        }
        for k, v in tp.items()
    }
    ok = all(x["totals_ok"] for v in tp.values() for x in v)
    rss = {k: max((x["rss"] or 0) for x in v) for k, v in tp.items()}
    extra = f"peak RSS {rss['ours']:.0f} / {rss['floor']:.0f} MiB, totals {'ok' if ok else 'WRONG'}"
    print(h.summary("bench.checkins", "check-in", side["ours"], side["floor"], extra))


if __name__ == "__main__":
    sys.exit(main())
