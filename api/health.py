"""`GET /health` and `GET /api/health`: Redis answers and every process's heartbeat is fresh.

200 when Redis answers and every flow's heartbeat key is present, else 503 with the same body,
so a load balancer and a person read the same answer.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from api import models
from api.http import Router, redis_client, redis_reason
from core import keys
from core.keys import NOTIFIER_HEARTBEAT
from core.settings import get_settings
from ops.processes import FLOWS as FLOW_MODULES

router = Router(tags=["health"])

#: Processes whose heartbeat /health reports: every flow run.py runs, and the notifier (an
#: alarm that cannot reach anyone is an outage too).
FLOWS: tuple[str, ...] = (*FLOW_MODULES, NOTIFIER_HEARTBEAT)


def _heartbeat(raw: bytes | None) -> dict[str, Any]:
    if raw is None:
        return {"alive": False, "last_heartbeat": None}
    try:
        beat = json.loads(raw)
        at = datetime.fromisoformat(str(beat["at"])).astimezone(UTC)
        return {
            "alive": True,
            "last_heartbeat": at.isoformat().replace("+00:00", "Z"),
            "age_s": round((datetime.now(UTC) - at).total_seconds(), 3),
            "pid": beat.get("pid"),
        }
    except (ValueError, KeyError, TypeError):
        return {"alive": True, "last_heartbeat": None}


@router.get("/api/health", response_model=models.Health)
@router.get("/health", response_model=models.Health)
async def health() -> JSONResponse:
    """200 when Redis answers and every flow's heartbeat key is present, else 503 (same body)."""
    wanted = get_settings().health_flows
    flows = [f.strip() for f in wanted.split(",") if f.strip()] if wanted else list(FLOWS)
    body: dict[str, Any] = {"ok": False, "redis": {"ok": False}, "flows": {}}
    try:
        r = redis_client()
        await r.ping()
        pipe = r.pipeline(transaction=False)  # not MGET: the keys lie in several cluster slots
        for f in flows:
            pipe.get(keys.heartbeat_key(f))
        beats = await pipe.execute()
        body["redis"] = {"ok": True}
        body["flows"] = {f: _heartbeat(b) for f, b in zip(flows, beats, strict=True)}
    except (RedisError, OSError, TimeoutError) as exc:
        body["redis"] = {"ok": False, "error": redis_reason(exc)}
        body["flows"] = {f: {"alive": False, "last_heartbeat": None} for f in flows}
    body["ok"] = body["redis"]["ok"] and all(f["alive"] for f in body["flows"].values())
    return JSONResponse(body, status_code=200 if body["ok"] else 503)
