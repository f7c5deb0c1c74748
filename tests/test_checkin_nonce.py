"""A nonce names one scan (issue 10, item 8), through the real app, flow and deciders.

Before: the same nonce with another participant's ticket was decided as a new scan (two lake
rows with one nonce, `verdict:<nonce>` overwritten), and a key bound to gate `main` could read
or overwrite `side`'s verdict by reusing its nonce. Now a second use with another ticket, gate
or direction is refused as `nonce_conflict` (409), changes nothing, and is a dead letter.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from auth.keys import KeyStore
from core import keys
from flows.checkins_logic import shard_of
from tests.checkins_stack import CheckinStack, checkin
from tests.conftest import FlowProcess, wait_for
from tests.lake_helpers import rows


@pytest.fixture(scope="module")
def st(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CheckinStack]:
    s = CheckinStack(tmp_path_factory.mktemp("checkin_nonce"))
    yield s
    s.close()


def _two_shards(st: CheckinStack) -> tuple[str, str]:
    """Two participants decided by different decider processes (CHECKIN_DECIDERS=2)."""
    people = st.people(16)
    a = people[0]
    b = next(p for p in people if shard_of(f"p:{p}", 2) != shard_of(f"p:{a}", 2))
    return a, b


def _dead(st: CheckinStack, entry_id: str) -> dict[str, str] | None:
    for _id, f in st.r.xrange(keys.CHECKINS_DEAD):
        d = {k.decode(): v.decode() for k, v in f.items()}
        if d["origin_id"] == entry_id:
            return d
    return None


def test_nonce_reused_with_another_ticket_is_refused_and_changes_nothing(
    st: CheckinStack,
) -> None:
    a, b = _two_shards(st)
    first = checkin(st.token(a))
    got = st.post(first)
    assert got.status_code == 200 and got.json()["status"] == "accepted", got.text
    stored = st.r.get(keys.verdict_key(first["nonce"]))

    # Another participant's ticket with the same nonce (decided by the other shard).
    reuse = {**first, "token": st.token(b)}
    refused = st.post(reuse)
    assert refused.status_code == 409, refused.text
    v = refused.json()
    assert v["status"] == "nonce_conflict" and "ticket" in v["reason"]
    assert v["participant_id"] != a and v["participant_name"] is None  # nothing of the first
    assert st.r.get(keys.verdict_key(first["nonce"])) == stored  # the first verdict stands
    # Recorded: a dead letter naming the reason, with the entry the 409 names.
    dead = wait_for(lambda: _dead(st, v["checkin_id"]), 10, what="the dead letter")
    assert dead["reason"].startswith("nonce_conflict:") and dead["origin"] == keys.CHECKINS_IN
    # No state changed: b was never admitted, so b's own scan is accepted, not a duplicate.
    own = st.post(checkin(st.token(b)))
    assert own.status_code == 200 and own.json()["status"] == "accepted", own.text
    # The first scan's retry still gets its own verdict, replayed.
    again = st.post(first)
    assert again.status_code == 200, again.text
    assert again.json()["replayed"] is True and again.json()["participant_id"] == a

    # The lake: one `checkins` row for the nonce, and the refusal among the dead letters.
    nonce = first["nonce"]
    wait_for(
        lambda: rows(
            st.data, f"SELECT count(*) FROM dead_letters WHERE origin_id = '{v['checkin_id']}'"
        )[0][0],
        60,
        0.5,
        "the dead letter in the lake",
    )
    assert rows(st.data, f"SELECT count(*) FROM checkins WHERE nonce = '{nonce}'")[0][0] == 1


def test_gate_bound_key_never_gets_another_gates_verdict(st: CheckinStack) -> None:
    main_key, _rec = KeyStore(st.data).create("main gate", "gate", "test", gate_id="main")
    pid, other = st.people(2)
    side = checkin(st.token(pid), gate="side")
    assert st.post(side).json()["status"] == "accepted"
    stored = st.r.get(keys.verdict_key(side["nonce"]))

    # The main key reuses side's nonce: with side's own ticket, or another one.
    for token in (side["token"], st.token(other)):
        r = st.post({**side, "token": token, "gate_id": "main"}, key=main_key)
        assert r.status_code == 409, r.text
        assert r.json()["gate_id"] == "main" and r.json()["status"] == "nonce_conflict"
        assert r.json()["participant_name"] is None
    # Nor can it read it.
    looked = st.http.get(f"/api/checkins/{side['nonce']}", headers={"X-API-Key": main_key})
    assert looked.status_code == 403 and "status" not in looked.json()
    # The same ticket at the same gate in the other direction is another scan, too.
    out = st.post({**side, "direction": "out"})
    assert out.status_code == 409 and out.json()["direction"] == "out", out.text
    assert st.r.get(keys.verdict_key(side["nonce"])) == stored
    assert json.loads(stored)["gate_id"] == "side"


def test_nonce_binding_survives_a_kill_9(st: CheckinStack) -> None:
    """The deciders commit what each nonce names with their state: after kill -9 and a
    restart a reuse is still refused (a book kept only in memory would accept it)."""
    pid, other = st.people(2)
    first = checkin(st.token(pid))
    assert st.post(first).json()["status"] == "accepted"
    st.flow.kill()
    st.flow = FlowProcess("checkins", st.env, st.data / "flow-2.log").start()
    stored = st.r.get(keys.verdict_key(first["nonce"]))
    sent = st.post({**first, "token": st.token(other)}, wait=0)
    assert sent.status_code == 202, sent.text
    dead = wait_for(lambda: _dead(st, sent.json()["id"]), 120, 0.2, "the restarted deciders")
    assert dead["reason"].startswith("nonce_conflict:")
    assert st.r.get(keys.verdict_key(first["nonce"])) == stored
    # ... and the restarted deciders still decide new scans.
    assert st.post(checkin(st.token(other)), wait=10).json()["status"] == "accepted"
