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
