"""The check-in flow end to end: real Redis, a real Bytewax process, real Parquet and DuckDB.

One flow serves the whole module (its start-up is the slow part); every test uses its own
participants, so the tests do not see each other's state.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from core import keys
from core.tokens import load_signer
from storage.catalog import connect_memory, query
from tests.attendance_helpers import (
    EVENT_ID,
    add_participants,
    scan,
    verdict,
    wait_participants,
    write_venue,
)
from tests.conftest import API_KEY, FlowProcess, RedisServer, wait_for


class Setup:
    def __init__(self, tmp: Path):
        self.redis = RedisServer(tmp / "redis")
        self.redis.start()
        self.r = redis.Redis.from_url(self.redis.url)
        self.data = tmp / "data"
        self.data.mkdir()
        self.env = {
            "REDIS_URL": self.redis.url,
            "DATA_DIR": str(self.data),
            "API_KEYS": API_KEY,
            "VENUE_CONFIG": str(write_venue(tmp / "venue.yaml")),
            "SNAPSHOT_INTERVAL_S": "1",
            "LAKE_FLUSH_AGE_S": "0",
            "CHECKIN_ALLOWED_LATENESS_S": "2",
        }
        self.signer = load_signer(self.data)
        self.flow = FlowProcess("checkins", self.env, self.data / "flow.log").start()

    def people(self, n: int) -> list[str]:
        ids = [f"T{uuid.uuid4().hex[:10]}" for _ in range(n)]
        add_participants(self.r, ids)
        wait_participants(self.r, ids)
        return ids

    def token(self, pid: str, serial: int = 0, event: str = EVENT_ID) -> str:
        return self.signer.mint(event, pid, serial)

    def sql(self, q: str) -> list[tuple]:
        con = connect_memory(self.data / "lake")
        try:
            return query(con, q)[1]
        finally:
            con.close()


@pytest.fixture(scope="module")
def cf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    s = Setup(tmp_path_factory.mktemp("checkins"))
    yield s
    if s.flow.alive():
        s.flow.kill()
    s.redis.kill()


def _closed_gate_scan(cf: Setup) -> str:
    return scan(cf.r, cf.token(cf.people(1)[0]), gate="night")


def _revoked(cf: Setup) -> str:
    pid = cf.people(1)[0]
    cf.r.xadd(keys.PARTICIPANTS_IN, {"data": json.dumps({"op": "revoke", "id": pid})})
    wait_for(lambda: json.loads(cf.r.hget(keys.PARTICIPANTS_INDEX, pid))["revoked"], 30)
    return scan(cf.r, cf.token(pid))


def _reissued(cf: Setup) -> str:
    pid = cf.people(1)[0]
    cf.r.xadd(keys.PARTICIPANTS_IN, {"data": json.dumps({"op": "reissue", "id": pid})})
    wait_for(lambda: json.loads(cf.r.hget(keys.PARTICIPANTS_INDEX, pid))["serial"] == 1, 30)
    assert verdict(cf.r, scan(cf.r, cf.token(pid, serial=1)))["status"] == "accepted"
    return scan(cf.r, cf.token(pid, serial=0), gate="side")


def _duplicate(cf: Setup) -> str:
    tok = cf.token(cf.people(1)[0])
    assert verdict(cf.r, scan(cf.r, tok))["status"] == "accepted"
    return scan(cf.r, tok, gate="side")


def _reentry(cf: Setup) -> str:
    tok = cf.token(cf.people(1)[0])
    assert verdict(cf.r, scan(cf.r, tok))["status"] == "accepted"
    assert verdict(cf.r, scan(cf.r, tok, gate="exit", direction="out"))["status"] == "accepted"
    return scan(cf.r, tok)


def _forged(cf: Setup) -> str:
    tok = cf.token(cf.people(1)[0])
    _head, sig = tok.split(".")
    forged_payload = cf.token("SOMEONE-ELSE").split(".")[0]
    return scan(cf.r, f"{forged_payload}.{sig}")


#: outcome → how to provoke it (each makes its own participants).
CASES = {
    "accepted": lambda cf: scan(cf.r, cf.token(cf.people(1)[0])),
    "duplicate": _duplicate,
    "reentry_not_allowed": _reentry,
    "exit_without_entry": lambda cf: scan(
        cf.r, cf.token(cf.people(1)[0]), gate="exit", direction="out"
    ),
    "unknown_token": lambda cf: scan(cf.r, "not-a-ticket"),
    "invalid_signature": _forged,
    "revoked": _revoked,
    "wrong_event": lambda cf: scan(cf.r, cf.token(cf.people(1)[0], event="other-event")),
    "unknown_gate": lambda cf: scan(cf.r, cf.token(cf.people(1)[0]), gate="nowhere"),
    "wrong_direction": lambda cf: scan(cf.r, cf.token(cf.people(1)[0]), gate="exit"),
    "gate_closed": _closed_gate_scan,
}


@pytest.mark.parametrize("outcome", sorted(CASES))
def test_each_outcome(cf: Setup, outcome: str) -> None:
    nonce = CASES[outcome](cf)
    v = verdict(cf.r, nonce)
    assert v["status"] == outcome, v
    assert v["reason"]
    # ... and the same verdict reached the lake.
    rows = wait_for(
        lambda: cf.sql(f"select status, reason from checkins where nonce = '{nonce}'"), 30
    )
    assert rows == [(outcome, v["reason"])]


def test_revoked_reissued_token_and_unknown_participant(cf: Setup) -> None:
    v = verdict(cf.r, _reissued(cf))
    assert (v["status"], "newer ticket" in v["reason"]) == ("revoked", True)
    v = verdict(cf.r, scan(cf.r, cf.token("NEVER-REGISTERED")))
    assert v["status"] == "unknown_token" and "no participant" in v["reason"]


def test_verdict_is_published_on_the_gate_channel(cf: Setup) -> None:
    tok = cf.token(cf.people(1)[0])
    ps = cf.r.pubsub()
    ps.subscribe(keys.verdict_channel("side"))
    wait_for(lambda: ps.get_message(timeout=0.1), 5, what="subscribe confirmation")
    nonce = scan(cf.r, tok, gate="side")

    def got() -> dict | None:
        m = ps.get_message(timeout=0.2)
        return json.loads(m["data"]) if m and m["type"] == "message" else None

    v = wait_for(got, 30, what="a verdict on checkins:verdict:side")
    ps.close()
    assert (v["nonce"], v["status"], v["participant_name"]) == (
        nonce,
        "accepted",
        v["participant_name"],
    )
    assert v["participant_name"].startswith("Name T")


def test_nonce_retries_count_once(cf: Setup) -> None:
    pid = cf.people(1)[0]
    tok = cf.token(pid)
    nonce = scan(cf.r, tok)
    first = verdict(cf.r, nonce)
    for _ in range(3):
        scan(cf.r, tok, nonce=nonce)
    marker = scan(cf.r, cf.token(cf.people(1)[0]))  # processed after the retries
    verdict(cf.r, marker)
    assert first["status"] == "accepted"
    assert verdict(cf.r, nonce)["status"] == "accepted"  # the retries did not turn it duplicate
    wait_for(lambda: cf.sql(f"select 1 from checkins where nonce = '{marker}'"), 30)
    assert cf.sql(f"select count(*) from checkin_decisions where nonce = '{nonce}'") == [(1,)]


def test_offline_upload_lands_in_its_minute_and_later_than_lateness_is_a_correction(
    cf: Setup,
) -> None:
    pid = cf.people(1)[0]
    ts = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    nonce = scan(cf.r, cf.token(pid), gate="side", ts=ts, offline=True)
    v = verdict(cf.r, nonce)
    assert v["status"] == "accepted" and v["offline"]
    minute = ts.replace(second=0)

    def counted() -> list[tuple]:
        return cf.sql(
            "select count, late_count from attendance_per_minute where gate_id = 'side' "
            f"and status = 'accepted' and minute = '{minute.isoformat()}'"
        )

    # Thirty minutes is far beyond the allowed lateness: counted as a late correction in
    # its own minute, and listed in late_records.
    assert wait_for(counted, 30, what="the offline scan's minute") == [(1, 1)]
    assert cf.sql(f"select table_name from late_records where record_id = '{v['checkin_id']}'") == [
        ("checkins",)
    ]


def test_two_offline_gates_earliest_scan_wins(cf: Setup) -> None:
    tok = cf.token(cf.people(1)[0])
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    # Gate `side` syncs first: its scan at t0+60s is accepted for now.
    late_scan = scan(cf.r, tok, gate="side", ts=t0 + timedelta(seconds=60), offline=True)
    assert verdict(cf.r, late_scan)["status"] == "accepted"
    # Gate `main` syncs later, with an EARLIER scan of the same ticket: it wins.
    early_scan = scan(cf.r, tok, gate="main", ts=t0, offline=True)
    assert verdict(cf.r, early_scan)["status"] == "accepted"
    revised = verdict(cf.r, late_scan, revision=1)
    assert (revised["status"], revised["flagged"], revised["revision"]) == ("duplicate", True, 1)

    rows = wait_for(
        lambda: (
            cf.sql(
                "select nonce, status, flagged, revision from checkins "
                f"where nonce in ('{late_scan}', '{early_scan}') order by ts"
            )
            if len(cf.sql(f"select 1 from checkin_decisions where nonce = '{late_scan}'")) == 2
            else None
        ),
        30,
    )
    assert rows == [(early_scan, "accepted", False, 0), (late_scan, "duplicate", True, 1)]

    # The per-minute counts moved the arrival from t0+60s's minute to t0's minute.
    minutes = (t0.replace(second=0), (t0 + timedelta(seconds=60)).replace(second=0))

    def per_minute(gate: str, status: str) -> int:
        got = cf.sql(
            "select coalesce(sum(count), 0) from attendance_count_parts "
            f"where gate_id = '{gate}' and status = '{status}' and window_start in "
            f"('{minutes[0].isoformat()}', '{minutes[1].isoformat()}')"
        )
        return got[0][0]

    wait_for(lambda: per_minute("side", "duplicate") == 1, 30, what="the revision's counts")
    assert per_minute("side", "accepted") == 0
    assert per_minute("main", "accepted") == 1
