"""The alarm API against the real alarm flow, the real app, real Redis and the lake.

An alarm raised by a triggering event is listed (filters, paging) and shown with its history;
people acknowledge and clear it by login with the roles of the /alarms page, an admin key
may too; the actor in the lake is the authenticated one, never a name sent in the body.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import redis

from core import keys
from tests.alarm_helpers import write_alarm_venue
from tests.conftest import API_KEY, AppProcess, FlowProcess, add_user, login_http, wait_for

RULES = """
  - {id: gas, name: Gas high, kind: threshold, severity: CRITICAL, type: GAS, source: "gas-*",
     field: ppm, above: 100, clear_at: 90}
"""
AID = "gas|gas-api|1"


@pytest.fixture
def stack(
    r: redis.Redis, flow_env: dict[str, str], data_dir: Path, tmp_path: Path
) -> Iterator[AppProcess]:
    env = {**flow_env, "VENUE_CONFIG": str(write_alarm_venue(tmp_path / "venue.yaml", RULES))}
    add_user(data_dir, "op-1", "operator")
    add_user(data_dir, "an-1", "analyst")
    flow = FlowProcess("alarms", env, data_dir / "alarms-flow.log").start()
    app = AppProcess(env, data_dir / "app.log")
    try:
        app.wait_ready()
        wait_for(lambda: r.get(keys.heartbeat_key("alarms")), 60, what="the alarm flow to run")
        yield app
    finally:
        app.stop()
        assert flow.stop() == 0


def _client(app: AppProcess, user: str | None = None, **kw) -> httpx.Client:
    c = httpx.Client(base_url=app.base_url, timeout=20, **kw)
    if user is not None:
        login_http(c, user)
    return c


def _raise(r: redis.Redis) -> None:
    doc = {"source": "gas-api", "type": "GAS", "level": "WARN", "payload": {"ppm": 150},
           "ts": datetime.now(UTC).isoformat()}  # fmt: skip
    r.xadd(keys.EVENTS_IN, {"data": json.dumps(doc)})


def test_list_show_ack_and_clear_by_the_authenticated_actor(
    stack: AppProcess, r: redis.Redis, data_dir: Path
) -> None:
    _raise(r)
    wait_for(lambda: r.hget(keys.ALARMS_ACTIVE, AID), 30, what="the alarm raised")
    nobody, analyst = _client(stack), _client(stack, "an-1")
    operator, organiser = _client(stack, "op-1"), _client(stack, "organiser")
    admin = _client(stack, headers={"X-API-Key": API_KEY})

    assert nobody.get("/api/alarms").status_code == 401
    page = analyst.get("/api/alarms").json()
    assert page["total"] == 1 and page["page"] == 1
    [item] = page["items"]
    assert item["alarm_id"] == AID and item["status"] == "ACTIVE_UNACK" and item["live"] is True
    assert item["severity"] == "CRITICAL" and item["rule_id"] == "gas"
    assert analyst.get("/api/alarms", params={"severity": "MINOR"}).json()["total"] == 0
    assert (
        analyst.get("/api/alarms", params={"rule": "gas", "source": "gas-api"}).json()["total"] == 1
    )
    assert analyst.get("/api/alarms", params={"status": "ACTIVE_ACK"}).json()["total"] == 0
    assert analyst.get("/api/alarms", params={"status": "NOPE"}).status_code == 422
    assert analyst.get("/api/alarms", params={"size": 0}).status_code == 422
    assert analyst.get("/api/alarms", params={"page": 2, "size": 1}).json()["items"] == []

    # Acknowledge: an analyst may not; the body cannot name another actor.
    url = f"/api/alarms/{AID}/ack"
    assert analyst.post(url, json={}).status_code == 403
    assert operator.post(url, json={"comment": "x", "by": "mallory"}).status_code == 422
    resp = operator.post(url, json={"comment": "checking the hall"})
    assert resp.status_code == 202, resp.text
    assert resp.json()["by"] == "op-1" and resp.json()["action"] == "ack"
    wait_for(
        lambda: json.loads(r.hget(keys.ALARMS_ACTIVE, AID))["status"] == "ACTIVE_ACK",
        30,
        what="acknowledged",
    )
    assert operator.post(url, json={}).status_code == 409  # already acknowledged
    # Clear: organisers (and admin keys) only; an operator is refused.
    clear = f"/api/alarms/{AID}/clear"
    assert operator.post(clear, json={}).status_code == 403
    resp = admin.post(clear, json={"comment": "ventilated"})
    assert resp.status_code == 202, resp.text
    wait_for(lambda: not r.hexists(keys.ALARMS_ACTIVE, AID), 30, what="cleared and acked")
    assert organiser.post(clear, json={}).status_code == 404  # no longer open

    def history() -> list[dict] | None:
        d = analyst.get(f"/api/alarms/{AID}").json()
        return d if len(d.get("history", [])) >= 3 else None

    detail = wait_for(history, 30, 0.5, "three transitions in the lake")
    steps = [(h["transition"], h["by"], h["role"], h["comment"]) for h in detail["history"]]
    assert steps == [
        ("raised", "rule", None, None),
        ("acknowledged", "op-1", "operator", "checking the hall"),
        ("cleared", "key:API_KEYS", "organiser", "ventilated"),
    ]
    assert detail["alarm"]["status"] == "CLEARED_ACK" and detail["alarm"]["live"] is False
    listed = analyst.get("/api/alarms", params={"status": "CLEARED_ACK"}).json()
    assert [i["alarm_id"] for i in listed["items"]] == [AID]

    assert analyst.get("/api/alarms/gas|gas-nowhere|1").status_code == 404
    assert analyst.get("/api/alarms/not-an-id").status_code == 422
    for c in (nobody, analyst, operator, organiser, admin):
        c.close()
