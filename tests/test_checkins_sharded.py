"""STREAM_SHARDS=2 decides exactly as STREAM_SHARDS=1: the same scans, XADDed where the API
routes them (`core.keys.checkins_in` / `participants_in`), give the same verdicts and the same
lake rows (real Redis, real Bytewax flows with their deciders, real Parquet and DuckDB).
Then a `kill -9` of the sharded flow loses and doubles nothing."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis

from core import keys
from core.tokens import load_signer
from storage.catalog import connect_memory, query
from tests.attendance_helpers import EVENT_ID, add_participants, scan, write_venue
from tests.conftest import API_KEY, FlowProcess, RedisServer, wait_for

PEOPLE = [f"S{i:02d}" for i in range(24)]
#: What is compared: everything but arrival and decision times and the stream entry id.
VERDICT_FIELDS = (
    "nonce", "gate_id", "direction", "status", "reason", "participant_id", "revision",
    "flagged", "replayed", "offline",
)  # fmt: skip


class Side:
    """One deployment: its own redis-server, data dir and check-in flow."""

    def __init__(self, tmp: Path, shards: int, keys_from: Path | None = None):
        self.shards = shards
        self.redis = RedisServer(tmp / "redis")
        self.redis.start()
        self.r = redis.Redis.from_url(self.redis.url)
        self.data = tmp / "data"
        self.data.mkdir()
        if keys_from is not None:  # the same key pair: the same tokens on both sides
            shutil.copytree(keys_from / "keys", self.data / "keys")
        self.signer = load_signer(self.data)
        self.env = {
            "REDIS_URL": self.redis.url,
            "DATA_DIR": str(self.data),
            "API_KEYS": API_KEY,
            "VENUE_CONFIG": str(write_venue(tmp / "venue.yaml", allow_entry_after_exit=True)),
            "SNAPSHOT_INTERVAL_S": "1",
            "LAKE_FLUSH_AGE_S": "0",
            "STREAM_SHARDS": str(shards),
            "CHECKIN_DECIDERS": "2",
        }
        self.flow = FlowProcess("checkins", self.env, self.data / "flow.log").start()

    def sql(self, q: str) -> list[tuple]:
        con = connect_memory(self.data / "lake")
        try:
            return query(con, q)[1]
        except Exception:  # no table yet: nothing flushed
            return []
        finally:
            con.close()

    def close(self) -> None:
        if self.flow.proc is not None and self.flow.alive():
            self.flow.kill()
        self.redis.kill()


def _min(n: int) -> timedelta:
    return timedelta(minutes=n)


def _scans(side: Side, t0: datetime) -> list[str]:
    """Entries, duplicates, exits, re-entries, a late offline scan that overturns a verdict,
    a retried nonce, a nonce reused at another gate, forged/garbage/revoked tickets."""
    tok = {p: side.signer.mint(EVENT_ID, p) for p in PEOPLE}
    forged = f"{tok['S01'].split('.')[0]}.{tok['S02'].split('.')[1]}"
    n = side.shards
    nonces = []
    for i, p in enumerate(PEOPLE):
        at = t0 + timedelta(seconds=i)
        nonces.append(scan(side.r, tok[p], nonce=f"first-in-{p}", ts=at, shards=n))
        nonces.append(scan(side.r, tok[p], nonce=f"duplicate-{p}", ts=at + _min(1), shards=n))
        if i % 3 == 0:
            nonces.append(
                scan(side.r, tok[p], "exit", "out", f"exit-out-{p}", at + _min(2), shards=n)
            )
            nonces.append(scan(side.r, tok[p], nonce=f"re-entry-{p}", ts=at + _min(3), shards=n))
    # S05 scanned offline earlier than its online entry: the earliest wins, a revision
    nonces.append(
        scan(side.r, tok["S05"], "side", nonce="early-offline-S05", ts=t0 - _min(1), offline=True,
             shards=n)
    )  # fmt: skip
    nonces.append(
        scan(side.r, tok["S07"], nonce="first-in-S07", ts=t0, shards=n)
    )  # retried: replayed
    scan(
        side.r, tok["S08"], "side", nonce="first-in-S08", ts=t0, shards=n
    )  # reused nonce: conflict
    nonces.append(scan(side.r, forged, nonce="forged-ticket-1", ts=t0, shards=n))
    nonces.append(scan(side.r, "not-a-ticket", nonce="garbage-ticket-1", ts=t0, shards=n))
    nonces.append(scan(side.r, tok["S23"], nonce="revoked-S23", shards=n))  # now: revoked
    side.r.xadd(keys.sharded("checkins:in", 0, n), {"data": b"not json"})  # a dead letter
    return nonces


def _verdicts(side: Side, nonces: list[str]) -> dict[str, tuple]:
    def all_there() -> list[bytes] | None:
        raws = side.r.mget([keys.verdict_key(x) for x in nonces])
        return raws if all(raws) else None

    raws = wait_for(all_there, 90, what=f"verdicts with STREAM_SHARDS={side.shards}")
    out = {}
    for raw in raws:
        v = json.loads(raw)
        out[v["nonce"]] = tuple(v[f] for f in VERDICT_FIELDS)
    return out


def _lake(side: Side, rows: int, dead: int) -> dict[str, list[tuple]]:
    q = {
        "decisions": "select nonce, status, revision, flagged, participant_id, gate_id, "
        "direction from checkin_decisions order by all",
        "participants": "select id, serial, status, op from participants order by all",
        "dead": "select reason from dead_letters order by all",
    }
    wait_for(
        lambda: len(side.sql(q["decisions"])) >= rows and len(side.sql(q["dead"])) >= dead,
        90,
        0.5,
        f"lake rows with STREAM_SHARDS={side.shards}",
    )
    return {k: side.sql(v) for k, v in q.items()}


def test_two_input_shards_decide_as_one(tmp_path: Path) -> None:
    one = Side(tmp_path / "one", 1)
    two = Side(tmp_path / "two", 2, keys_from=one.data)
    try:
        t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
        for side in (one, two):
            add_participants(side.r, PEOPLE, side.shards)
            side.r.xadd(
                keys.participants_in("S23", side.shards),
                {"data": json.dumps({"op": "revoke", "id": "S23", "reason": "lost"})},
            )
        wait_for(lambda: two.r.hlen(keys.PARTICIPANTS_INDEX) == len(PEOPLE), 90)
        wait_for(lambda: one.r.hlen(keys.PARTICIPANTS_INDEX) == len(PEOPLE), 90)
        nonces = _scans(one, t0)
        assert _scans(two, t0) == nonces
        got = [_verdicts(side, nonces) for side in (one, two)]
        assert got[0] == got[1]
        statuses = {v[3] for v in got[0].values()}
        assert {"accepted", "duplicate", "invalid_signature", "unknown_token", "revoked"} <= (
            statuses
        )
        assert (got[0]["first-in-S05"][3], got[0]["first-in-S05"][6]) == (
            "duplicate",
            1,
        )  # overturned
        assert got[0]["first-in-S07"][8] is True  # the retry was answered again (replayed)
        # S00's nonce reused with the ticket of someone in the other shard, then retried: a
        # nonce_conflict both times, with one input or two (the claim crosses the shards).
        other = next(p for p in PEOPLE if keys.shard_of(f"p:{p}", 2) != keys.shard_of("p:S00", 2))
        for side in (one, two):
            ticket = side.signer.mint(EVENT_ID, other)
            for _ in range(2):
                scan(side.r, ticket, nonce="first-in-S00", ts=t0, shards=side.shards)
        rows = len(set(nonces)) + 1  # + S05's revision; the retry is not a new decision
        lakes = [_lake(side, rows, dead=4) for side in (one, two)]
        assert lakes[0] == lakes[1]
        dead = [r for (r,) in lakes[1]["dead"]]
        assert len(dead) == 4 and sum("nonce_conflict" in r for r in dead) == 3, dead
        assert two.r.exists(keys.nonce_claim_key("first-in-S00"))
        for side in (one, two):  # the first scan's verdict stands
            v = json.loads(side.r.get(keys.verdict_key("first-in-S00")))
            assert (v["participant_id"], v["status"]) == ("S00", "accepted")

        # Sharded layout: per-shard inputs and decider keys carrying their hash tag, no
        # plain `checkins:in`, and the state refuses to run unsharded.
        assert not two.r.exists(keys.CHECKINS_IN)
        assert all(two.r.xlen(keys.sharded("checkins:in", k, 2)) for k in (0, 1))
        assert all(two.r.exists(keys.decider_state_key(k, 2)) for k in (0, 1))
        assert two.r.get(keys.CHECKIN_DECIDER_SHARDS) == b"2 input shards"
        assert two.r.get(keys.decider_published_key(0, 2)) is not None

        # kill -9 the sharded flow, scan more, restart: every verdict once, nothing lost.
        two.flow.kill()
        tok = two.signer.mint(EVENT_ID, "S10")
        after = scan(two.r, tok, nonce="after-the-kill", ts=t0 + timedelta(hours=0.5), shards=2)
        two.flow.start()
        v = json.loads(wait_for(lambda: two.r.get(keys.verdict_key(after)), 90))
        assert v["status"] == "duplicate"  # S10 is inside: the state survived
        wait_for(lambda: two.sql(f"select 1 from checkins where nonce = '{after}'"), 90, 0.5)
        counted = two.sql(
            "select count(*), count(distinct (nonce, revision)) from checkin_decisions"
        )
        assert counted[0][0] == counted[0][1] == rows + 1
    finally:
        one.close()
        two.close()
