"""The check-in decision, as plain functions: the flow and the benchmark baseline run this code.

`decide` is the one function that owns a scan's verdict (as pretix's check-in service does):
it names every outcome in `core.records.CHECKIN_OUTCOMES`. State is per participant (the flow
keys scans by the participant the token claims), so every rule that depends on history —
duplicates, re-entry, exit without entry — sees all of that participant's scans, in event time.

Offline gates upload scans late with their original `ts`. A participant's accepted scans are
kept in `ts` order and the rules are replayed over them whenever a scan lands in the middle:
the earliest scan wins, and an earlier verdict that changes is re-issued as a *revision*
(flagged, since the gate already let that person through). Refusals that do not depend on
history (token, gate, revocation) are final.
"""

from __future__ import annotations

import copyreg
import io
import json
import marshal
import pickle
import re
from bisect import insort
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta, timezone
from operator import attrgetter
from typing import Any

from pydantic_core import to_json

from connectors.redis_streams import StreamBatch
from core import keys
from core.participants import participant_digest
from core.records import CHECKIN_OUTCOMES, CheckIn, ParticipantOp
from core.tokens import TokenClaims, TokenProblem, TokenVerifier, fingerprint, peek
from core.venue import Venue
from flows.dead_letters import DeadLetters, dead_letter, entry_data
from flows.events_logic import Group, entry_time, window_start

#: Scans kept per participant; older ones are folded into `Base` (a 200-scan history is far
#: beyond any real visitor, and bounds what a stolen ticket scanned in a loop can cost).
MAX_HISTORY = 200
#: Refused scans remembered per key, so a retried refused nonce is answered the same.
MAX_REFUSED = 64
#: How long a nonce stays bound to the scan it first named: as long as that scan's verdict is
#: kept under `verdict:<nonce>`.
NONCE_TTL_MS = keys.VERDICT_TTL_S * 1000


def _by_fields(cls: type) -> type:
    """Pickle a slots dataclass as (class, field values): the `__getstate__` dataclasses
    writes for slots classes runs in Python per object, and `Entry` / `Count` objects are
    pickled by the thousand per batch (measured with `pickle.dumps` of one `Entry`: 42 → 20 µs,
    on the loaded 2-core machine)."""
    values = attrgetter(*(f.name for f in fields(cls)))
    cls.__reduce__ = lambda self: (cls, values(self))  # type: ignore[method-assign]
    return cls


def _timezone(tz: timezone) -> tuple:
    """UTC as `getattr(timezone, "utc")`: pickle's generic path for `timezone` costs more
    than the datetime holding it (measured: 17 µs for `datetime.UTC` alone, 19.5 → 3.1 µs for
    an aware datetime with this reducer)."""
    return (getattr, (timezone, "utc")) if tz is UTC else tz.__reduce_ex__(2)


_DISPATCH = {**copyreg.dispatch_table, timezone: _timezone}


def _pickle(obj: Any) -> bytes:
    """`pickle.dumps`, but UTC written the cheap way (`_timezone`)."""
    buf = io.BytesIO()
    p = pickle.Pickler(buf, pickle.HIGHEST_PROTOCOL)
    p.dispatch_table = _DISPATCH
    p.dump(obj)
    return buf.getvalue()


def dumps(obj: Any) -> bytes:
    """Participant states and decided batches as the decider commits them; plain `pickle.loads`
    reads the result (what a restarting decider and the dataflow call), and reads what earlier
    versions wrote (plain pickles of the same classes).

    A `ParticipantState` is written compactly: its fields as tuples of str/int/bool with every
    datetime as µs since the epoch (`_state_tuple`), `marshal`led (C, no per-object reducers),
    wrapped in a few pickle opcodes that call `_from_compact` on load. Pickled object by object
    a state cost 31-40 µs (~2 scans of history: ~10 µs per `Entry`, nearly all in its two
    datetimes' reducers and class look-ups), compactly 16; loading 26 → 23 µs; 1,100 → 822
    bytes. Per check-in over both deciders: 29.6-34.2 → 9.0-11.0 µs. Measured with
    `parse_input` + `step` over 20,000 generated scans of 5,000 participants, 2 shards
    (/tmp micro-benchmark, load 6-8); state pickling was 11 % of the deciders' and flow's
    on-CPU py-spy samples in `bench.checkins`. The same for `Decided` batches lost: written
    7.2 → 4.8 µs per outcome, but read by the dataflow 4.7 → 14.8 µs (building the verdict
    dicts, datetimes and `Count`s in Python), so batches stay pickled. Anything the compact
    form does not cover (a non-UTC datetime, a verdict with other fields) is pickled."""
    try:
        if type(obj) is ParticipantState:
            return _wrap(("S1", _state_tuple(obj)))
    except (_NotCompact, ValueError):  # ValueError: a value marshal does not write
        pass
    return _pickle(obj)


