"""The check-in decider's memory stays bounded (issue 15).

Before, `NonceBook` held every nonce's first use for a day: the 30-minute soak saw each decider
grow by 6.75 MiB/min. Now the first uses live in Redis only (`keys.decider_nonce_key`, with a
TTL), looked up per batch. A real decider (in-process, on a real redis-server) decides a few
thousand unique scans; its book is then empty, and what a nonce names is still known.

The participant states (histories of up to `MAX_HISTORY` scans) were all held too, loaded in
full at start: now a bounded cache of the state hash (`checkins_decider.StateCache`). A decider
with a cache far smaller than its states decides exactly what the plain `step` loop holding
every state decides, and never holds more than its bound once a batch is committed.
"""

from __future__ import annotations

import json
import pickle
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis

from connectors.redis_streams import StreamBatch
from core import keys
from core.tokens import load_signer, load_verifier
from core.venue import load_venue
from flows.checkins_decider import CheckinDecider
from flows.checkins_logic import NonceBook, parse_input, step
from tests.attendance_helpers import EVENT_ID, add_participants, scan, write_venue
from tests.conftest import wait_for

SCANS = 3000
BATCH = 500


def _decider(
    url: str, data_dir: Path, tmp_path: Path, batch: int = BATCH, cache_scans: int = 100_000
) -> CheckinDecider:
    venue = load_venue(write_venue(tmp_path / "venue.yaml"))
    d = CheckinDecider(
        url, venue, load_verifier(data_dir), 4096, 0, count=batch, cache_scans=cache_scans
    )
    d._load()
    return d


def _drain(d: CheckinDecider) -> int:
    """Decide until the input is read; the most nonces the book held at a commit."""
    most = 0
    while True:
        before = d._nonces.take_changes
        held: list[int] = []

        def take(before=before, held=held) -> dict[str, bytes]:
            held.append(len(d._nonces.added))
            return before()

        d._nonces.take_changes = take  # type: ignore[method-assign]
        if not d._once():
            return most
        most = max([most, *held])


def _dead_reasons(r: redis.Redis) -> list[str]:
    return [f[b"reason"].decode() for _id, f in r.xrange(keys.CHECKINS_DEAD)]


def _decide_until_dead(d: CheckinDecider, r: redis.Redis, prefix: str) -> None:
    """Decide until a dead letter starting with `prefix` is written. `_drain` alone can stop
    before scans added after an empty read: the reader then waits before reading again, and
    on a loaded machine (load 6-27) the test failed 3 of 9 runs that way."""

    def dead() -> bool:
        d._once()
        return any(reason.startswith(prefix) for reason in _dead_reasons(r))

    wait_for(dead, 30, 0.05, f"a dead letter {prefix!r}")


def test_the_book_stays_bounded_and_redis_knows_every_nonce(
    r: redis.Redis, redis_url: str, data_dir: Path, tmp_path: Path
) -> None:
    signer = load_signer(data_dir)
    people = [f"P{i:03d}" for i in range(50)]
    add_participants(r, people)
    tokens = [signer.mint(EVENT_ID, p) for p in people]
    nonces = [
        scan(r, tokens[i % len(people)], direction="in" if i % 2 == 0 else "out")
        for i in range(SCANS)
    ]
    d = _decider(redis_url, data_dir, tmp_path)
    most = _drain(d)

    # In memory: at most one batch's nonces while deciding it, none once committed.
    assert 0 < most <= BATCH
    assert d._nonces.added == {} and d._nonces._pending == []
    # In Redis: every nonce's first use, expiring after its day (and the hour of slack).
    got = r.mget([keys.decider_nonce_key(0, n) for n in nonces])
    assert all(got), "a nonce's first use was not committed"
    assert json.loads(got[0])[:3] == [
        json.loads(r.get(keys.verdict_key(nonces[0])))["token_fp"],
        "main",
        "in",
    ]
    ttl = r.ttl(keys.decider_nonce_key(0, nonces[-1]))
    assert keys.VERDICT_TTL_S < ttl <= keys.NONCE_KEY_TTL_S
    assert not r.exists(keys.decider_nonces_key(0))  # no hash growing without expiry

    # What the first batch's nonce names comes back from Redis: a reuse with another ticket
    # is refused, a retry of the same scan gets its verdict replayed.
    first = json.loads(r.get(keys.verdict_key(nonces[0])))
    scan(r, tokens[1], nonce=nonces[0])
    scan(r, tokens[0], nonce=nonces[0])
    _decide_until_dead(d, r, f"nonce_conflict: nonce {nonces[0]!r}")

    def replayed() -> dict | None:  # the retry of the same scan, after the conflict
        d._once()
        again = json.loads(r.get(keys.verdict_key(nonces[0])))
        return again if again.get("replayed") else None

    again = wait_for(replayed, 30, 0.05, "the retried scan's verdict replayed")
    assert again["checkin_id"] == first["checkin_id"]


