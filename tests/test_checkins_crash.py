"""kill -9 of the check-in flow under load: nobody admitted twice, no verdict lost, and the
statistics equal a recount of the lake's `checkins` table.

The expected outcome is computed by running the same `parse_input`/`step` functions over the
same stream entries, in order, in this process — so the test checks that the crashes and
replays changed nothing at all, not merely that totals look plausible.
"""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis

from connectors.redis_streams import StreamBatch
from core import keys
from core.tokens import load_signer, load_verifier
from core.venue import load_venue
from flows.checkins_logic import NonceBook, parse_input, step
from storage.catalog import connect_memory, query
from tests.attendance_helpers import EVENT_ID, add_participants, wait_participants, write_venue
from tests.conftest import FlowProcess, RedisServer, _pings, wait_for

PEOPLE = 1500
SCANS = 12_000


def _scans(signer, people: list[str], rng: random.Random) -> list[dict]:
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=12)
    tokens = {p: signer.mint(EVENT_ID, p) for p in people}
    docs: list[dict] = []
    for i in range(SCANS):
        if docs and rng.random() < 0.05:
            docs.append(dict(rng.choice(docs)))  # a retried upload: same nonce
            continue
        p = rng.choice(people)
        direction = "in" if rng.random() < 0.7 else "out"
        gate = rng.choice(["main", "side"] if direction == "in" else ["main", "exit", "side"])
        tok = tokens[p]
        if rng.random() < 0.02:
            tok = tok[:-5] + "AAAAA"  # altered
        doc = {
            "gate_id": gate,
            "token": tok,
            "direction": direction,
            "nonce": uuid.UUID(int=rng.getrandbits(128)).hex,
            # event time spread over 10 minutes, out of order (offline gates)
            "ts": (base + timedelta(seconds=i * 600 / SCANS + rng.uniform(-90, 0))).isoformat(),
            "offline": rng.random() < 0.1,
        }
        docs.append(doc)
    return docs


def _expected(
    r: redis.Redis, venue_path: Path, data_dir: Path
) -> tuple[dict[str, object], dict[tuple[str, int], str]]:
    """Participant states and (checkin id, revision) → status from the same functions over the
    same stream entries, in order, undisturbed."""
    venue = load_venue(venue_path)
    verifier = load_verifier(data_dir)
    states: dict[str, object] = {}
    expected_rows: dict[tuple[str, int], str] = {}
    nonces = NonceBook()  # what each nonce names, as the deciders keep it
    for stream in (keys.PARTICIPANTS_IN, keys.CHECKINS_IN):
        entries = [(eid.decode(), f.get(b"data")) for eid, f in r.xrange(stream)]
        batch = StreamBatch(stream, entries)
        for key, item in parse_input(batch, verifier, 4096, nonces=nonces).items:
            states[key], out = step(states.get(key), item, venue)  # type: ignore[arg-type]
            for v in out.verdicts:
                if not v["replayed"]:
                    expected_rows[(v["checkin_id"], v["revision"])] = v["status"]
    return states, expected_rows


def _lake(data_dir: Path, sql: str) -> list[tuple]:
    con = connect_memory(data_dir / "lake")
    try:
        return query(con, sql)[1]
    finally:
        con.close()


