"""The gate-facing HTTP API: send a scan and get its verdict, sync an offline gate, look a
verdict up, fetch the public key that lets a gate verify tickets offline.

Like event ingest, the API only validates and `XADD`s to `checkins:in` (with `STREAM_SHARDS` > 1
to `checkins:in:{k}`, k the shard of the participant the ticket claims: `keys.checkins_in`,
docs/gates.md); the check-in flow
decides (`flows.checkins_logic.decide`) and publishes the verdict on
`checkins:verdict:<gate>` and under `verdict:<nonce>`. `POST /api/checkins` waits up to `wait`
seconds for that scan's verdict (a future registered with `live.attendance` *before* the
XADD, so it cannot slip by; matched on gate, nonce, direction and ticket) and answers 200 with
it, else 202 "pending" — the scan is durable in Redis
either way and its verdict can be fetched later by nonce. The gate page sends its scans through
the very same function, `submit_checkin`. A nonce names one scan: its reuse with another
ticket, gate or direction is answered 409 `nonce_conflict` (never with the first verdict, which
stands), and a gate-bound key never reads another gate's verdict.

    POST /api/checkins?wait=2      CheckIn JSON → 200 verdict | 202 pending | 409 nonce_conflict
                                   | 401 | 403 | 413 | 422 | 503
    POST /api/checkins/batch       [CheckIn, ...] (≤ 5000) → 202 {"ids", "count"} | 422 | 413
    GET  /api/checkins/{nonce}     → 200 verdict | 404
    GET  /api/tokens/public-key    → the Ed25519 public key (PEM), no key needed
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from redis.exceptions import RedisError

from api import models as api_models
from api.http import (
    ApiKeyDep,
    Router,
    SettingsDep,
    invalid_query,
    read_body,
    redis_client,
    redis_reason,
)
from auth.permissions import gate_refusal
from core import keys
from core.contract import Verdict
from core.records import CheckIn, field_errors
from core.tokens import PUBLIC_NAME, key_dir, load_verifier
from live import attendance as attendance_live

log = logging.getLogger(__name__)
router = Router(tags=["checkins"])

DEFAULT_WAIT_S = 2.0
MAX_WAIT_S = 10.0
MAX_BATCH = 5000
_PIPELINE_CHUNK = 1000
_REDIS_ERRORS = (RedisError, OSError, TimeoutError)


@dataclass(frozen=True, slots=True)
class Submitted:
    """A check-in sent to `checkins:in`: its stream entry id, and its verdict if it came."""

    id: str
    nonce: str
    verdict: dict[str, Any] | None


def _decode(entry_id: bytes | str) -> str:
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


async def submit_checkin(checkin: CheckIn, wait: float = DEFAULT_WAIT_S) -> Submitted:
    """XADD one validated check-in; wait up to `wait` s for its verdict. The one path for
    the HTTP API and the gate page. Raises RedisError/OSError/TimeoutError if Redis is down."""
    r = redis_client()
    data = checkin.model_dump_json(exclude_none=True)
    stream = keys.checkins_in(checkin.token, checkin.gate_id)  # its participant's shard
    if wait <= 0:
        return Submitted(_decode(await r.xadd(stream, {"data": data})), checkin.nonce, None)
    scan = attendance_live.scan_id(checkin)
    fut = attendance_live.expect_verdict(scan)  # before the XADD: no race
    try:
        # A retried nonce already has a verdict stored: the flow answers it again (replayed),
        # and that answer, not the stored one, is what this request waits for.
        stale = await r.get(keys.verdict_key(checkin.nonce))
        entry_id = _decode(await r.xadd(stream, {"data": data}))
        verdict = await attendance_live.wait_verdict(scan, wait, r=r, future=fut, stale=stale)
    finally:
        attendance_live.forget_verdict(scan, fut)
    return Submitted(entry_id, checkin.nonce, verdict)


async def submit_batch(checkins: list[CheckIn]) -> list[str]:
    """XADD many validated check-ins, pipelined, in order; return their stream entry ids."""
    r = redis_client()
    ids: list[str] = []
    for i in range(0, len(checkins), _PIPELINE_CHUNK):
        pipe = r.pipeline(transaction=False)
        for c in checkins[i : i + _PIPELINE_CHUNK]:
            data = c.model_dump_json(exclude_none=True)
            pipe.xadd(keys.checkins_in(c.token, c.gate_id), {"data": data})
        ids.extend(_decode(e) for e in await pipe.execute())
    return ids


# --- helpers ------------------------------------------------------------------------------------


def _unavailable(exc: BaseException) -> JSONResponse:
    return JSONResponse(
        {"detail": redis_reason(exc)}, status_code=503, headers={"Retry-After": "1"}
    )


def _invalid(what: str, errors: list[dict[str, Any]]) -> JSONResponse:
    for e in errors:  # errors about the whole body have no location; name it
        e["field"] = e.get("field") or "body"
    return JSONResponse({"detail": what, "errors": errors}, status_code=422)


def _utf8_error(raw: bytes) -> dict[str, Any] | None:
    try:
        raw.decode("utf-8")  # strict: invalid bytes are refused, never replaced
    except UnicodeDecodeError as exc:
        return {"field": "body", "message": f"not UTF-8: {exc}", "type": "utf8"}
    return None


def _wait_param(request: Request) -> float | JSONResponse:
    raw = request.query_params.get("wait")
    if raw is None or raw == "":
        return DEFAULT_WAIT_S
    try:
        wait = float(raw)
    except ValueError:
        wait = float("nan")
    if not 0 <= wait <= MAX_WAIT_S:  # also refuses nan
        return invalid_query(
            "wait", f"wait must be a number of seconds from 0 to {MAX_WAIT_S:g}", "value_error"
        )
    return wait


# --- routes -------------------------------------------------------------------------------------


@router.post(
    "/api/checkins",
    response_model=api_models.CheckinPending,
    responses={200: {"model": Verdict}},
)
async def post_checkin(
    request: Request,
    key: ApiKeyDep,
    settings: SettingsDep,
) -> JSONResponse:
    """One scan: 200 with its verdict if it comes within `wait` s, else 202 pending."""
    wait = _wait_param(request)
    if isinstance(wait, JSONResponse):
        return wait
    raw = await read_body(request, settings.max_checkin_bytes, "check-in body")
    if (err := _utf8_error(raw)) is not None:
        return _invalid("invalid check-in", [err])
    try:
        checkin = CheckIn.model_validate_json(raw)
    except ValidationError as exc:
        return _invalid("invalid check-in", field_errors(exc))
    if (why := gate_refusal(key, checkin.gate_id)) is not None:
        return JSONResponse({"detail": why}, status_code=403)
    try:
        sent = await submit_checkin(checkin, wait)
    except _REDIS_ERRORS as exc:
        log.warning("POST /api/checkins: %s", redis_reason(exc))
        return _unavailable(exc)
    if sent.verdict is not None:
        conflict = sent.verdict.get("status") == "nonce_conflict"
        return JSONResponse(sent.verdict, status_code=409 if conflict else 200)
    return JSONResponse({"id": sent.id, "nonce": sent.nonce, "status": "pending"}, status_code=202)


@router.post("/api/checkins/batch", status_code=202, response_model=api_models.CheckinBatchOut)
async def post_checkin_batch(
    request: Request,
    key: ApiKeyDep,
    settings: SettingsDep,
) -> JSONResponse:
    """An offline gate's backlog (original `ts` kept): all valid, or nothing is sent."""
    limit = MAX_BATCH * settings.max_checkin_bytes
    raw = await read_body(request, limit, "batch body")
    if (err := _utf8_error(raw)) is not None:
        return _invalid("invalid batch", [err])
    try:
        items = json.loads(raw)
    except ValueError as exc:
        return _invalid(
            "invalid batch",
            [{"field": "body", "message": f"not JSON: {exc}", "type": "json_invalid"}],
        )
    if not isinstance(items, list):
        return _invalid(
            "invalid batch",
            [
                {
                    "field": "body",
                    "message": "expected a JSON list of check-ins",
                    "type": "list_type",
                }
            ],
        )
    if len(items) > MAX_BATCH:
        return _invalid(
            "invalid batch",
            [
                {
                    "field": "body",
                    "message": f"{len(items)} check-ins; at most {MAX_BATCH} per batch",
                    "type": "too_long",
                }
            ],
        )
    checkins: list[CheckIn] = []
    errors: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        try:
            c = CheckIn.model_validate(item)
        except ValidationError as exc:
            for e in field_errors(exc):
                errors.append({**e, "index": i, "field": f"{i}.{e['field']}".rstrip(".")})
            continue
        size = len(c.model_dump_json(exclude_none=True))
        if size > settings.max_checkin_bytes:
            errors.append(
                {
                    "index": i,
                    "field": str(i),
                    "message": f"check-in is {size} bytes, more than the limit of "
                    f"{settings.max_checkin_bytes}",
                    "type": "too_large",
                }
            )
            continue
        checkins.append(c)
    if errors:
        bad = len({e["index"] for e in errors})
        return _invalid(f"invalid batch: {bad} bad check-in(s), nothing was sent", errors)
    for i, c in enumerate(checkins):  # a gate-bound key: every scan must be its gate's
        if (why := gate_refusal(key, c.gate_id)) is not None:
            return JSONResponse({"detail": f"check-in {i}: {why}; nothing was sent"}, 403)
    try:
        ids = await submit_batch(checkins)
    except _REDIS_ERRORS as exc:
        log.warning("POST /api/checkins/batch: %s", redis_reason(exc))
        return _unavailable(exc)
    return JSONResponse({"ids": ids, "count": len(ids)}, status_code=202)


