"""Simulated gates for `run.py demo`: people arriving, leaving, coming back — and every way a
scan can go wrong.

    uv run python -m sim.gates --participants 2000 --rate 5 [--http BASE --api-key KEY]

On start it makes sure N synthetic participants (ids P000001 …, realistic names, e-mails and
organisations) are registered: they are imported with `core.participants.import_participants`
exactly like a CSV upload (unchanged ones are not even sent) and the simulator waits until the
check-in flow has applied them. It revokes a few of them (`ParticipantOp` revoke) and keeps
scanning those. Then it scans at --rate check-ins/s on average, following a repeating arrival
curve (ramp-up, peak, plateau, wind-down; one cycle every --cycle seconds), at the venue's gates
(`VENUE_CONFIG`): only gates that are open now (`open_hours`) and may scan that direction
(`entry_gates` / `exit_gates`), weighted by their capacity:

* arrivals, exits at exit gates, re-entries — the simulator knows who is inside (restored from
  the lake on a restart, so a restarted simulator does not re-admit everybody);
* duplicates (the same ticket scanned twice in a row) and retried uploads (the same nonce again);
* forged tokens (one character of a valid token changed → `invalid_signature`), garbage
  (→ `unknown_token`), tickets of another event (signed with our key for another event id →
  `wrong_event`), revoked tickets (→ `revoked`), and rarely a scan at a gate that is closed now
  (→ `gate_closed`);
* ONE offline gate: every --offline-every seconds it loses the network for --offline-seconds,
  admits people on its own (offline=true, the scan's own ts) and uploads its buffer in one batch
  when it is back. Meanwhile a ticket it admitted is sometimes also scanned online at another gate
  (the earliest scan wins: the online verdict is revised to `duplicate`, flagged), or it admits
  someone who is already inside (a flagged `duplicate` once uploaded).

Scans go mostly by `XADD checkins:in`; with --http a share goes by `POST /api/checkins` (offline
uploads by `POST /api/checkins/batch`), falling back to XADD while a route is missing. A
subscriber on `checkins:verdict:*` tallies the verdicts; one summary line every 10 s.
SIGINT/SIGTERM stop it cleanly (an offline buffer is uploaded first: no scan is lost).
"""

from __future__ import annotations

import argparse
import heapq
import json
import logging
import random
import signal
import threading
import time
import unicodedata
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from core import keys
from core.participants import import_participants, participant_digest, send_ops
from core.records import Participant, ParticipantOp
from core.settings import Settings
from core.tokens import TokenSigner, load_signer
from core.venue import Gate, Venue, venue_for
from sim.sensors import wait_for_dashboard

log = logging.getLogger("venueflow.sim.gates")

SUMMARY_EVERY_S = 10.0
OTHER_EVENT_ID = "other-festival-2025"
CHUNK = 2000

# --- synthetic participants -----------------------------------------------------------------

FIRST_NAMES = (
    "Anna", "Ben", "Clara", "David", "Elif", "Felix", "Greta", "Hannes", "Ines", "Jonas",
    "Kemal", "Lena", "Mateo", "Nora", "Oskar", "Paula", "Quentin", "Rosa", "Sami", "Tereza",
    "Ugo", "Vera", "Wiebke", "Xavier", "Yuki", "Zoë", "Amir", "Björn", "Chiara", "Dmitri",
    "Emma", "François", "Hana", "Ivan", "José", "Katarzyna", "Liam", "Maja", "Nikolai", "Olivia",
    "Priya", "Rafael", "Sofia", "Tobias", "Aylin", "Lukas", "Mia", "Noah", "Leonie", "Emil",
)  # fmt: skip
LAST_NAMES = (
    "Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Hoffmann",
    "Schulz", "Koch", "Richter", "Klein", "Wolf", "Neumann", "Schwarz", "Zimmermann", "Krüger",
    "Öztürk", "Kaya", "Nowak", "Kowalski", "Rossi", "Bianchi", "García", "Fernández", "Dubois",
    "Martin", "Jensen", "Nielsen", "Andersson", "Novák", "Horváth", "Popescu", "Ivanova",
    "Smith", "Jones", "O'Brien", "Tanaka", "Sato", "Kim", "Nguyen", "Silva", "Santos",
)  # fmt: skip
ORGANIZATIONS = (
    ("Nordlicht Media GmbH", "nordlicht-media.de"), ("Spreewerk AG", "spreewerk.de"),
    ("Helix Robotics", "helix-robotics.io"), ("Atelier Brandt", "atelier-brandt.de"),
    ("Universität Leipzig", "uni-leipzig.de"), ("TU München", "tum.de"),
    ("Kiez Kollektiv e.V.", "kiezkollektiv.org"), ("Bergmann & Söhne", "bergmann-soehne.de"),
    ("Lumen Audio", "lumen-audio.com"), ("Polar Logistics", "polar-logistics.eu"),
    ("Stadtwerke Ost", "stadtwerke-ost.de"), ("Fjord Analytics", "fjord-analytics.no"),
    ("Café Kranz", "cafe-kranz.de"), ("Rheinblick Verlag", "rheinblick-verlag.de"),
    ("Open Stage Berlin", "openstage.berlin"), ("Freelance", "mail.example"),
)  # fmt: skip
CATEGORIES = (
    ("standard", 70), ("vip", 8), ("speaker", 5), ("press", 4), ("staff", 8), ("student", 5),
)  # fmt: skip
DIETS = ("", "", "", "vegetarian", "vegan", "gluten-free")