class _NotCompact(Exception):
    """A value the compact form does not cover: pickle the object instead."""


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
#: GLOBAL flows.checkins_logic._from_compact, BINBYTES <marshal>, TUPLE1, REDUCE, STOP: the
#: pickle of `_from_compact(<marshal>)`, written without a Pickler.
_HEAD = b"\x80\x04cflows.checkins_logic\n_from_compact\nB"
_TAIL = b"\x85R."


def _wrap(value: tuple) -> bytes:
    data = marshal.dumps(value, 4)
    return b"".join((_HEAD, len(data).to_bytes(4, "little"), data, _TAIL))


def _from_compact(data: bytes) -> Any:
    """What `pickle.loads` calls for a compact state (keep it: committed states name it)."""
    kind, value = marshal.loads(data)
    if kind == "S1":
        return _state_from(value)
    raise ValueError(f"unknown compact encoding {kind!r}")


def _us(dt: Any) -> int:
    if type(dt) is not datetime or dt.tzinfo is not UTC:
        raise _NotCompact
    return (dt - _EPOCH) // _US


def _us_opt(dt: Any) -> int | None:
    return None if dt is None else _us(dt)


def _dt(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _dt_opt(us: int | None) -> datetime | None:
    return None if us is None else _EPOCH + timedelta(microseconds=us)


@_by_fields
@dataclass(frozen=True, slots=True)
class NonceUse:
    """The scan a nonce names: its first use's ticket (fingerprint), gate and direction, and
    when it arrived (its `checkins:in` entry time, ms)."""

    token_fp: str
    gate_id: str
    direction: str
    at_ms: int

    def differs(self, other: NonceUse) -> list[str]:
        """What makes `other` another scan than this one (empty: the same scan, retried)."""
        return [
            what
            for what, a, b in (
                ("ticket", self.token_fp, other.token_fp),
                ("gate", self.gate_id, other.gate_id),
                ("direction", self.direction, other.direction),
            )
            if a != b
        ]


@dataclass(slots=True)
class Noted:
    """A nonce's use waiting for `NonceBook.resolve`, and the scan to tell (None: not ours)."""

    nonce: str
    use: NonceUse
    scan: Scan | None = None


class NonceBook:
    """The first use of every nonce, over all participants: a nonce names one scan.

    State is per participant, but a reused nonce may come with another participant's ticket
    (another key, maybe another decider shard). Every shard reads every `checkins:in` entry in
    the same order, so each books the same first uses from the input alone, and commits them
    with its state and offsets (`keys.decider_nonce_key`, one key per nonce): replays after a
    crash decide the same. A use older than `NONCE_TTL_MS` (by entry time, so also
    deterministic) names nothing any more; Redis drops the key some time after
    (`NONCE_KEY_TTL_S`).

    The book holds only the uses since the last `take_changes` (the batch being decided);
    earlier ones are read from Redis by `committed` — one call (the decider's: one MGET) per
    `parse_input`. Before, the book kept a day of nonces in memory, ~350 bytes each: the
    deciders grew by 6.75 MiB/min in the 30-minute soak. Measured (`uv run python -m
    bench.checkins --checkins 200000 --participants 20 --no-latency --deciders 1`, the
    decider's RSS sampled with psutil; 20 participants so their histories are full early and
    only the book can grow): 79.5 → 147.0 MiB over the 200,000 scans before, 78.8 → 81.4 MiB
    now (bench/README.md). Without `committed` (tests replaying a stream in-process) the book
    remembers every use itself: do not call `take_changes` then.
    """

    def __init__(self, committed: Callable[[list[str]], list[bytes | None]] | None = None):
        self._committed = committed
        self.added: dict[str, NonceUse] = {}  # first uses since the last `take_changes`
        self._pending: list[Noted] = []

    def note(self, nonce: str, use: NonceUse) -> Noted:
        """A valid check-in's nonce, in input order; `resolve` tells the scan set on the
        returned note (if any: another shard's scan is only booked) what it names."""
        noted = Noted(nonce, use)
        self._pending.append(noted)
        return noted

    def resolve(self) -> None:
        """Set each noted scan's `first_use`: the first use of its nonce (its own use if the
        nonce is new or its first use expired), from this batch or as committed before."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        stored: dict[str, NonceUse] = {}
        if self._committed is not None:
            ask = list({p.nonce for p in pending if p.nonce not in self.added})
            if ask:
                for n, raw in zip(ask, self._committed(ask), strict=True):
                    if raw is not None:
                        stored[n] = NonceUse(*json.loads(raw))
        for p in pending:
            first = self.added.get(p.nonce) or stored.get(p.nonce)
            if first is None or p.use.at_ms - first.at_ms > NONCE_TTL_MS:
                first = self.added[p.nonce] = p.use
            if p.scan is not None:
                p.scan.first_use = first

    def take_changes(self) -> dict[str, bytes]:
        """Nonce → encoded first use, for those first used since the last call, to commit.
        JSON, which `resolve` reads: `to_json` writes one in 0.46 µs of CPU, `json.dumps` 2.3."""
        added = {
            n: to_json([u.token_fp, u.gate_id, u.direction, u.at_ms]) for n, u in self.added.items()
        }
        self.added = {}
        return added


@dataclass(slots=True)
class Scan:
    """A check-in as it reaches `decide`: the record, its stream entry id and arrival time,
    and what the token check (done before keying, by the same verifier) found."""

    checkin_id: str
    checkin: CheckIn
    received_at: datetime
    token: TokenClaims | TokenProblem
    first_use: NonceUse | None = None  # the scan its nonce names (None: not checked)
    token_fp: str = ""  # `fingerprint(checkin.token)`, if already computed

    @property
    def ts(self) -> datetime:
        return self.checkin.ts or self.received_at


@_by_fields
@dataclass(slots=True, order=True)
class Entry:
    """A scan that passed the stateless checks, in the participant's history (ts order)."""

    ts: datetime
    order: tuple[int, int]  # the stream entry id as numbers: breaks ties of equal ts
    checkin_id: str = field(compare=False)
    nonce: str = field(compare=False)
    gate_id: str = field(compare=False)
    direction: str = field(compare=False)
    received_at: datetime = field(compare=False)
    method: str = field(compare=False)
    device_id: str | None = field(compare=False)
    offline: bool = field(compare=False)
    token_fp: str = field(compare=False)
    status: str = field(compare=False, default="")
    revision: int = field(compare=False, default=0)
    flagged: bool = field(compare=False, default=False)


@_by_fields
@dataclass(slots=True)
class Base:
    """Where the retained history starts: the effect of the scans folded away."""

    entered: bool = False
    inside: bool = False


@dataclass
class ParticipantState:
    participant: dict[str, Any] | None = None
    digest: str | None = None
    serial: int = 0
    revoked_at: datetime | None = None
    revoked_reason: str | None = None
    history: list[Entry] = field(default_factory=list)
    base: Base = field(default_factory=Base)
    refused: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict)

    def summary(self) -> tuple[int, int, int]:
        """(registered, checked in, inside) for this key, each 0 or 1."""
        registered = int(self.participant is not None and self.revoked_at is None)
        entered, inside = self.base.entered, self.base.inside
        for e in self.history:
            if e.status == "accepted":
                if e.direction == "in":
                    entered = inside = True
                else:
                    inside = False
        return registered, int(entered), int(inside)


