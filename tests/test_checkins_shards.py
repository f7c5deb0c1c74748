"""The check-in deciders' shares: every entry is decided by exactly one shard, bad input is
reported once, and a state cut in N shares refuses to run as M (real flow, real Redis)."""

from __future__ import annotations

import json
from pathlib import Path

import redis

from connectors.redis_streams import StreamBatch
from core import keys
from core.tokens import load_signer, load_verifier
from flows.checkins_logic import claimed_key, parse_input, shard_of
from tests.attendance_helpers import EVENT_ID, add_participants, wait_participants, write_venue
from tests.conftest import FlowProcess, wait_for


def _eid(item: object) -> str:
    """The stream entry id of a parsed item (a scan's is its check-in id)."""
    return getattr(item, "checkin_id", None) or item.entry_id  # type: ignore[attr-defined]


def _order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq)


def _scan(token: str, nonce: str) -> bytes:
    return json.dumps({"gate_id": "main", "token": token, "nonce": nonce}).encode()


def test_each_entry_goes_to_exactly_one_shard(tmp_path: Path) -> None:
    signer = load_signer(tmp_path)
    verifier = load_verifier(tmp_path)
    people = [f"P{i:03d}" for i in range(60)]
    good = [signer.mint(EVENT_ID, p) for p in people]
    # A forged ticket: P007's payload with another ticket's signature. It claims P007.
    forged = f"{good[7].split('.')[0]}.{good[8].split('.')[1]}"
    scans = [
        (f"1-{i}", _scan(t, f"nonce-{i:04d}")) for i, t in enumerate([*good, forged, "garbage"])
    ]
    scans += [("2-0", b"not json"), ("2-1", None)]
    ops = [
        (f"3-{i}", json.dumps({"op": "revoke", "id": p, "reason": "x"}).encode())
        for i, p in enumerate(people[:20])
    ]
    batches = [StreamBatch(keys.CHECKINS_IN, scans), StreamBatch(keys.PARTICIPANTS_IN, ops)]

    whole = [parse_input(b, verifier, 4096) for b in batches]
    assert len(whole[0].items) == 62 and len(whole[1].items) == 20  # all but the 2 bad ones
    for shards in (2, 3):
        parts = [
            [parse_input(b, verifier, 4096, i, shards) for b in batches] for i in range(shards)
        ]
        for j, _ in enumerate(batches):
            got = sorted((k, _eid(item)) for i in range(shards) for k, item in parts[i][j].items)
            assert got == sorted((k, _eid(item)) for k, item in whole[j].items)
            # only shard 0 reports bad input, and it reports all of it
            assert parts[0][j].dead == whole[j].dead
            assert all(not parts[i][j].dead and not parts[i][j].dead_rows for i in range(1, shards))
        # the forged ticket is judged by the shard of the participant it claims
        owner = shard_of("p:P007", shards)
        forged_in = [
            i for i in range(shards) if any(_eid(s) == "1-60" for _, s in parts[i][0].items)
        ]
        assert forged_in == [owner] and claimed_key(forged) == "p:P007"
    assert len(whole[0].dead) == 2  # "not json" and the entry without data


def test_a_state_cut_in_two_shares_refuses_three(
    r: redis.Redis, flow_env: dict[str, str], data_dir: Path, tmp_path: Path
) -> None:
    env = {**flow_env, "VENUE_CONFIG": str(write_venue(tmp_path / "venue.yaml"))}
    flow = FlowProcess("checkins", {**env, "CHECKIN_DECIDERS": "2"}, data_dir / "a.log").start()
    add_participants(r, ["P1", "P2", "P3"])
    wait_participants(r, ["P1", "P2", "P3"])
    assert flow.stop() == 0
    assert r.get(keys.CHECKIN_DECIDER_SHARDS) == b"2"

    wrong = FlowProcess("checkins", {**env, "CHECKIN_DECIDERS": "3"}, data_dir / "b.log").start()
    wait_for(lambda: not wrong.alive(), 60, what="the flow to refuse 3 deciders")
    assert "set it back to 2" in (data_dir / "b.log").read_text()


def test_inputs_are_trimmed_only_behind_every_shard(
    r: redis.Redis, flow_env: dict[str, str], data_dir: Path, tmp_path: Path
) -> None:
    """With a short retention the check-in inputs shrink, and only behind what every decider
    committed: a restart afterwards decides nothing again (the verdicts keep revision 0)."""
    env = {
        **flow_env,
        "VENUE_CONFIG": str(write_venue(tmp_path / "venue.yaml")),
        "STREAM_RETENTION_S": "1",
    }
    signer = load_signer(data_dir)
    flow = FlowProcess("checkins", env, data_dir / "flow.log").start()
    people = [f"P{i:03d}" for i in range(200)]
    add_participants(r, people)
    wait_participants(r, people)
    pipe = r.pipeline(transaction=False)
    for i, p in enumerate(people):
        pipe.xadd(keys.CHECKINS_IN, {"data": _scan(signer.mint(EVENT_ID, p), f"trim-{i:04d}")})
    pipe.execute()
    nonces = [f"trim-{i:04d}" for i in range(len(people))]
    wait_for(lambda: all(r.mget([keys.verdict_key(n) for n in nonces])), 60, what="verdicts")
    wait_for(lambda: r.xlen(keys.CHECKINS_IN) < len(people), 30, 0.3, "checkins:in trimmed")
    offsets = [json.loads(r.get(keys.decider_offsets_key(i))) for i in range(2)]
    first = r.xrange(keys.CHECKINS_IN, count=1)
    slower = min((o[keys.CHECKINS_IN] for o in offsets), key=_order)
    if first:  # XTRIM MINID keeps the entry at the id: what is left starts at or before it
        assert _order(first[0][0].decode()) <= _order(slower)
    assert flow.stop() == 0
    flow.start()
    scan_more = signer.mint(EVENT_ID, people[0])
    r.xadd(keys.CHECKINS_IN, {"data": _scan(scan_more, "after-restart")})
    assert json.loads(wait_for(lambda: r.get(keys.verdict_key("after-restart")), 60))
    statuses = {json.loads(v)["status"] for v in r.mget([keys.verdict_key(n) for n in nonces])}
    assert statuses == {"accepted"}
    got = json.loads(r.get(keys.verdict_key("after-restart")))
    assert got["status"] == "duplicate"  # P000 is inside: decided against the kept state
    flow.stop()