def participant_id(i: int) -> str:
    return f"P{i:06d}"


def _ascii(s: str) -> str:
    s = unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode()
    return "".join(ch for ch in s.lower() if ch.isalnum())


def synthetic_participants(n: int, seed: int = 1) -> list[Participant]:
    """N participants P000001 … with names, e-mails, organisations and a category. The same
    (n, seed) always gives the same rows, so a restart re-imports nothing."""
    rng = random.Random(f"participants-{seed}")
    cats, weights = zip(*CATEGORIES, strict=True)
    out = []
    for i in range(1, n + 1):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        org, domain = rng.choice(ORGANIZATIONS)
        extra = {"diet": d} if (d := rng.choice(DIETS)) else {}
        out.append(
            Participant(
                id=participant_id(i),
                name=f"{first} {last}",
                email=f"{_ascii(first)}.{_ascii(last)}{i % 97}@{domain}",
                organization=None if org == "Freelance" else org,
                category=rng.choices(cats, weights)[0],
                extra=extra,
            )
        )
    return out


# --- the arrival curve ----------------------------------------------------------------------


def curve(phase: float) -> float:
    """Relative scan rate over one cycle (0 ≤ phase < 1): doors open and arrivals ramp up, a
    peak, a long plateau, then a quieter evening when most scans are exits."""
    if phase < 0.2:
        return 0.3 + 1.2 * phase / 0.2
    if phase < 0.35:
        return 1.5
    if phase < 0.75:
        return 0.9
    return 0.5


def exit_share(phase: float) -> float:
    """Of the ordinary scans at this point of the cycle, the share that are exits."""
    if phase < 0.2:
        return 0.05
    if phase < 0.35:
        return 0.1
    if phase < 0.75:
        return 0.35
    return 0.75


CURVE_MEAN = sum(curve(i / 1000) for i in range(1000)) / 1000