@_by_fields
@dataclass(slots=True)
class Count:
    """+1/-1 of one scan's status in its minute: what the attendance windows add up."""

    gate_id: str
    direction: str
    status: str
    ts: datetime
    delta: int
    checkin_id: str


@dataclass
class Outcome:
    """Everything one input item changed: verdicts to send (and store, unless replayed),
    participant versions to store, window counts, and the change of the totals."""

    verdicts: list[dict[str, Any]] = field(default_factory=list)
    participant_rows: list[dict[str, Any]] = field(default_factory=list)
    counts: list[Count] = field(default_factory=list)
    delta: tuple[int, int, int] = (0, 0, 0)
    dead: list[tuple[str, str, str, bytes | None]] = field(default_factory=list)
    """(reason, origin stream, entry id, data) of input refused as a dead letter."""
    answers: list[dict[str, Any]] = field(default_factory=list)
    """Refusals told to the sending gate only: neither stored nor counted (`nonce_conflict`)."""
    index: dict[str, Any] | None = None  # new `participants:index` value for this id


@_by_fields
@dataclass(slots=True)
class Decided:
    """One batch committed by a decider (`flows/checkins_decider.py`), as the dataflow reads it
    from `checkins:decided:<shard>`. Defined here, not in the decider, which runs as `__main__`."""

    outcomes: list[Outcome] = field(default_factory=list)
    dead_rows: list[dict[str, Any]] = field(default_factory=list)


