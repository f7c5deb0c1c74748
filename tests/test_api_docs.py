"""The HTTP API's description (`/api/openapi.json`, `/api/docs`) against the real app: behind
login, local (no CDN), and every /api route of the running app listed with a response model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import API_KEY
from tests.ui_fixtures import AuthStack

UNDESCRIBED = {"/api/openapi.json", "/api/docs"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthStack]:
    s = AuthStack(Path(tmp_path_factory.mktemp("api-docs")))
    try:
        yield s
    finally:
        s.close()


def _success(op: dict) -> dict:
    codes = sorted(c for c in op["responses"] if c.startswith("2"))
    assert codes, op
    return op["responses"][codes[0]]


def test_schema_lists_every_api_route_with_a_response_model(stack: AuthStack) -> None:
    nobody = stack.client()
    assert nobody.get("/api/openapi.json").status_code == 401
    assert nobody.get("/api/docs").status_code == 401
    analyst = stack.client("analyst")
    resp = analyst.get("/api/openapi.json")
    assert resp.status_code == 200, resp.text
    schema = resp.json()
    page = analyst.get("/api/docs")
    assert page.status_code == 200 and "/api/alarms/{alarm_id}/ack" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing remote
    admin = stack.client(headers={"X-API-Key": API_KEY})
    assert admin.get("/api/openapi.json").json() == schema
    organiser = stack.client("organiser")
    routes = organiser.get("/api/auth/routes").json()
    for c in (nobody, analyst, admin, organiser):
        c.close()
    api_routes = {
        (r["path"], r["method"].lower())
        for r in routes
        if r["path"].startswith("/api/") and r["kind"] == "APIRoute"
        and r["path"] not in UNDESCRIBED
    }  # fmt: skip
    assert ("/api/alarms", "get") in api_routes and ("/api/cameras", "get") in api_routes
    missing, no_model = [], []
    for path, method in sorted(api_routes):
        op = schema["paths"].get(path, {}).get(method)
        if op is None:
            missing.append(f"{method.upper()} {path}")
            continue
        content = _success(op).get("content", {})
        if not any(c.get("schema") for c in content.values()):
            no_model.append(f"{method.upper()} {path}")
    assert missing == [], f"routes not in /api/openapi.json: {missing}"
    assert no_model == [], f"routes without a response model: {no_model}"
    # The alarm API's models are the code's.
    ack = schema["paths"]["/api/alarms/{alarm_id}/ack"]["post"]
    assert ack["responses"]["202"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/AlarmActionOut"
    )
    assert "requestBody" in ack