class Pool:
    """A set with O(1) random pick and removal."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.pos: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, x: str) -> bool:
        return x in self.pos

    def add(self, x: str) -> None:
        if x not in self.pos:
            self.pos[x] = len(self.items)
            self.items.append(x)

    def discard(self, x: str) -> None:
        i = self.pos.pop(x, None)
        if i is None:
            return
        last = self.items.pop()
        if i < len(self.items):
            self.items[i] = last
            self.pos[last] = i

    def pick(self, rng: random.Random) -> str:
        return self.items[rng.randrange(len(self.items))]


# --- sending --------------------------------------------------------------------------------


class Sender:
    """XADD to `checkins:in`, or POST to the gate API with a fallback to XADD.

    HTTP scans are posted from a few worker threads (the API answers when the verdict is there,
    up to `wait` seconds), so a slow answer never holds up the other gates. A route that
    answers 404/405 is taken as not deployed yet: that is logged once and its scans go by XADD;
    it is tried again every minute (and logged once when it answers).
    """

    RETRY_ROUTE_S = 60.0

    def __init__(self, r: redis.Redis, http: str | None, api_key: str | None):
        self.r = r
        self.base = http.rstrip("/") if http and api_key else None
        self.api_key = api_key
        self.missing: dict[str, float] = {}  # route → when to try it again
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._warned_at: dict[str, float] = {}
        self._pool = ThreadPoolExecutor(4, "gate-http") if self.base else None
        self._in_flight = 0
        self._rng = random.Random()

    def _count(self, what: str, n: int = 1) -> None:
        with self._lock:
            self.counts[what] += n

    def _warn(self, what: str, msg: str, *args: object) -> None:
        """At most one warning per kind per minute."""
        now = time.monotonic()
        with self._lock:
            if now - self._warned_at.get(what, -1e9) < 60:
                return
            self._warned_at[what] = now
        log.warning(msg, *args)

    def http_ready(self, route: str) -> bool:
        return self.base is not None and time.monotonic() >= self.missing.get(route, 0.0)

    def _post(self, route: str, body: Any, query: str = "") -> bool:
        """POST JSON; True if the API took it, False if the caller should XADD instead."""
        base = self.base
        if base is None:
            return False
        req = urllib.request.Request(
            f"{base}{route}{query}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "X-API-Key": self.api_key or ""},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                resp.read()
            if self.missing.pop(route, None) is not None:
                log.info("POST %s answers now; sending a share of the scans by HTTP", route)
            return True
        except urllib.error.HTTPError as exc:
            text = exc.read()[:300].decode(errors="replace")
            if exc.code in (404, 405):
                if route not in self.missing:
                    log.info(
                        "POST %s is not available (HTTP %d); sending those scans by XADD %s",
                        route,
                        exc.code,
                        keys.CHECKINS_IN,
                    )
                self.missing[route] = time.monotonic() + self.RETRY_ROUTE_S
                return False
            if exc.code in (401, 403):
                log.warning("POST %s: API key refused (%s); using XADD only", route, text)
                self.base = None
                return False
            if exc.code < 500:  # the API refused the scan itself: XADD would dead-letter it too
                self._warn(f"http{exc.code}", "POST %s refused with %d: %s", route, exc.code, text)
                self._count("http_refused")
                return True
            self._warn("http5xx", "POST %s failed with %d (%s); using XADD", route, exc.code, text)
            return False
        except OSError as exc:
            self._warn("httpdown", "POST %s failed (%s); using XADD meanwhile", route, exc)
            return False

    def _xadd(self, checkin: dict[str, Any]) -> None:
        stream = keys.checkins_in(str(checkin.get("token")), str(checkin.get("gate_id")))
        self.r.xadd(stream, {"data": json.dumps(checkin)})
        self._count("xadd")

    def _post_one(self, checkin: dict[str, Any], query: str) -> None:
        try:
            self._post_or_xadd(checkin, query)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _post_or_xadd(self, checkin: dict[str, Any], query: str) -> None:
        try:
            if self._post("/api/checkins", checkin, query):
                self._count("http")
            else:
                self._xadd(checkin)
        except Exception as exc:  # a worker thread: never lose the scan silently
            self._warn("httpthread", "scan not sent by HTTP (%s); by XADD", exc)
            try:
                self._xadd(checkin)
            except redis.exceptions.RedisError as err:
                log.warning("scan %s lost: %s", checkin.get("nonce"), err)

    def send(self, checkin: dict[str, Any], via_http: bool = False) -> None:
        if via_http and self._pool is not None and self.http_ready("/api/checkins"):
            with self._lock:  # a slow dashboard: the rest go by XADD, none waits in a queue
                busy = self._in_flight >= 8
                if not busy:
                    self._in_flight += 1
            if not busy:
                # Most gates fire and forget (wait=0: 202); some wait for the verdict.
                query = "?wait=2" if self._rng.random() < 0.25 else "?wait=0"
                self._pool.submit(self._post_one, checkin, query)
                return
        self._xadd(checkin)

    def send_batch(self, checkins: list[dict[str, Any]]) -> str:
        """Upload a batch (an offline gate back online); returns how it went."""
        if not checkins:
            return "nothing"
        if self.http_ready("/api/checkins/batch") and self._post("/api/checkins/batch", checkins):
            self._count("http", len(checkins))
            return "POST /api/checkins/batch"
        for i in range(0, len(checkins), CHUNK):
            pipe = self.r.pipeline(transaction=False)
            for c in checkins[i : i + CHUNK]:
                stream = keys.checkins_in(str(c.get("token")), str(c.get("gate_id")))
                pipe.xadd(stream, {"data": json.dumps(c)})
            pipe.execute()
        self._count("xadd", len(checkins))
        return f"one XADD pipeline to {keys.CHECKINS_IN}" + (
            f" (its {keys.STREAM_SHARDS} shards)" if keys.STREAM_SHARDS > 1 else ""
        )

    def close(self) -> None:
        """Finish the HTTP scans in flight (at most 8, each bounded by its 5 s timeout)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=False)


class VerdictTally(threading.Thread):
    """Counts the verdicts on `checkins:verdict:*` (by status, revisions, replays, flags)."""

    def __init__(self, url: str):
        super().__init__(daemon=True, name="verdict-tally")
        self.url = url
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.total: Counter[str] = Counter()
        self.halt = threading.Event()

    def take(self) -> Counter[str]:
        with self.lock:
            c, self.counts = self.counts, Counter()
        return c

    def run(self) -> None:
        while not self.halt.is_set():
            r = redis.Redis.from_url(self.url, socket_connect_timeout=5)
            try:
                ps = r.pubsub(ignore_subscribe_messages=True)
                ps.psubscribe(keys.verdict_channel("*"))
                while not self.halt.is_set():
                    msg = ps.get_message(timeout=0.5)
                    if msg is None or msg.get("type") != "pmessage":
                        continue
                    try:
                        v = json.loads(msg["data"])
                    except ValueError:
                        continue
                    kinds = [v.get("status", "?")]
                    if v.get("revision"):
                        kinds.append("revisions")
                    if v.get("replayed"):
                        kinds.append("replayed")
                    if v.get("flagged"):
                        kinds.append("flagged")
                    with self.lock:
                        for k in kinds:
                            self.counts[k] += 1
                            self.total[k] += 1
                ps.close()
            except redis.exceptions.RedisError:
                self.halt.wait(1.0)
            finally:
                r.close()