def test_kill_9_mid_load_changes_nothing(
    r: redis.Redis, flow_env: dict[str, str], data_dir: Path, tmp_path: Path
) -> None:
    env = {
        **flow_env,
        "VENUE_CONFIG": str(write_venue(tmp_path / "venue.yaml", allow_entry_after_exit=True)),
        "CHECKIN_ALLOWED_LATENESS_S": "2",
    }
    rng = random.Random(20261121)
    signer = load_signer(data_dir)
    flow = FlowProcess("checkins", env, data_dir / "flow.log").start()
    people = [f"P{i:05d}" for i in range(PEOPLE)]
    add_participants(r, people)
    wait_participants(r, people)
    docs = _scans(signer, people, rng)

    def produce() -> None:
        for i in range(0, len(docs), 400):
            pipe = r.pipeline(transaction=False)
            for d in docs[i : i + 400]:
                pipe.xadd(keys.CHECKINS_IN, {"data": json.dumps(d)})
            pipe.execute()
            time.sleep(0.05)

    producer = threading.Thread(target=produce)
    producer.start()
    for _ in range(2):  # two crashes at random points of the load
        time.sleep(rng.uniform(0.5, 2.0))
        flow.kill()
        flow.start()
    producer.join()
    # A last scan "now" moves the watermark past every minute of the load, closing them.
    marker = uuid.uuid4().hex
    r.xadd(
        keys.CHECKINS_IN,
        {"data": json.dumps({"gate_id": "nowhere", "token": "x", "nonce": marker})},
    )

    # The expected result: the same functions over the same entries, in stream order.
    states, expected_rows = _expected(r, Path(env["VENUE_CONFIG"]), data_dir)
    final = {cid: st for (cid, _rev), st in sorted(expected_rows.items())}

    # No verdict lost: every nonce has its verdict.
    nonces = {d["nonce"] for d in docs} | {marker}
    wait_for(lambda: all(r.mget([keys.verdict_key(n) for n in nonces])), 120, what="all verdicts")
    wait_for(lambda: flow.alive(), 1)

    def lake(sql: str) -> list[tuple]:
        return _lake(data_dir, sql)

    wait_for(
        lambda: lake("select count(*) from checkin_decisions")[0][0] >= len(expected_rows),
        120,
        what="every decision in the lake",
    )
    # Exactly once: every (scan, revision) once, with the statuses of the undisturbed run.
    decisions = lake("select checkin_id, revision, status from checkin_decisions")
    got = {(c, rev): s for c, rev, s in decisions}
    assert len(decisions) == len(got) == len(expected_rows)
    wrong = {k: (got.get(k), s) for k, s in expected_rows.items() if got.get(k) != s}
    assert not wrong, f"{len(wrong)} decisions differ, e.g. {list(wrong.items())[:5]}"
    latest = dict(lake("select checkin_id, status from checkins"))
    assert latest == final

    # Nobody admitted twice: without multiple entries, accepted entries alternate with exits.
    per_person = lake(
        "select participant_id, list(direction order by ts, checkin_id) from checkins "
        "where status = 'accepted' group by 1"
    )
    for pid, dirs in per_person:
        assert all(a != b for a, b in itertools.pairwise(dirs)), (pid, dirs)

    # The statistics equal a recount of `checkins` (every closed minute of the load).
    def recount() -> tuple[Counter, Counter]:
        counted = Counter(
            {
                (m.isoformat(), g, d, s): n
                for m, g, d, s, n in lake(
                    "select minute, gate_id, direction, status, count from attendance_per_minute "
                    "where gate_id <> 'nowhere'"
                )
            }
        )
        direct = Counter(
            {
                (m.isoformat(), g, d, s): n
                for m, g, d, s, n in lake(
                    "select date_trunc('minute', ts), gate_id, direction, status, count(*) "
                    "from checkins where gate_id <> 'nowhere' group by all"
                )
            }
        )
        return counted, direct

    _counted, direct = wait_for(lambda: (c := recount())[0] == c[1] and c, 120, what="recount")
    assert sum(direct.values()) == len(final) - 1  # every scan but the marker

    # The live totals equal the same functions' state, and a recount of the lake.
    summaries = [st.summary() for st in states.values() if st]
    expected_totals = [sum(s[i] for s in summaries) for i in range(3)]

    def totals_settled() -> dict | None:
        doc = json.loads(r.get(keys.ATTENDANCE_TOTALS))
        got = [doc["registered"], doc["checked_in"], doc["inside"]]
        return doc if got == expected_totals else None

    wait_for(totals_settled, 10, what=f"attendance:totals to show {expected_totals}")
    totals = json.loads(r.get(keys.ATTENDANCE_TOTALS))
    inside = {pid for pid, dirs in per_person if dirs[-1] == "in"}
    assert totals["checked_in"] == len(per_person)
    assert totals["inside"] == len(inside)
    assert totals["registered"] == PEOPLE
    flow.stop()


def test_redis_restart_mid_load_loses_and_repeats_nothing(
    redis_server: RedisServer, r: redis.Redis, flow_env: dict[str, str], data_dir: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    """Redis stops (its AOF kept) while the flow works through a backlog, then comes back: the
    decider reloads what was committed and carries on; every scan is decided exactly once."""
    env = {
        **flow_env,
        "VENUE_CONFIG": str(write_venue(tmp_path / "venue.yaml", allow_entry_after_exit=True)),
    }
    rng = random.Random(7)
    signer = load_signer(data_dir)
    flow = FlowProcess("checkins", env, data_dir / "flow.log").start()
    people = [f"P{i:05d}" for i in range(300)]
    add_participants(r, people)
    wait_participants(r, people)
    docs = _scans(signer, people, rng)[:4000]
    for i, half in enumerate((docs[:2000], docs[2000:])):
        pipe = r.pipeline(transaction=False)
        for d in half:
            pipe.xadd(keys.CHECKINS_IN, {"data": json.dumps(d)})
        pipe.execute()
        if i == 0:
            redis_server.stop()  # while the flow works through the first half
            time.sleep(1.5)
            redis_server.start()
            wait_for(lambda: _pings(r), 10, what="redis back")
    _states, expected_rows = _expected(r, Path(env["VENUE_CONFIG"]), data_dir)
    nonces = {d["nonce"] for d in docs}
    wait_for(lambda: all(r.mget([keys.verdict_key(n) for n in nonces])), 120, what="verdicts")
    assert flow.alive(), flow.log_tail()
    wait_for(
        lambda: (
            _lake(data_dir, "select count(*) from checkin_decisions")[0][0] >= len(expected_rows)
        ),
        120,
        what="every decision in the lake",
    )
    decisions = _lake(data_dir, "select checkin_id, revision, status from checkin_decisions")
    got = {(c, rev): st for c, rev, st in decisions}
    assert len(decisions) == len(got) == len(expected_rows)
    assert got == expected_rows
    flow.stop()
