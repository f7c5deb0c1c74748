"""The check-in decider keeps no nonce in memory beyond the batch it decides (issue 15).

Before, `NonceBook` held every nonce's first use for a day: the 30-minute soak saw each decider
grow by 6.75 MiB/min. Now the first uses live in Redis only (`keys.decider_nonce_key`, with a
TTL), looked up per batch. A real decider (in-process, on a real redis-server) decides a few
thousand unique scans; its book is then empty, and what a nonce names is still known.
"""

from __future__ import annotations

import json
from pathlib import Path

import redis

from core import keys
from core.tokens import load_signer, load_verifier
from core.venue import load_venue
from flows.checkins_decider import CheckinDecider
from tests.attendance_helpers import EVENT_ID, add_participants, scan, write_venue

SCANS = 3000
BATCH = 500


def _decider(url: str, data_dir: Path, tmp_path: Path) -> CheckinDecider:
    venue = load_venue(write_venue(tmp_path / "venue.yaml"))
    d = CheckinDecider(url, venue, load_verifier(data_dir), 4096, 0, count=BATCH)
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
    _drain(d)
    assert any(
        reason.startswith(f"nonce_conflict: nonce {nonces[0]!r}") for reason in _dead_reasons(r)
    )
    again = json.loads(r.get(keys.verdict_key(nonces[0])))
    assert again["replayed"] and again["checkin_id"] == first["checkin_id"]


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
    _drain(d)
    assert any(
        reason.startswith("nonce_conflict: nonce 'live-nonce-1'") for reason in _dead_reasons(r)
    )
