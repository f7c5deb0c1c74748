"""The gate HTTP API end to end: the real app, the real check-in flow, real Redis.

POST /api/checkins → XADD checkins:in → the flow decides → checkins:verdict:<gate> → the app's
one subscriber hands the verdict to the waiting request → 200 with it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from core import keys
from core.tokens import TokenClaims, TokenProblem, TokenVerifier
from live.attendance import AttendanceModel
from tests.attendance_helpers import EVENT_ID
from tests.checkins_stack import CheckinStack, checkin
from tests.conftest import API_KEY, AppProcess, free_port, wait_for


@pytest.fixture(scope="module")
def st(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CheckinStack]:
    s = CheckinStack(tmp_path_factory.mktemp("checkins_api"))
    yield s
    s.close()


def test_accepted_then_duplicate(st: CheckinStack) -> None:
    pid = st.people()[0]
    tok = st.token(pid)
    first = st.post(checkin(tok))
    assert first.status_code == 200, first.text
    v = first.json()
    assert v["status"] == "accepted"
    assert v["participant_id"] == pid
    assert v["participant_name"] == f"Name {pid}"
    assert v["gate_id"] == "main" and v["direction"] == "in"
    assert v["replayed"] is False

    again = st.post(checkin(tok))
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "duplicate"
    assert again.json()["reason"]


def test_retried_nonce_returns_the_same_verdict_replayed(st: CheckinStack) -> None:
    body = checkin(st.token(st.people()[0]))
    first = st.post(body)
    assert first.status_code == 200, first.text
    retry = st.post(body)
    assert retry.status_code == 200, retry.text
    a, b = first.json(), retry.json()
    assert b["replayed"] is True
    assert a["replayed"] is False
    for field in ("checkin_id", "nonce", "status", "participant_id", "ts"):
        assert a[field] == b[field], field
    assert b["status"] == "accepted"  # counted once: not turned into a duplicate


def test_refused_tokens_get_their_reason(st: CheckinStack) -> None:
    pid = st.people()[0]
    forged = st.post(checkin(st.forged(pid)))
    assert forged.status_code == 200, forged.text
    assert forged.json()["status"] == "invalid_signature"
    junk = st.post(checkin("not-a-ticket"))
    assert junk.json()["status"] == "unknown_token"
    assert junk.json()["reason"]


def test_api_key_is_required(st: CheckinStack) -> None:
    body = checkin(st.token("whoever"))
    for key in (None, "wrong-key"):
        r = st.post(body, key=key)
        assert r.status_code == 401, r.text
        assert "X-API-Key" in r.json()["detail"]
    assert st.http.get(f"/api/checkins/{body['nonce']}").status_code == 401
    assert st.http.post("/api/checkins/batch", json=[body]).status_code == 401
    # Nothing was sent.
    assert st.r.get(keys.verdict_key(body["nonce"])) is None


def test_bad_bodies_are_refused_naming_each_field(st: CheckinStack) -> None:
    before = st.r.xlen(keys.CHECKINS_IN)
    r = st.post({"gate_id": "", "token": "x", "nonce": "short", "method": "fax", "color": 1})
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["detail"] == "invalid check-in"
    fields = {e["field"] for e in body["errors"]}
    assert {"gate_id", "nonce", "method", "color"} <= fields, fields
    assert all(e["message"] for e in body["errors"])

    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    r = st.post(checkin("t", ts=future))
    assert r.status_code == 422 and [e["field"] for e in r.json()["errors"]] == ["ts"]

    r = st.http.post(
        "/api/checkins", content=b"{not json", headers={"X-API-Key": API_KEY}, params={"wait": 0}
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body"

    r = st.post(checkin("t"), wait=11)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "wait"

    r = st.post(checkin("x" * 5000))  # above MAX_CHECKIN_BYTES (4096)
    assert r.status_code == 413, r.text
    assert "4096" in r.json()["detail"]
    assert st.r.xlen(keys.CHECKINS_IN) == before


def test_wait_zero_answers_pending_then_get_by_nonce(st: CheckinStack) -> None:
    body = checkin(st.token(st.people()[0]))
    r = st.post(body, wait=0)
    assert r.status_code == 202, r.text
    doc = r.json()
    assert doc["status"] == "pending" and doc["nonce"] == body["nonce"] and doc["id"]

    def fetched() -> dict | None:
        got = st.http.get(f"/api/checkins/{body['nonce']}", headers={"X-API-Key": API_KEY})
        return got.json() if got.status_code == 200 else None

    v = wait_for(fetched, 30, what="GET /api/checkins/<nonce> to find the verdict")
    assert v["status"] == "accepted" and v["nonce"] == body["nonce"]

    missing = st.http.get(f"/api/checkins/{uuid.uuid4().hex}", headers={"X-API-Key": API_KEY})
    assert missing.status_code == 404
    assert "no verdict" in missing.json()["detail"]


def test_offline_batch_lands_with_original_time(st: CheckinStack) -> None:
    pids = st.people(3)
    scanned = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=3)
    items = [
        checkin(st.token(p), ts=(scanned + timedelta(seconds=i)).isoformat(), offline=True)
        for i, p in enumerate(pids)
    ]
    r = st.http.post("/api/checkins/batch", json=items, headers={"X-API-Key": API_KEY})
    assert r.status_code == 202, r.text
    doc = r.json()
    assert doc["count"] == 3 and len(doc["ids"]) == 3

    for i, item in enumerate(items):
        raw = wait_for(lambda n=item["nonce"]: st.r.get(keys.verdict_key(n)), 30, what="verdict")
        v = json.loads(raw)
        assert v["status"] == "accepted" and v["offline"] is True
        assert datetime.fromisoformat(v["ts"]) == scanned + timedelta(seconds=i)


def test_batch_with_a_bad_item_sends_nothing(st: CheckinStack) -> None:
    before = st.r.xlen(keys.CHECKINS_IN)
    items = [
        checkin(st.token("A1")),
        {"gate_id": "main", "nonce": uuid.uuid4().hex},  # no token
        checkin(st.token("A3"), direction="sideways"),
        "not an object",
    ]
    r = st.http.post("/api/checkins/batch", json=items, headers={"X-API-Key": API_KEY})
    assert r.status_code == 422, r.text
    body = r.json()
    assert "nothing was sent" in body["detail"]
    got = {(e["index"], e["field"]) for e in body["errors"]}
    assert {(1, "1.token"), (2, "2.direction"), (3, "3")} <= got, got
    assert all(e["index"] != 0 for e in body["errors"])
    assert st.r.xlen(keys.CHECKINS_IN) == before

    r = st.http.post("/api/checkins/batch", json={"a": 1}, headers={"X-API-Key": API_KEY})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body"


def test_public_key_verifies_a_minted_token(st: CheckinStack) -> None:
    # Gates fetch it to verify offline; like every gate route it needs a gate (or admin) key.
    assert st.http.get("/api/tokens/public-key").status_code == 401
    r = st.http.get("/api/tokens/public-key", headers={"X-API-Key": API_KEY})
    assert r.status_code == 200, r.text
    assert r.content.startswith(b"-----BEGIN PUBLIC KEY-----")
    verifier = TokenVerifier.from_pem(r.content)
    claims = verifier.check(st.token("P-42", serial=3))
    assert claims == TokenClaims(EVENT_ID, "P-42", 3)
    forged = verifier.check(st.forged("P-42"))
    assert isinstance(forged, TokenProblem) and forged.status == "invalid_signature"


def test_redis_down_is_503_with_the_reason(
    st: CheckinStack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """An app whose Redis does not answer refuses scans with 503 and says why (a gate then
    keeps the scan and uploads it later); the public key needs no Redis."""
    data = tmp_path_factory.mktemp("no_redis")
    env = {**st.env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "DATA_DIR": str(data)}
    app = AppProcess(env, data / "app.log").wait_ready()
    try:
        with httpx.Client(base_url=app.base_url, headers={"X-API-Key": API_KEY}) as http:
            body = checkin(st.token("P-1"))
            for r in (
                http.post("/api/checkins", json=body),
                http.post("/api/checkins/batch", json=[body]),
                http.get(f"/api/checkins/{body['nonce']}"),
            ):
                assert r.status_code == 503, r.text
                assert r.json()["detail"].startswith("redis unavailable")
                assert r.headers["Retry-After"] == "1"
            assert http.get("/api/tokens/public-key").status_code == 200
    finally:
        app.stop()


def test_arrivals_model_uses_closed_windows_over_the_estimate() -> None:
    """The chart's numbers: verdicts estimate a minute at once (each counted once, revisions
    undo what they overturn); the closed window replaces the estimate; late rows add."""
    model = AttendanceModel()
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    ts = (now + timedelta(seconds=5)).isoformat()

    def v(nonce: str, status: str = "accepted", **kw: object) -> dict:
        return {"nonce": nonce, "gate_id": "main", "direction": "in", "status": status,
                "ts": ts, "revision": 0, **kw}  # fmt: skip

    model.add_verdict(v("a"))
    model.add_verdict(v("b"))
    model.add_verdict(v("a", replayed=True))  # a retried nonce: not counted again
    model.set_totals({"recent": [v("b"), v("c")], "gates": {"main": {"name": "Main"}}})
    model.add_verdict(v("x", "invalid_signature"))
    assert model.arrivals(now, "main") == 3  # a, b, c
    model.add_verdict(v("b", "duplicate", revision=1))  # b overturned by an earlier scan
    assert model.arrivals(now, "main") == 2
    history = [
        (h["nonce"], h["revision"], bool(h.get("replayed"))) for h in model.gate_history("main")
    ]
    assert history == [
        ("b", 1, False),
        ("x", 0, False),
        ("a", 0, True),
        ("b", 0, False),
        ("a", 0, False),
    ]

    window = {"window_start": now.isoformat(), "gate_id": "main", "direction": "in",
              "status": "accepted", "count": 7, "late": False}  # fmt: skip
    model.add_window(window)
    model.add_window({**window, "status": "duplicate", "count": 1})  # not an arrival
    assert model.arrivals(now, "main") == 7
    model.add_window({**window, "count": 1, "late": True})
    assert model.arrivals(now, "main") == 8
    labels, series = model.chart()
    assert len(labels) == len(series["main"]) == 60
    assert series["main"][labels.index(now.strftime("%H:%M"))] == 8