def test_a_nonce_hash_from_before_is_moved_to_expiring_keys(
    r: redis.Redis, redis_url: str, data_dir: Path, tmp_path: Path
) -> None:
    """Deciders of the earlier version committed first uses to one hash: the first start
    moves the live ones to their keys (an expired one is dropped) and deletes the hash."""
    signer = load_signer(data_dir)
    add_participants(r, ["P1", "P2"])
    now_ms = int(r.time()[0]) * 1000
    old = json.dumps(["fp-of-someone", "main", "in", now_ms - 1000])
    stale = json.dumps(["fp-of-someone", "main", "in", now_ms - 2 * keys.NONCE_KEY_TTL_S * 1000])
    r.hset(keys.decider_nonces_key(0), mapping={"live-nonce-1": old, "stale-nonce-1": stale})
    d = _decider(redis_url, data_dir, tmp_path)
    assert not r.exists(keys.decider_nonces_key(0))
    assert r.get(keys.decider_nonce_key(0, "live-nonce-1")) == old.encode()
    assert 0 < r.ttl(keys.decider_nonce_key(0, "live-nonce-1")) <= keys.NONCE_KEY_TTL_S
    assert not r.exists(keys.decider_nonce_key(0, "stale-nonce-1"))
    # The moved nonce still names its scan: P1's ticket with it is another ticket.
    scan(r, signer.mint(EVENT_ID, "P1"), nonce="live-nonce-1")
    _decide_until_dead(d, r, "nonce_conflict: nonce 'live-nonce-1'")


def test_a_small_state_cache_decides_as_if_every_state_were_held(
    r: redis.Redis, redis_url: str, data_dir: Path, tmp_path: Path
) -> None:
    """60 participants scanned 1,500 times (entries, exits, scans out of time order that
    overturn earlier verdicts, retries, a reused nonce) through a decider holding at most 100
    scans' worth of states: the states are evicted and read back from Redis all along, and
    once from nothing (the reload after a failed commit). Every verdict, in order, and every
    final state equal the plain `step` loop's over the same input, every state in a dict."""
    bound = 100
    signer = load_signer(data_dir)
    people = [f"Q{i:02d}" for i in range(60)]
    add_participants(r, people)
    tokens = {p: signer.mint(EVENT_ID, p) for p in people}
    rng = random.Random(15)
    start = datetime.now(UTC) - timedelta(hours=2)
    sent: list[tuple[str, str, str, str]] = []  # (nonce, person, gate, direction)
    for i in range(1500):
        if sent and rng.random() < 0.03:  # a gate's retry: the same scan again
            nonce, p, gate, direction = rng.choice(sent)
            scan(r, tokens[p], gate, direction, nonce=nonce)
            continue
        if sent and rng.random() < 0.01:  # a nonce reused with another ticket
            scan(r, tokens[rng.choice(people)], "main", "in", nonce=rng.choice(sent)[0])
            continue
        p = rng.choice(people[: 10 + i // 30])  # the crowd arrives over time
        gate = rng.choice(["main", "side", "exit"])
        direction = "out" if gate == "exit" else rng.choice(["in", "out"])
        ts = start + timedelta(seconds=2 * i - rng.choice([0, 0, 0, 7, 45]))  # some late
        sent.append((scan(r, tokens[p], gate, direction, ts=ts), p, gate, direction))

    d = _decider(redis_url, data_dir, tmp_path, batch=40, cache_scans=bound)
    most = batches = 0
    while d._once():
        batches += 1
        most = max(most, d._cache.scans)
        assert d._cache.scans <= bound
        if batches == 20:
            d._load()  # what a failed commit does: back to Redis, nothing held
            assert len(d._cache) == 0 and d._cache.scans == 0

    # The floor's logic: the same input through `step`, every state held.
    venue = load_venue(tmp_path / "venue.yaml")
    verifier, book = load_verifier(data_dir), NonceBook()
    states: dict = {}
    expected: list[tuple] = []
    for stream in (keys.PARTICIPANTS_IN, keys.CHECKINS_IN):
        entries = [(i.decode(), f[b"data"]) for i, f in r.xrange(stream)]
        parsed = parse_input(StreamBatch(stream, entries), verifier, 4096, 0, 1, book)
        for key, item in parsed.items:
            st, out = step(states.get(key), item, venue)
            if st is None:
                states.pop(key, None)
            else:
                states[key] = st
            expected += [
                (v["nonce"], v["status"], v["revision"], v["replayed"]) for v in out.verdicts
            ]
    got = []
    for _id, f in r.xrange(keys.CHECKINS_VERDICTS):
        v = json.loads(f[b"data"])
        got.append((v["nonce"], v["status"], v["revision"], v["replayed"]))
    assert got == expected
    statuses = {s for _n, s, _r, _p in got}
    assert {"accepted", "duplicate"} <= statuses
    assert any(rev > 0 for _n, _s, rev, _p in got), "no verdict was overturned"
    assert any(replayed for *_x, replayed in got), "no retry was replayed"

    def summary(st) -> tuple:
        return (st.summary(), [(e.checkin_id, e.status, e.revision) for e in st.history])

    held = {k.decode(): v for k, v in r.hgetall(keys.decider_state_key(0)).items()}
    assert held.keys() == states.keys()
    assert {k: summary(pickle.loads(v)) for k, v in held.items()} == {
        k: summary(st) for k, st in states.items()
    }
    assert most > bound // 2, "the cache was never filled"
    assert d._cache.fetched > 300, "states were not evicted and read back"