# --- the compact form of states and batches (`dumps`) -----------------------------------------

#: A verdict's fields, in the order `_verdict` writes them; its datetimes at 8, 9 and 10.
_VERDICT_KEYS = (
    "checkin_id", "nonce", "gate_id", "direction", "status", "reason", "participant_id",
    "participant_name", "ts", "received_at", "decided_at", "method", "device_id", "offline",
    "flagged", "revision", "replayed", "token_fp",
)  # fmt: skip


def _verdict_tuple(v: dict[str, Any]) -> list:
    if tuple(v) != _VERDICT_KEYS:
        raise _NotCompact
    t = list(v.values())
    t[8], t[9], t[10] = _us(t[8]), _us(t[9]), _us(t[10])
    return t


def _verdict_from(t: list) -> dict[str, Any]:
    t[8], t[9], t[10] = _dt(t[8]), _dt(t[9]), _dt(t[10])
    return dict(zip(_VERDICT_KEYS, t, strict=True))


def _state_tuple(st: ParticipantState) -> tuple:
    if type(st.refused) is not OrderedDict or type(st.base) is not Base:
        raise _NotCompact
    history = [
        (_us(e.ts), e.order, e.checkin_id, e.nonce, e.gate_id, e.direction, _us(e.received_at),
         e.method, e.device_id, e.offline, e.token_fp, e.status, e.revision, e.flagged)
        for e in st.history
    ]  # fmt: skip
    refused = [(n, _verdict_tuple(v)) for n, v in st.refused.items()]
    return (
        st.participant, st.digest, st.serial, _us_opt(st.revoked_at), st.revoked_reason,
        history, st.base.entered, st.base.inside, refused,
    )  # fmt: skip


def _state_from(t: tuple) -> ParticipantState:
    participant, digest, serial, revoked_at, reason, history, entered, inside, refused = t
    return ParticipantState(
        participant,
        digest,
        serial,
        _dt_opt(revoked_at),
        reason,
        [
            Entry(_dt(ts), order, cid, nonce, gate, d, _dt(rcv), m, dev, off, fp, s, rev, flag)
            for ts, order, cid, nonce, gate, d, rcv, m, dev, off, fp, s, rev, flag in history
        ],
        Base(entered, inside),
        OrderedDict((n, _verdict_from(v)) for n, v in refused),
    )


def received_ms(entry_id: str) -> int:
    """The arrival time (ms) a stream entry id holds."""
    return entry_order(entry_id)[0]


def entry_order(entry_id: str) -> tuple[int, int]:
    """A stream entry id ("ms-seq", or a check-in id "ms-seq@k") as a sortable pair; "9-0" <
    "10-0" unlike the strings."""
    ms, _, seq = entry_id.partition("@")[0].partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return 0, 0


def route_key(scan_token: TokenClaims | TokenProblem, token: str) -> str:
    """Key a scan by the participant its verified token names; refused tokens share one key
    per fingerprint prefix so their state stays small and bounded."""
    if isinstance(scan_token, TokenClaims):
        return f"p:{scan_token.participant_id}"
    return f"x:{fingerprint(token)[:2]}"


def _verdict(
    scan: Scan | Entry,
    status: str,
    st: ParticipantState | None,
    now: datetime,
    detail: str | None = None,
    *,
    flagged: bool = False,
    revision: int = 0,
    token_fp: str | None = None,
) -> dict[str, Any]:
    c = scan.checkin if isinstance(scan, Scan) else scan
    pid = name = None
    if st is not None and st.participant is not None:
        pid, name = st.participant["id"], st.participant["name"]
    elif isinstance(scan, Scan) and isinstance(scan.token, TokenClaims):
        pid = scan.token.participant_id
    reason = CHECKIN_OUTCOMES[status]
    if detail and detail not in reason:
        reason += f" ({detail})"
    return {
        "checkin_id": scan.checkin_id,
        "nonce": c.nonce,
        "gate_id": c.gate_id,
        "direction": c.direction,
        "status": status,
        "reason": reason,
        "participant_id": pid,
        "participant_name": name,
        "ts": scan.ts,
        "received_at": scan.received_at,
        "decided_at": now,
        "method": c.method,
        "device_id": c.device_id,
        "offline": c.offline,
        "flagged": flagged,
        "revision": revision,
        "replayed": False,
        "token_fp": token_fp,
    }