# --- the simulation -------------------------------------------------------------------------


@dataclass
class Offline:
    """The offline gate: its schedule and what it buffered while offline."""

    gate: Gate | None
    every: float
    seconds: float
    next_change: float
    offline: bool = False
    since: float = 0.0
    buffer: list[dict[str, Any]] = field(default_factory=list)
    admitted: list[str] = field(default_factory=list)  # let in while offline (conflict (a))
    final: dict[str, str] = field(default_factory=dict)  # pid → "inside"/"left" after upload
    conflicts: int = 0


@dataclass
class Delayed:
    due: float
    seq: int
    checkin: dict[str, Any] = field(compare=False)
    via_http: bool = field(compare=False)
    kind: str = field(compare=False)

    def __lt__(self, other: Delayed) -> bool:
        return (self.due, self.seq) < (other.due, other.seq)


#: Rare scans, each a share of all scans (the rest are ordinary entries and exits).
ANOMALIES = (
    ("forged", 0.006),
    ("garbage", 0.005),
    ("other_event", 0.005),
    ("revoked", 0.006),
    ("closed_gate", 0.004),
)
DUPLICATE_P = 0.03  # an admitted ticket is scanned again right away (→ duplicate)
RETRY_P = 0.02  # a gate retries an upload with the same nonce (→ replayed verdict)
CONFLICT_ONLINE_P = 0.015  # while offline: a ticket it admitted is scanned at another gate
CONFLICT_OFFLINE_P = 0.02  # while offline: it admits someone already inside
REENTRY_P = 0.15  # an entry is someone coming back (while people are still arriving)