@router.get("/api/checkins/{nonce}", response_model=Verdict)
async def get_checkin(nonce: str, key: ApiKeyDep) -> JSONResponse:
    """The latest verdict stored for a scan's nonce (kept a day)."""
    try:
        raw = await redis_client().get(keys.verdict_key(nonce))
    except _REDIS_ERRORS as exc:
        return _unavailable(exc)
    if raw is None:
        return JSONResponse(
            {"detail": f"no verdict for nonce {nonce!r} (unknown, not decided yet, or expired)"},
            status_code=404,
        )
    try:
        verdict = json.loads(raw)
    except ValueError:
        return JSONResponse({"detail": "stored verdict is not JSON"}, status_code=500)
    gate = verdict.get("gate_id") if isinstance(verdict, dict) else None
    if (why := gate_refusal(key, str(gate))) is not None:  # a gate key sees its gate's only
        return JSONResponse({"detail": why}, status_code=403)
    return JSONResponse(verdict)


@router.get("/api/tokens/public-key", responses=api_models.binary("application/x-pem-file"))
async def get_public_key(settings: SettingsDep) -> Response:
    """The tokens' Ed25519 public key (PEM): a gate verifies tickets offline with it."""
    load_verifier(settings.data_dir)  # creates the key pair on first use
    pem = (key_dir(settings.data_dir) / PUBLIC_NAME).read_bytes()
    return Response(
        pem,
        media_type="application/x-pem-file",
        headers={"Content-Disposition": 'inline; filename="venueflow_token_public_key.pem"'},
    )