def _replay(base: Base, history: list[Entry], venue: Venue) -> list[str]:
    """The status of each history entry under the venue's rules, in ts order."""
    rules = venue.checkin_rules
    entered, inside = base.entered, base.inside
    exited = entered and not inside
    out = []
    for e in history:
        if e.direction == "in":
            if not entered or rules.allow_multiple_entries:
                status = "accepted"
            elif inside:
                status = "duplicate"
            elif exited and rules.allow_entry_after_exit:
                status = "accepted"
            else:
                status = "reentry_not_allowed"
            if status == "accepted":
                entered = inside = True
                exited = False
        elif inside:
            status, inside, exited = "accepted", False, True
        else:
            status = "exit_without_entry"
        out.append(status)
    return out


_OPEN: dict[tuple, bool] = {}


def _is_open(gate: Any, ts: datetime, zone: Any) -> bool:
    """`gate.is_open`, remembered per gate, opening hours, zone and minute (hours are HH:MM
    spans, so one minute has one answer). `is_open` parses its spans on every call: measured
    with cProfile over 20,000 scans (/tmp micro-benchmark of `parse_input` + `step`), 2.6 s of
    24 s profiled went to it."""
    key = (gate.id, tuple(gate.open_hours), str(zone), int(ts.timestamp()) // 60)
    hit = _OPEN.get(key)
    if hit is None:
        if len(_OPEN) >= 10_000:
            _OPEN.clear()
        hit = _OPEN[key] = gate.is_open(ts, zone)
    return hit


def _stateless_refusal(scan: Scan, venue: Venue) -> tuple[str, str | None] | None:
    """Checks that need no history: token, event, gate, direction, opening hours."""
    c = scan.checkin
    if isinstance(scan.token, TokenProblem):
        return scan.token.status, scan.token.detail
    if scan.token.event_id != venue.event.id:
        return "wrong_event", f"ticket for {scan.token.event_id!r}"
    gate = venue.gate(c.gate_id)
    if gate is None:
        return "unknown_gate", c.gate_id
    if not venue.may_scan(c.gate_id, c.direction):
        return (
            "wrong_direction",
            f"{gate.name} does not scan {'entries' if c.direction == 'in' else 'exits'}",
        )
    if not _is_open(gate, scan.ts, venue.event.zone):
        return "gate_closed", f"{gate.name} opens {', '.join(gate.open_hours)}"
    return None


def decide(
    st: ParticipantState | None, scan: Scan, venue: Venue, now: datetime | None = None
) -> tuple[ParticipantState | None, Outcome]:
    """THE check-in decision. Returns the new state (None: nothing worth keeping) and what
    changed. Outcomes, in the order they are tested:

    0. `nonce_conflict`: the nonce already names another scan (another ticket, gate or
       direction). Changes nothing — the first scan's verdict stays, no state, no count —
       and is told to the sending gate and recorded as a dead letter;
    1. a nonce seen before → the verdict it got then, `replayed` (counted once);
    2. `unknown_token`, `invalid_signature` (token), `wrong_event`, `unknown_gate`,
       `wrong_direction`, `gate_closed` (no history needed);
    3. `unknown_token` (no such participant), `revoked` (revoked before the scan's time, or
       an older serial after a reissue);
    4. `accepted`, `duplicate`, `reentry_not_allowed`, `exit_without_entry` — by replaying the
       participant's scans in ts order; earlier verdicts that change come out as revisions.
    """
    now = now or datetime.now(UTC)
    out = Outcome()
    c = scan.checkin
    fp = scan.token_fp or fingerprint(c.token)

    if scan.first_use is not None:
        other = scan.first_use.differs(NonceUse(fp, c.gate_id, c.direction, 0))
        if other:
            detail = f"used before with another {' and '.join(other)}"
            out.answers.append(_verdict(scan, "nonce_conflict", None, now, detail, token_fp=fp))
            data = c.model_dump_json(exclude_none=True).encode()
            reason = f"nonce_conflict: nonce {c.nonce!r} {detail}; the first scan's verdict stands"
            out.dead.append((reason, keys.CHECKINS_IN, scan.checkin_id, data))
            return st, out

    if st is not None:
        old = st.refused.get(c.nonce)
        if old is None:
            old_entry = next((e for e in st.history if e.nonce == c.nonce), None)
            if old_entry is not None:
                old = _verdict(
                    old_entry,
                    old_entry.status,
                    st,
                    now,
                    revision=old_entry.revision,
                    flagged=old_entry.flagged,
                    token_fp=old_entry.token_fp,
                )
        if old is not None:
            out.verdicts.append({**old, "replayed": True, "decided_at": now})
            return st, out

    refusal = _stateless_refusal(scan, venue)
    if refusal is None:
        claims = scan.token
        assert isinstance(claims, TokenClaims)
        if st is None or st.participant is None:
            refusal = ("unknown_token", "no participant with this id")
        elif claims.serial < st.serial:
            refusal = ("revoked", "a newer ticket was issued")
        elif claims.serial > st.serial:
            refusal = ("unknown_token", "ticket serial not issued")
        elif st.revoked_at is not None and scan.ts >= st.revoked_at:
            refusal = ("revoked", st.revoked_reason)
    if refusal is not None:
        status, detail = refusal
        v = _verdict(scan, status, st, now, detail, flagged=c.offline, token_fp=fp)
        out.verdicts.append(v)
        out.counts.append(Count(c.gate_id, c.direction, status, scan.ts, 1, scan.checkin_id))
        st = st or ParticipantState()
        st.refused[c.nonce] = v
        if len(st.refused) > MAX_REFUSED:
            st.refused.popitem(last=False)
        return st, out

    assert st is not None
    before = st.summary()
    entry = Entry(
        ts=scan.ts,
        order=entry_order(scan.checkin_id),
        checkin_id=scan.checkin_id,
        nonce=c.nonce,
        gate_id=c.gate_id,
        direction=c.direction,
        received_at=scan.received_at,
        method=c.method,
        device_id=c.device_id,
        offline=c.offline,
        token_fp=fp,
    )
    insort(st.history, entry)
    statuses = _replay(st.base, st.history, venue)
    for e, status in zip(st.history, statuses, strict=True):
        if e is entry:
            e.status = status
            e.flagged = c.offline and status != "accepted"
            out.verdicts.append(_verdict(scan, status, st, now, flagged=e.flagged, token_fp=fp))
            out.counts.append(Count(e.gate_id, e.direction, status, e.ts, 1, e.checkin_id))
        elif e.status != status:
            # An earlier verdict changes: the earliest scan wins, the other is overturned.
            out.counts.append(Count(e.gate_id, e.direction, e.status, e.ts, -1, e.checkin_id))
            out.counts.append(Count(e.gate_id, e.direction, status, e.ts, 1, e.checkin_id))
            e.status, e.revision, e.flagged = status, e.revision + 1, True
            out.verdicts.append(
                _verdict(
                    e,
                    status,
                    st,
                    now,
                    "overturned by an earlier scan of the same ticket",
                    revision=e.revision,
                    flagged=True,
                    token_fp=e.token_fp,
                )
            )
    _fold(st, venue)
    after = st.summary()
    out.delta = (after[0] - before[0], after[1] - before[1], after[2] - before[2])
    return st, out


def _fold(st: ParticipantState, venue: Venue) -> None:
    """Keep at most MAX_HISTORY scans: fold the oldest into `base`."""
    while len(st.history) > MAX_HISTORY:
        e = st.history.pop(0)
        if e.status == "accepted":
            if e.direction == "in":
                st.base.entered = st.base.inside = True
            else:
                st.base.inside = False


# --- participants --------------------------------------------------------------------------------


def index_value(st: ParticipantState) -> dict[str, Any]:
    """The `participants:index` entry: what importers and the dashboard need without the lake."""
    assert st.participant is not None
    return {
        "digest": st.digest,
        "serial": st.serial,
        "revoked": st.revoked_at is not None,
        "name": st.participant["name"],
    }


def _participant_row(st: ParticipantState, op: str, at: datetime, entry_id: str) -> dict[str, Any]:
    p = st.participant
    assert p is not None
    return {
        "id": p["id"],
        "name": p["name"],
        "email": p.get("email"),
        "organization": p.get("organization"),
        "category": p.get("category"),
        "extra": to_json(p.get("extra") or {}).decode(),
        "serial": st.serial,
        "status": "revoked" if st.revoked_at is not None else "active",
        "revoked_at": st.revoked_at,
        "revoked_reason": st.revoked_reason,
        "op": op,
        "updated_at": at,
        "entry_id": entry_id,
    }


def apply_op(
    st: ParticipantState | None, op: ParticipantOp, entry_id: str, at: datetime
) -> tuple[ParticipantState | None, Outcome]:
    """Create/update, revoke, reissue or restore a participant. An unchanged upsert, or a
    revoke of a revoked participant, changes nothing (no new version is stored)."""
    out = Outcome()
    st = st or ParticipantState()
    before = st.summary()
    if op.op == "upsert":
        assert op.participant is not None
        digest = participant_digest(op.participant)
        if digest == st.digest:
            return st, out
        st.participant, st.digest = op.participant.model_dump(), digest
    elif st.participant is None:
        reason = f"{op.op}: no participant with id {op.id!r}"
        out.dead.append((reason, keys.PARTICIPANTS_IN, entry_id, None))
        return (st if st.history or st.refused else None), out
    elif op.op == "revoke":
        if st.revoked_at is not None:
            return st, out
        st.revoked_at, st.revoked_reason = at, op.reason or "revoked by the organiser"
    elif op.op == "restore":
        if st.revoked_at is None:
            return st, out
        st.revoked_at = st.revoked_reason = None
    else:  # reissue
        st.serial += 1
    out.participant_rows.append(_participant_row(st, op.op, at, entry_id))
    out.index = index_value(st)
    after = st.summary()
    out.delta = (after[0] - before[0], after[1] - before[1], after[2] - before[2])
    return st, out


# --- input -------------------------------------------------------------------------------------


@dataclass(slots=True)
class OpItem:
    """A participant change as it reaches the keyed step."""

    entry_id: str
    op: ParticipantOp
    received_at: datetime


@dataclass(slots=True)
class ParsedInput(DeadLetters):
    """One input batch: keyed items for `step`, and dead letters (Redis commands, lake rows)."""

    items: list[tuple[str, Scan | OpItem]] = field(default_factory=list)


#: The decider shard that owns a participant key (stable across processes and runs): the one
#: hash gates, the API and the deciders all use (`core.keys.shard_of`, crc32).
shard_of = keys.shard_of


def claimed_key(token: str) -> str:
    """The key a scan's token *claims*, without verifying it: what routes a scan to its
    shard, so each shard verifies only its own share. A verified token's key is the same."""
    claims = peek(token)
    if claims is not None:
        return f"p:{claims.participant_id}"
    return route_key(TokenProblem("unknown_token", ""), token)


#: The shard number at the end of an input shard's stream name (`checkins:in:{3}`).
_INPUT_SHARD = re.compile(r":\{(\d+)\}$")


def parse_input(
    batch: StreamBatch,
    verifier: TokenVerifier,
    max_bytes: int,
    shard: int = 0,
    shards: int = 1,
    nonces: NonceBook | None = None,
) -> ParsedInput:
    """Validate `checkins:in` / `participants:in` entries; never raises for bad input.

    The token is verified here, before keying, so a scan is routed to the participant its
    *verified* token names; `decide` turns the result into the verdict. With `shards` > 1 only
    this shard's participants are kept (routed by the key the token claims, before the costly
    verification), and only shard 0 reports bad entries. With a `nonces` book every valid
    check-in (every shard's) is entered in it and each scan carries the scan its nonce names
    (`NonceBook.resolve`, once the batch is parsed).
    """
    out = ParsedInput()
    is_checkin = not batch.stream.startswith(keys.PARTICIPANTS_IN)  # or a shard of it
    in_shard = _INPUT_SHARD.search(batch.stream)
    # A check-in's id is its entry id; input shards' ids may coincide, so there it names the
    # shard too ("<ms>-<seq>@<k>"): the lake view `checkins` keeps one row per id.
    suffix = f"@{in_shard.group(1)}" if in_shard else ""
    for entry_id, data in batch.entries:
        # (the arrival time as a datetime only for entries of this shard: 1.2 % of the py-spy
        # samples in `bench.checkins` went to `entry_time`, half of it for other shards' entries)
        try:
            data = entry_data(data, max_bytes)
            data.decode("utf-8")
            if is_checkin:
                c = CheckIn.model_validate_json(data)
                noted, fp = None, ""
                if nonces is not None:
                    fp = fingerprint(c.token)
                    use = NonceUse(fp, c.gate_id, c.direction, received_ms(entry_id))
                    noted = nonces.note(c.nonce, use)
                if shards > 1 and shard_of(claimed_key(c.token), shards) != shard:
                    continue  # another shard's participant
                tok = verifier.check(c.token)
                scan = Scan(entry_id + suffix, c, entry_time(entry_id), tok, None, fp)
                if noted is not None:
                    noted.scan = scan
                out.items.append((route_key(tok, c.token), scan))
            else:
                op = ParticipantOp.model_validate_json(data)
                if shards > 1 and shard_of(f"p:{op.id}", shards) != shard:
                    continue
                out.items.append((f"p:{op.id}", OpItem(entry_id, op, entry_time(entry_id))))
        except Exception as exc:  # every reason becomes a dead letter, never a crash
            if shard != 0:
                continue  # shard 0 reports bad input, once
            out.refuse(keys.CHECKINS_DEAD, exc, batch.stream, entry_id, data, entry_time(entry_id))
    if nonces is not None:
        nonces.resolve()  # every scan's `first_use`: one look-up of the batch's nonces
    return out


def step(
    st: ParticipantState | None, item: Scan | OpItem, venue: Venue
) -> tuple[ParticipantState | None, Outcome]:
    """The keyed step: a scan is decided, a participant change applied."""
    if isinstance(item, Scan):
        return decide(st, item, venue)
    return apply_op(st, item.op, item.entry_id, item.received_at)


def counts_by_window(counts: list[Count], length: timedelta) -> list[tuple[str, Group]]:
    """Per-minute groups of +1/-1 per (gate, direction, status), for the event-time windows."""
    groups: dict[tuple[str, datetime], Group] = {}
    for c in counts:
        key = f"{c.gate_id}\x1f{c.direction}\x1f{c.status}"
        ws = window_start(c.ts, length)
        g = groups.get((key, ws))
        if g is None:
            groups[(key, ws)] = Group(ws, c.delta, c.ts, [(c.checkin_id, c.ts)])
        else:
            g.count += c.delta
            g.max_ts = max(g.max_ts, c.ts)
            g.members.append((c.checkin_id, c.ts))
    return [(k, g) for (k, _), g in groups.items()]


def attendance_row(key: str, start: datetime, length: timedelta, count: int, late: bool) -> dict:
    gate_id, direction, status = key.split("\x1f", 2)
    return {
        "window_start": start,
        "window_end": start + length,
        "gate_id": gate_id,
        "direction": direction,
        "status": status,
        "count": count,
        "late": late,
        "emitted_at": datetime.now(UTC),
    }


def verdict_commands(out: Outcome) -> list[tuple]:
    """Redis commands for one outcome: each verdict to its gate's channel at once, under
    `verdict:<nonce>` for a gate that missed it, and on the `checkins:verdicts` stream (durable
    input of the alarm flow: refused-token bursts); index updates; dead letters."""
    cmds: list[tuple] = []
    for v in out.answers:  # to the sending gate only: `verdict:<nonce>` keeps the first verdict
        cmds.append(("PUBLISH", keys.verdict_channel(v["gate_id"]), to_json(v)))
    for v in out.verdicts:
        doc = to_json(v)
        cmds.append(("PUBLISH", keys.verdict_channel(v["gate_id"]), doc))
        cmds.append(("SET", keys.verdict_key(v["nonce"]), doc, "EX", keys.VERDICT_TTL_S))
        cmds.append(
            ("XADD", keys.CHECKINS_VERDICTS, "MAXLEN", "~", keys.CHECKINS_VERDICTS_MAXLEN,
             "*", "data", doc)
        )  # fmt: skip
    if out.index is not None and out.participant_rows:
        cmds.append(
            ("HSET", keys.PARTICIPANTS_INDEX, out.participant_rows[0]["id"], to_json(out.index))
        )
    return cmds


def global_commands(decided: Decided) -> list[tuple]:
    """Every write of a committed batch outside the decider's own keys, in order: verdicts
    (`verdict_commands`) and dead letters (rebuilt from the rows the batch carries). With one
    input shard they go in the batch's MULTI/EXEC; with more, right after it, and again from
    the last committed batch after a crash (`flows/checkins_decider.py`): all of them are
    derived from the committed batch alone."""
    cmds: list[tuple] = []
    for out in decided.outcomes:
        cmds += verdict_commands(out)
    for row in decided.dead_rows:
        cmd, _ = dead_letter(
            keys.CHECKINS_DEAD, row["reason"], row["origin"], row["origin_id"], row["data"],
            row["received_at"],
        )  # fmt: skip
        cmds.append(cmd)
    return cmds


def outcome_dead_letters(out: Outcome) -> list[tuple[tuple, dict[str, Any]]]:
    """Input an outcome refused (participant changes that named no participant, reused
    nonces), as dead letters (command, lake row)."""
    return [
        dead_letter(keys.CHECKINS_DEAD, reason, origin, eid, data, entry_time(eid))
        for reason, origin, eid, data in out.dead
    ]