class GateSim:
    def __init__(
        self,
        venue: Venue,
        signer: TokenSigner,
        sender: Sender,
        ids: list[str],
        serials: dict[str, int],
        revoked: list[str],
        args: argparse.Namespace,
        rng: random.Random,
    ):
        self.venue, self.signer, self.sender, self.args, self.rng = venue, signer, sender, args, rng
        self.zone = venue.event.zone
        self.serials = serials
        self.revoked = revoked
        self.tokens: dict[str, str] = {}
        self.unseen, self.inside, self.left = Pool(), Pool(), Pool()
        self.pending: set[str] = set()  # scanned by the offline gate, not uploaded yet
        for pid in ids:
            self.unseen.add(pid)
        self.delayed: list[Delayed] = []
        self.seq = 0
        self.t0 = time.monotonic()
        self.sent: Counter[str] = Counter()
        self.total_sent = 0
        gate = self._offline_gate(args.offline_gate)
        every = args.offline_every if gate is not None else 0.0
        self.off = Offline(gate, every, args.offline_seconds, self.t0 + min(30.0, every / 2))
        self._no_gate_warned: dict[str, float] = {}
        self.anomalies = [(kind, p * args.rare) for kind, p in ANOMALIES]

    # ----- state

    def restore(self, inside: set[str], left: set[str]) -> None:
        """Who is inside / has left, from the lake (a restarted simulator carries on)."""
        for pid in inside:
            if pid in self.unseen:
                self.unseen.discard(pid)
                self.inside.add(pid)
        for pid in left:
            if pid in self.unseen:
                self.unseen.discard(pid)
                self.left.add(pid)

    def token(self, pid: str) -> str:
        t = self.tokens.get(pid)
        if t is None:
            t = self.signer.mint(self.venue.event.id, pid, self.serials.get(pid, 0))
            self.tokens[pid] = t
        return t

    def _offline_gate(self, wanted: str | None) -> Gate | None:
        if wanted == "none":
            return None
        if wanted:
            g = self.venue.gate(wanted)
            if g is None:
                raise SystemExit(f"--offline-gate {wanted!r} is not a gate of the venue file")
            return g
        entry = [g for g in self.venue.gates if self.venue.may_scan(g.id, "in")]
        if not entry:
            return None
        # The second entry gate: the main entrance stays online, a side gate drops out.
        return entry[1] if len(entry) > 1 else entry[0]

    def gates(self, direction: str, now: datetime, open_: bool = True) -> list[Gate]:
        return [
            g
            for g in self.venue.gates
            if self.venue.may_scan(g.id, direction) and g.is_open(now, self.zone) == open_
        ]

    def pick_gate(self, direction: str, now: datetime, exclude: str | None = None) -> Gate | None:
        gates = [g for g in self.gates(direction, now) if g.id != exclude]
        if not gates:
            t = time.monotonic()
            if t - self._no_gate_warned.get(direction, -1e9) > 60:
                self._no_gate_warned[direction] = t
                log.info("no open gate may scan %r now; those scans wait", direction)
            return None
        return self.rng.choices(gates, [g.capacity_per_minute for g in gates])[0]

    def checkin(
        self,
        gate: Gate,
        token: str,
        direction: str,
        ts: datetime,
        offline: bool = False,
    ) -> dict[str, Any]:
        self.seq += 1
        roll = self.rng.random()
        method = "manual" if roll < 0.02 else "beacon" if roll < 0.03 else "qr_scan"
        return {
            "gate_id": gate.id,
            "token": token,
            "ts": ts.isoformat(timespec="milliseconds"),
            "device_id": f"{gate.id}-scanner-{1 + self.seq % 2}",
            "method": method,
            "direction": direction,
            "nonce": f"sim-{gate.id}-{self.seq}-{self.rng.getrandbits(40):010x}",
            "offline": offline,
        }

    def _send(self, c: dict[str, Any], kind: str) -> None:
        via_http = self.rng.random() < self.args.http_share
        self.sender.send(c, via_http)
        self.sent[kind] += 1
        self.total_sent += 1

    def _later(self, c: dict[str, Any], kind: str, after: float) -> None:
        heapq.heappush(
            self.delayed,
            Delayed(time.monotonic() + after, self.seq, c, self.rng.random() < 0.5, kind),
        )
        self.seq += 1

    # ----- one scan

    def phase(self) -> float:
        return ((time.monotonic() - self.t0) / self.args.cycle) % 1.0

    def rate_now(self) -> float:
        return self.args.rate * curve(self.phase()) / CURVE_MEAN

    def scan(self) -> None:
        now = datetime.now(UTC)
        roll = self.rng.random()
        for kind, p in self.anomalies:
            if roll < p:
                if self._anomaly(kind, now):
                    return
                break
            roll -= p
        phase = self.phase()
        can_exit = len(self.inside) > 0
        can_enter = len(self.unseen) + len(self.left) > 0
        if can_exit and (not can_enter or self.rng.random() < exit_share(phase)):
            self._exit(now)
        elif can_enter:
            self._enter(now)

    def _enter(self, now: datetime) -> None:
        off = self.off
        gate = self.pick_gate("in", now)
        if gate is None:
            return
        offline_here = off.offline and off.gate is not None and gate.id == off.gate.id
        if (
            off.offline
            and not offline_here
            and off.admitted
            and self.rng.random() < CONFLICT_ONLINE_P * self.args.rare
        ):
            # A ticket the offline gate let in is scanned here too (passed back over the
            # fence): accepted now, overturned when the earlier offline scan arrives.
            pid = off.admitted[self.rng.randrange(len(off.admitted))]
            self._send(self.checkin(gate, self.token(pid), "in", now), "conflict_online")
            off.conflicts += 1
            return
        if offline_here and self.inside and self.rng.random() < CONFLICT_OFFLINE_P * self.args.rare:
            # The offline gate admits someone who is inside already (it cannot know).
            pid = self.inside.pick(self.rng)
            self.inside.discard(pid)
            self._buffer(gate, pid, "in", now, "inside")
            off.conflicts += 1
            self.sent["offline_conflict"] += 1
            return
        if self.unseen and (not self.left or self.rng.random() >= REENTRY_P):
            pid, kind = self.unseen.pick(self.rng), "entry"
            self.unseen.discard(pid)
        else:
            pid, kind = self.left.pick(self.rng), "reentry"
            self.left.discard(pid)
        if offline_here:
            self._buffer(gate, pid, "in", now, "inside")
            off.admitted.append(pid)
            self.sent[f"offline_{kind}"] += 1
            return
        c = self.checkin(gate, self.token(pid), "in", now)
        self._send(c, kind)
        self.inside.add(pid)
        if self.rng.random() < DUPLICATE_P * self.args.rare:  # scanned again: same ticket
            again = self.checkin(gate, c["token"], "in", datetime.now(UTC))
            self._later(again, "duplicate", self.rng.uniform(0.5, 2.0))
        elif self.rng.random() < RETRY_P * self.args.rare:  # a retried upload: the same nonce
            self._later(c, "retry", self.rng.uniform(0.3, 1.5))

    def _exit(self, now: datetime) -> None:
        gate = self.pick_gate("out", now)
        if gate is None:
            return
        pid = self.inside.pick(self.rng)
        self.inside.discard(pid)
        off = self.off
        if off.offline and off.gate is not None and gate.id == off.gate.id:
            self._buffer(gate, pid, "out", now, "left")
            self.sent["offline_exit"] += 1
            return
        self._send(self.checkin(gate, self.token(pid), "out", now), "exit")
        self.left.add(pid)

    def _buffer(self, gate: Gate, pid: str, direction: str, now: datetime, final: str) -> None:
        self.off.buffer.append(self.checkin(gate, self.token(pid), direction, now, offline=True))
        self.off.final[pid] = final
        self.pending.add(pid)

    def _anomaly(self, kind: str, now: datetime) -> bool:
        """Send one rare scan; False if it cannot be made now (e.g. no gate is closed)."""
        if kind == "closed_gate":
            closed = self.gates("in", now, open_=False)
            if not closed:
                return False
            gate = self.rng.choice(closed)
            pool = self.unseen if self.unseen else self.left
            if not pool:
                return False
            self._send(self.checkin(gate, self.token(pool.pick(self.rng)), "in", now), kind)
            return True
        gate = self.pick_gate("in", now, exclude=self.off.gate.id if self.off.offline else None)
        if gate is None:
            return False
        if kind == "revoked":
            if not self.revoked:
                return False
            token = self.token(self.rng.choice(self.revoked))
        elif kind == "garbage":
            token = self.rng.choice(
                (
                    f"{self.rng.randrange(10**12, 10**13)}",  # a supermarket barcode
                    "https://example.org/ticket/" + f"{self.rng.getrandbits(32):08x}",
                    f"TICKET-{self.rng.randrange(10**6):06d}",
                    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJndWVzdCJ9",  # someone else's JWT-ish
                )
            )
        else:
            pools = [p for p in (self.inside, self.left, self.unseen) if p]
            if not pools:
                return False
            pid = self.rng.choice(pools).pick(self.rng)
            if kind == "other_event":
                token = self.signer.mint(OTHER_EVENT_ID, pid, 0)
            else:  # forged: one character of the signature changed
                token = tamper(self.token(pid), self.rng)
        self._send(self.checkin(gate, token, "in", now), kind)
        return True

    # ----- time-driven parts

    def due(self) -> None:
        """Send delayed duplicates/retries that are due."""
        now = time.monotonic()
        while self.delayed and self.delayed[0].due <= now:
            d = heapq.heappop(self.delayed)
            if d.kind == "duplicate":  # a new scan: stamped when it happens
                d.checkin["ts"] = datetime.now(UTC).isoformat(timespec="milliseconds")
            self.sender.send(d.checkin, d.via_http)
            self.sent[d.kind] += 1
            self.total_sent += 1

    def offline_tick(self, force_upload: bool = False) -> None:
        off = self.off
        if off.gate is None or off.every <= 0:
            return
        now = time.monotonic()
        if off.offline and (force_upload or now >= off.next_change):
            self.upload()
            off.next_change = now + max(1.0, off.every - off.seconds)
        elif not off.offline and not force_upload and now >= off.next_change:
            off.offline, off.since = True, now
            off.next_change = now + off.seconds
            log.info(
                "gate %s lost its network: admitting offline for %.0f s", off.gate.id, off.seconds
            )

    def upload(self) -> None:
        off = self.off
        assert off.gate is not None
        n, how = len(off.buffer), self.sender.send_batch(off.buffer)
        for pid, final in off.final.items():
            self.pending.discard(pid)
            (self.inside if final == "inside" else self.left).add(pid)
        log.info(
            "gate %s back online after %.0f s: uploaded %d offline scan(s) by %s "
            "(%d conflict(s) with online scans)",
            off.gate.id,
            time.monotonic() - off.since,
            n,
            how,
            off.conflicts,
        )
        self.sent["uploaded"] += n
        self.total_sent += n
        off.offline = False
        off.buffer, off.admitted, off.final, off.conflicts = [], [], {}, 0

    def summary(self, verdicts: Counter[str], seconds: float) -> str:
        # "offline_*" scans are only buffered; they are sent (counted) when "uploaded".
        sent = sum(v for k, v in self.sent.items() if not k.startswith("offline_"))
        parts = ", ".join(f"{k} {v}" for k, v in sorted(self.sent.items()))
        extra = {k: verdicts.pop(k, 0) for k in ("revisions", "replayed", "flagged")}
        vs = ", ".join(f"{k} {v}" for k, v in verdicts.most_common())
        off = self.off
        offline = (
            f"{off.gate.id} OFFLINE ({len(off.buffer)} buffered)"
            if off.offline and off.gate
            else (f"{off.gate.id} online" if off.gate else "none")
        )
        return (
            f"{sent / seconds:.1f} scans/s (curve x{curve(self.phase()) / CURVE_MEAN:.2f}) "
            f"[{parts or 'none'}] | verdicts [{vs or 'none'}; revisions {extra['revisions']}, "
            f"replayed {extra['replayed']}, flagged {extra['flagged']}] | offline gate {offline} "
            f"| inside {len(self.inside) + sum(1 for f in off.final.values() if f == 'inside')}, "
            f"left {len(self.left)}, not arrived {len(self.unseen)} | "
            f"sent by XADD {self.sender.counts['xadd']}, HTTP {self.sender.counts['http']}"
        )


