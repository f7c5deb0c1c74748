"""The alarm API: list alarms, one alarm with its history, acknowledge and clear.

- `GET /api/alarms`: every alarm the lake knows (`alarm_latest`: each alarm's newest
  transition) overlaid with the live `alarms:active` hash (which the flow keeps current: counts
  and last values of repeats are not transitions). Filters: status, severity, rule, source;
  newest first; paged.
- `GET /api/alarms/{alarm_id}`: the alarm and its transitions (lake `alarms`, by revision).
- `POST /api/alarms/{alarm_id}/ack|clear` with an optional comment: 202 once the command is in
  `alarms:commands` (the flow applies it; the list shows it within a second).

Who acts is the authenticated caller, never the body: a logged-in user (their name and the role
the users file gives them now; `alarms.ack` / `alarms.clear` in `auth.permissions`) or an
admin API key (`by` = `key:<key name>`, acting as an organiser). `alarms:commands` is an
internal stream: the dashboard and this API write it after these checks, the flow checks the
role again.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from redis.exceptions import RedisError

from api.http import Router, redis_client
from auth.keys import ApiKey
from core import keys
from core.alarms import Alarm, AlarmCommand, AlarmStatus, AlarmTransition, Severity, split_alarm_id
from core.contract import AlarmHead
from core.settings import get_settings
from storage.queries import LakeUnavailable, alarm_transitions, latest_alarms

log = logging.getLogger(__name__)
router = Router(tags=["alarms"])

AlarmIdPath = Annotated[str, Path(min_length=5, max_length=400, description="rule|source|seq")]


class AlarmItem(AlarmHead):
    """One alarm now: from the live hash while open, else its newest transition in the lake."""

    status: str
    message: str
    count: int
    value: float | None = None
    raised_at: datetime | None = None
    updated_at: datetime
    acked_by: str | None = None
    cleared_by: str | None = None
    comment: str | None = None
    live: bool = Field(description="true while the alarm is in `alarms:active`")


class AlarmPage(BaseModel):
    items: list[AlarmItem]
    total: int
    page: int
    size: int


class AlarmDetail(BaseModel):
    alarm: AlarmItem
    history: list[AlarmTransition]


class AlarmActionIn(BaseModel):
    """The body of an ack/clear (optional; who acts is the authenticated caller)."""

    model_config = {"extra": "forbid"}
    comment: Annotated[str, Field(max_length=2000)] | None = None


class AlarmActionOut(BaseModel):
    id: str = Field(description="the `alarms:commands` stream entry id")
    command_id: str
    action: Literal["ack", "clear"]
    alarm_id: str
    by: str


class Problem(BaseModel):
    detail: str


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem},
    403: {"model": Problem},
    404: {"model": Problem},
    422: {"model": Problem},
    503: {"model": Problem},
}


# --- reading ------------------------------------------------------------------------------------


def _from_lake(row: tuple) -> AlarmItem:
    (aid, rule_id, rule_name, kind, source, severity, status, message, count, value, raised_at,
     at, by, transition, comment) = row  # fmt: skip
    return AlarmItem(
        alarm_id=aid, rule_id=rule_id, rule_name=rule_name, kind=kind, source=source,
        severity=severity, status=status, message=message, count=count, value=value,
        raised_at=raised_at, updated_at=at, comment=comment, live=False,
        acked_by=by if transition == "acknowledged" else None,
        cleared_by=by if transition == "cleared" and by != "rule" else None,
    )  # fmt: skip


def _from_live(a: Alarm) -> AlarmItem:
    return AlarmItem(
        alarm_id=a.alarm_id, rule_id=a.rule_id, rule_name=a.rule_name, kind=a.kind,
        source=a.source, severity=a.severity, status=a.status, message=a.message, count=a.count,
        value=a.value, raised_at=a.raised_at, updated_at=a.updated_at, acked_by=a.acked_by,
        cleared_by=a.cleared_by, comment=a.comment, live=True,
    )  # fmt: skip


async def _live(alarm_id: str | None = None) -> dict[str, Alarm]:
    r = redis_client()
    if alarm_id is not None:
        raw = await r.hget(keys.ALARMS_ACTIVE, alarm_id)
        items = {alarm_id.encode(): raw} if raw is not None else {}
    else:
        items = await r.hgetall(keys.ALARMS_ACTIVE)
    out = {}
    for k, v in items.items():
        try:
            out[k.decode()] = Alarm.model_validate_json(v)
        except ValidationError:
            log.warning("alarms:active holds a bad entry for %r; skipped", k)
    return out


def select_alarms(
    items: list[AlarmItem],
    status: str | None,
    severity: str | None,
    rule: str | None,
    source: str | None,
) -> list[AlarmItem]:
    """The alarms matching every given filter, newest change first (ties by id)."""
    got = [
        a
        for a in items
        if (status is None or a.status == status)
        and (severity is None or a.severity == severity)
        and (rule is None or a.rule_id == rule)
        and (source is None or a.source == source)
    ]
    got.sort(key=lambda a: (a.updated_at, a.alarm_id), reverse=True)
    return got


def _unavailable(exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, 503, headers={"Retry-After": "1"})


@router.get("/api/alarms", response_model=AlarmPage, responses=_ERRORS)
async def list_alarms(
    status: Annotated[AlarmStatus | None, Query()] = None,
    severity: Annotated[Severity | None, Query()] = None,
    rule: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    source: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    size: Annotated[int, Query(ge=1, le=500)] = 50,
) -> AlarmPage | JSONResponse:
    """Alarms, newest change first, filtered and paged."""
    try:
        lake = {r[0]: _from_lake(r) for r in await latest_alarms(get_settings().lake_dir)}
        live = await _live()
    except LakeUnavailable as exc:
        return _unavailable(exc)
    except (RedisError, OSError, TimeoutError) as exc:
        return _unavailable(RuntimeError(f"redis unavailable: {exc}"))
    merged = {**lake, **{aid: _from_live(a) for aid, a in live.items()}}
    got = select_alarms(list(merged.values()), status, severity, rule, source)
    return AlarmPage(
        items=got[(page - 1) * size : page * size], total=len(got), page=page, size=size
    )


def _not_found(alarm_id: str) -> JSONResponse:
    return JSONResponse({"detail": f"no alarm {alarm_id!r}"}, 404)


def _bad_id(alarm_id: str) -> JSONResponse | None:
    try:
        split_alarm_id(alarm_id)
    except ValueError as exc:
        return JSONResponse({"detail": str(exc)}, 422)
    return None


@router.get("/api/alarms/{alarm_id}", response_model=AlarmDetail, responses=_ERRORS)
async def get_alarm(alarm_id: AlarmIdPath) -> AlarmDetail | JSONResponse:
    """One alarm and its transitions (oldest first)."""
    if (bad := _bad_id(alarm_id)) is not None:
        return bad
    lake_dir = get_settings().lake_dir
    try:
        hist = await alarm_transitions(lake_dir, alarm_id, list(AlarmTransition.model_fields))
        latest = await latest_alarms(lake_dir, alarm_id)
        live = await _live(alarm_id)
    except LakeUnavailable as exc:
        return _unavailable(exc)
    except (RedisError, OSError, TimeoutError) as exc:
        return _unavailable(RuntimeError(f"redis unavailable: {exc}"))
    if alarm_id in live:
        item = _from_live(live[alarm_id])
    elif latest:
        item = _from_lake(latest[0])
    else:
        return _not_found(alarm_id)
    names = list(AlarmTransition.model_fields)
    history = [AlarmTransition.model_validate(dict(zip(names, r, strict=True))) for r in hist]
    return AlarmDetail(alarm=item, history=history)


# --- acting -------------------------------------------------------------------------------------


def actor(request: Request) -> tuple[str, str]:
    """(by, role) of the authenticated caller, as the auth middleware found them."""
    key = getattr(request.state, "api_key", None)
    if isinstance(key, ApiKey):
        return f"key:{key.name}", "organiser"  # only admin keys reach these routes
    user = getattr(request.state, "user", None)
    if user is None:  # the middleware lets no one else through; never act for nobody
        raise PermissionError("not authenticated")
    return user.username, user.role


def refusal(action: str, alarm: Alarm | None, alarm_id: str) -> tuple[int, str] | None:
    """Why `action` cannot apply to the alarm now (status, reason), or None."""
    if alarm is None:
        return 404, f"no open alarm {alarm_id!r} (unknown, or already cleared and acknowledged)"
    if action == "ack" and alarm.acked:
        return 409, f"{alarm_id} is already acknowledged"
    if action == "clear" and alarm.cleared:
        return 409, f"{alarm_id} is already cleared"
    return None


async def _act(action: Literal["ack", "clear"], alarm_id: str, request: Request) -> Any:
    if (bad := _bad_id(alarm_id)) is not None:
        return bad
    raw = await request.body()
    try:
        body = AlarmActionIn.model_validate_json(raw) if raw.strip() else AlarmActionIn()
    except ValidationError as exc:
        return JSONResponse({"detail": json.loads(exc.json(include_url=False))}, 422)
    try:
        by, role = actor(request)
    except PermissionError as exc:
        return JSONResponse({"detail": str(exc)}, 401)
    try:
        live = await _live(alarm_id)
        if (why := refusal(action, live.get(alarm_id), alarm_id)) is not None:
            return JSONResponse({"detail": why[1]}, why[0])
        cmd = AlarmCommand(
            command_id=str(uuid.uuid4()),
            action=action,
            alarm_id=alarm_id,
            by=by,
            role=role,
            comment=(body.comment or "").strip() or None,
            at=datetime.now(UTC),
        )
        eid = await redis_client().xadd(
            keys.ALARMS_COMMANDS, {"data": cmd.model_dump_json(exclude_none=True)}
        )
    except (RedisError, OSError, TimeoutError) as exc:
        return _unavailable(RuntimeError(f"redis unavailable: {exc}"))
    log.info("alarms API: %s %s by %s (%s)", action, alarm_id, by, role)
    out = AlarmActionOut(
        id=eid.decode() if isinstance(eid, bytes) else str(eid),
        command_id=cmd.command_id,
        action=action,
        alarm_id=alarm_id,
        by=by,
    )
    return JSONResponse(out.model_dump(), 202)


_BODY = {
    "requestBody": {"content": {"application/json": {"schema": AlarmActionIn.model_json_schema()}}}
}


async def ack_alarm(alarm_id: AlarmIdPath, request: Request) -> AlarmActionOut:
    """Acknowledge an open alarm (body: `{"comment": "..."}`, optional)."""
    return await _act("ack", alarm_id, request)


async def clear_alarm(alarm_id: AlarmIdPath, request: Request) -> AlarmActionOut:
    """Clear an active alarm by hand (body: `{"comment": "..."}`, optional)."""
    return await _act("clear", alarm_id, request)


for path, fn in (("ack", ack_alarm), ("clear", clear_alarm)):
    router.add_api_route(
        f"/api/alarms/{{alarm_id}}/{path}", fn, methods=["POST"],
        status_code=202, response_model=AlarmActionOut,
        responses={**_ERRORS, 409: {"model": Problem}}, openapi_extra=_BODY,
    )  # fmt: skip