def tamper(token: str, rng: random.Random) -> str:
    """Change one character of the signature part (never the last one, whose low bits are
    padding): the token still parses, its signature no longer verifies."""
    head, _, sig = token.partition(".")
    i = rng.randrange(len(sig) - 2)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    ch = rng.choice([c for c in alphabet if c != sig[i]])
    return f"{head}.{sig[:i]}{ch}{sig[i + 1 :]}"


# --- setup ----------------------------------------------------------------------------------


def _index(r: redis.Redis, ids: list[str]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for i in range(0, len(ids), CHUNK):
        chunk = ids[i : i + CHUNK]
        for pid, raw in zip(chunk, r.hmget(keys.PARTICIPANTS_INDEX, chunk), strict=True):
            if raw:
                out[pid] = json.loads(raw)
    return out


def _wait(
    r: redis.Redis,
    expected: Callable[[dict[str, dict]], int],
    ids: list[str],
    what: str,
    stop: Callable[[], bool],
) -> bool:
    """Poll participants:index until `expected(index)` is 0 (nothing pending); log progress."""
    deadline = time.monotonic() + 180
    next_log = time.monotonic() + 10
    while not stop():
        pending = expected(_index(r, ids))
        if not pending:
            return True
        if time.monotonic() > deadline:
            log.warning(
                "the check-in flow has not applied %d %s after 180 s (is it running?); "
                "scanning anyway",
                pending,
                what,
            )
            return False
        if time.monotonic() >= next_log:
            log.info("waiting for the check-in flow to apply %d %s", pending, what)
            next_log += 10
        time.sleep(0.5)
    return False


def setup_participants(
    r: redis.Redis, n: int, seed: int, stop: Callable[[], bool]
) -> tuple[list[str], dict[str, int], list[str]]:
    """Import N participants if needed, revoke a few; return ids, serials, revoked ids."""
    people = synthetic_participants(n, seed)
    ids = [p.id for p in people]
    registered = r.hlen(keys.PARTICIPANTS_INDEX)
    res = import_participants(r, people, wait=0)
    log.info(
        "participants: %d registered before; %d new, %d updated, %d unchanged sent to the flow",
        registered,
        res.new,
        res.updated,
        res.unchanged,
    )
    if res.sent:
        digests = {p.id: participant_digest(p) for p in people}
        t = time.monotonic()
        ok = _wait(
            r,
            lambda idx: sum(1 for i, d in digests.items() if idx.get(i, {}).get("digest") != d),
            ids,
            "participants",
            stop,
        )
        if ok:
            log.info("the check-in flow applied them in %.1f s", time.monotonic() - t)
    rng = random.Random(f"revoked-{seed}")
    to_revoke = sorted(rng.sample(ids, min(len(ids), max(2, n // 250))))
    index = _index(r, ids)
    ops = [
        ParticipantOp(op="revoke", id=pid, reason="simulated: ticket refunded")
        for pid in to_revoke
        if pid in index and not index[pid].get("revoked")
    ]
    if ops:
        send_ops(r, ops)
        log.info("revoked %d participant(s): %s", len(ops), ", ".join(o.id or "" for o in ops))
        _wait(
            r,
            lambda idx: sum(1 for o in ops if not idx.get(o.id or "", {}).get("revoked")),
            [o.id or "" for o in ops],
            "revocations",
            stop,
        )
        index = _index(r, ids)
    # Anyone revoked (by us, or by an organiser in the dashboard) is only scanned as "revoked".
    revoked = [pid for pid in ids if index.get(pid, {}).get("revoked")]
    serials = {pid: int(v.get("serial", 0)) for pid, v in index.items()}
    return ids, serials, revoked


def restore_from_lake(lake_dir: Path) -> tuple[set[str], set[str]]:
    """Participants whose latest accepted scan was an entry (inside) or an exit (left)."""
    inside: set[str] = set()
    left: set[str] = set()
    try:
        from storage.catalog import connect_memory, query

        con = connect_memory(lake_dir)
        try:
            _, rows = query(
                con,
                "SELECT participant_id, arg_max(direction, ts) FROM checkins "
                "WHERE status = 'accepted' AND participant_id IS NOT NULL GROUP BY 1",
            )
        finally:
            con.close()
    except Exception as exc:  # no lake yet, or a table being rewritten: start from scratch
        log.info("no earlier check-ins read from the lake (%s)", exc)
        return inside, left
    for pid, direction in rows:
        (inside if direction == "in" else left).add(pid)
    return inside, left


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m sim.gates",
        description="Simulated gates: check-ins (and everything that goes wrong at a gate) "
        "into checkins:in / POST /api/checkins, for `run.py demo`.",
    )
    ap.add_argument("--participants", type=int, default=2000, help="synthetic participants")
    ap.add_argument("--rate", type=float, default=5.0, help="check-ins per second on average")
    ap.add_argument("--http", default=None, help="dashboard base URL for POST /api/checkins")
    ap.add_argument("--api-key", default=None, help="gate API key (X-API-Key)")
    ap.add_argument(
        "--http-share", type=float, default=0.2, help="share of scans sent by HTTP (0.2)"
    )
    ap.add_argument("--cycle", type=float, default=600.0, help="seconds per arrival-curve cycle")
    ap.add_argument(
        "--offline-gate", default=None, help="gate that goes offline (default: 2nd entry gate)"
    )
    ap.add_argument("--offline-every", type=float, default=180.0, help="seconds (0: never)")
    ap.add_argument("--offline-seconds", type=float, default=60.0, help="how long it is offline")
    ap.add_argument("--seconds", type=float, default=0, help="stop after this long (0: never)")
    ap.add_argument("--seed", type=int, default=1, help="participants' seed (same rows each run)")
    ap.add_argument(
        "--rare",
        type=float,
        default=1.0,
        help="multiply the shares of rare scans (duplicates, retries, forged, …, offline "
        "conflicts) by this: 5 shows every outcome within a few hundred scans",
    )
    args = ap.parse_args(argv)
    if args.participants < 1 or args.participants > 999_999:
        ap.error("--participants must be 1 … 999999")
    if args.rate <= 0:
        ap.error("--rate must be > 0")
    if not 0 <= args.rare * sum(p for _, p in ANOMALIES) < 0.8:
        ap.error("--rare: rare scans would crowd out the ordinary ones")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s gates %(levelname)s %(message)s")
    s = Settings()
    url = s.effective_redis_url
    venue = venue_for(s.venue_config)
    stop = threading.Event()

    def _stop(*_: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)

    r = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
    if args.http:
        wait_for_dashboard(args.http, stop.is_set)
    signer = load_signer(s.data_dir)
    ids, serials, revoked = [], {}, []
    while not stop.is_set():
        try:
            ids, serials, revoked = setup_participants(r, args.participants, args.seed, stop.is_set)
            break
        except redis.exceptions.RedisError as exc:
            log.warning("Redis unavailable (%s); retrying", exc)
            stop.wait(1.0)
    if stop.is_set():
        return 0
    revoked_set = set(revoked)
    rng = random.Random()
    sender = Sender(r, args.http, args.api_key)
    sim = GateSim(
        venue, signer, sender, [i for i in ids if i not in revoked_set], serials, revoked, args, rng
    )
    inside, left = restore_from_lake(s.lake)
    sim.restore(inside, left)
    log.info(
        "event %s, gates %s; %d participants (%d revoked), %d inside and %d left before; "
        "%.1f check-ins/s on average, offline gate %s; by HTTP: %s",
        venue.event.id,
        ", ".join(g.id for g in venue.gates),
        len(ids),
        len(revoked),
        len(sim.inside),
        len(sim.left),
        args.rate,
        sim.off.gate.id if sim.off.gate and sim.off.every > 0 else "none",
        f"{args.http_share:.0%} via {args.http}" if sender.base else "no",
    )
    tally = VerdictTally(url)
    tally.start()

    t_start = last_summary = time.monotonic()
    next_scan = t_start
    while not stop.is_set():
        now = time.monotonic()
        if args.seconds and now - t_start >= args.seconds:
            break
        try:
            sim.offline_tick()
            sim.due()
            if now >= next_scan:
                sim.scan()
                next_scan = now + rng.expovariate(sim.rate_now())
        except redis.exceptions.RedisError as exc:
            log.warning("send failed (%s); retrying", exc)
            stop.wait(1.0)
        if now - last_summary >= SUMMARY_EVERY_S:
            log.info("%s", sim.summary(tally.take(), now - last_summary))
            sim.sent.clear()
            last_summary = now
        stop.wait(max(0.0, min(next_scan - time.monotonic(), 0.1)))

    try:
        sim.offline_tick(force_upload=True)  # an offline gate uploads before it shuts down
    except redis.exceptions.RedisError as exc:
        log.warning("offline buffer of %d scan(s) not uploaded: %s", len(sim.off.buffer), exc)
    sender.close()
    time.sleep(0.3)  # the last verdicts
    tally.halt.set()
    tally.join(2)
    total = ", ".join(f"{k} {v}" for k, v in tally.total.most_common())
    log.info(
        "stopped after %d scans (by XADD %d, by HTTP %d); verdicts seen: %s",
        sim.total_sent,
        sender.counts["xadd"],
        sender.counts["http"],
        total or "none",
    )
    r.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
