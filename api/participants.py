"""HTTP API for participants: import, list/search, one participant, QR codes, revoke/reissue/
restore, and the bulk QR export.

Imports never write state: they send `ParticipantOp`s to `participants:in` through
`core.participants.import_participants` (the same function as `run.py participants import`),
run on a worker thread with a sync Redis client; the check-in flow applies them. Lists read the
lake's `participants` view, which lags the flow by a few seconds (`LAKE_FLUSH_AGE_S` plus a
snapshot); a single participant's current state (serial, revoked) comes from
`participants:index`, which the flow updates as it applies a change.

`/api/...` routes need an `admin` `X-API-Key` (organiser scripts). The dashboard's download
links (`/participants/{id}/qr.png|svg`, `/participants/qr.zip`) are the same handlers without
the key, guarded like the pages by a login with `participants.view` (see `auth.permissions.ROUTES`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import redis
from fastapi import Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from nicegui import run
from redis.exceptions import RedisError
from starlette.datastructures import UploadFile

from api import models as api_models
from api.http import ApiKeyDep, BodyTooLarge, Router, limited, read_body, redis_client
from core import keys
from core.participant_admin import AdminOp, no_op, op_applied
from core.participants import (
    BadRow,
    ImportResult,
    ParsedCsv,
    Progress,
    import_participants,
    parse_csv,
)
from core.qr import qr_png, qr_svg
from core.qr_export import file_stem
from core.records import ParticipantOp
from core.redis_conn import connect
from core.settings import get_settings
from core.tokens import TokenSigner, load_signer
from core.venue import venue_for
from ops.processes import PROJECT_DIR
from storage.queries import LakeUnavailable, in_thread, query_participant, query_participants

log = logging.getLogger(__name__)
router = Router(tags=["participants"])

MAX_IMPORT_BYTES = 64 * 1024 * 1024  # ~1M rows of a typical CSV
DEFAULT_IMPORT_WAIT_S = 30.0
MAX_EXPORTS = 2  # bulk QR exports running at once (each uses every CPU for a while)
_exports = 0


# --- parsing an upload ------------------------------------------------------------------------


class UploadError(ValueError):
    """A file-level problem with an upload (HTTP status and reason)."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status


def parse_json_participants(raw: bytes | str) -> ParsedCsv:
    """One participant object or a list of them. Each bad item is reported with `line` =
    its position (1-based); the good ones are kept. Raises ValueError if it is not JSON."""
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"the body is not valid JSON: {exc}") from None
    if isinstance(doc, dict):
        items = [doc]
    elif isinstance(doc, list):
        items = doc
    else:
        raise ValueError("expected a participant object or a list of participant objects")
    out = ParsedCsv()
    first: dict[str, int] = {}
    for i, item in enumerate(items, 1):
        out.rows += 1
        out.take(i, item, first, "as item")
    return out


def parse_upload(data: bytes, kind: Literal["csv", "json"]) -> ParsedCsv:
    """Parse an uploaded body; a file-level problem raises UploadError(422)."""
    try:
        return parse_json_participants(data) if kind == "json" else parse_csv(data)
    except ValueError as exc:
        raise UploadError(422, str(exc)) from None


async def parse_off_loop(data: bytes, kind: Literal["csv", "json"]) -> ParsedCsv:
    """`parse_upload` on a worker thread (100k rows take ~1.5 s of CPU)."""
    parsed = await run.io_bound(parse_upload, data, kind)
    if parsed is None:
        raise UploadError(503, "the app is shutting down")
    return parsed


def _kind_of(content_type: str, filename: str = "") -> Literal["csv", "json"] | None:
    ct = content_type.split(";")[0].strip().lower()
    if filename.lower().endswith(".json") or ct == "application/json" or ct.endswith("+json"):
        return "json"
    if filename.lower().endswith((".csv", ".tsv", ".txt")) or ct in {
        "text/csv",
        "application/csv",
        "text/plain",
        "text/tab-separated-values",
        "application/vnd.ms-excel",  # what some browsers call a .csv
    }:
        return "csv"
    return None


#: Room for the multipart envelope (boundaries, part headers) on top of the file itself.
MULTIPART_OVERHEAD = 64 * 1024


async def read_upload(request: Request) -> ParsedCsv:
    """JSON (object or list), a CSV body (text/csv) or a multipart upload with one file.

    Bytes are counted while the body streams (`api.events.limited`): an upload over the limit is
    refused with 413 after at most the limit has been read — chunked uploads included — and a
    multipart file is never spooled to disk beyond it."""
    ctype = request.headers.get("content-type", "")
    try:
        if ctype.split(";")[0].strip().lower() == "multipart/form-data":
            body = limited(request, MAX_IMPORT_BYTES + MULTIPART_OVERHEAD, "the upload")
            data, kind = await _multipart_file(body)
            return await parse_off_loop(data, kind)
        kind = _kind_of(ctype) if ctype else "json"
        if kind is None:
            raise UploadError(
                415,
                f"unsupported Content-Type {ctype!r}: send application/json, text/csv or a "
                "multipart/form-data file upload",
            )
        return await parse_off_loop(await read_body(request, MAX_IMPORT_BYTES, "the upload"), kind)
    except BodyTooLarge as exc:
        raise UploadError(413, str(exc)) from None


async def _multipart_file(request: Request) -> tuple[bytes, Literal["csv", "json"]]:
    try:
        form = await request.form(max_files=1, max_fields=20)
    except BodyTooLarge:
        raise
    except Exception as exc:  # multipart parser errors carry their reason
        raise UploadError(422, f"bad multipart body: {exc}") from None
    try:
        files = [v for v in form.values() if isinstance(v, UploadFile)]
        if not files:
            raise UploadError(422, "the multipart body has no file")
        f = files[0]
        data = await f.read(MAX_IMPORT_BYTES + 1)
        if len(data) > MAX_IMPORT_BYTES:
            raise UploadError(
                413, f"the upload is larger than the limit of {MAX_IMPORT_BYTES} bytes"
            )
        return data, _kind_of(f.content_type or "", f.filename or "") or "csv"
    finally:
        await form.close()


# --- running an import ------------------------------------------------------------------------


def sync_redis() -> redis.Redis:
    return connect(get_settings().effective_redis_url, socket_connect_timeout=2, socket_timeout=30)


def run_import(parsed: ParsedCsv, wait: float, progress: Progress | None = None) -> ImportResult:
    """Blocking: the import (call on a worker thread)."""
    r = sync_redis()
    try:
        return import_participants(
            r, parsed.participants, parsed.bad, wait, progress, bad_total=parsed.bad_total
        )
    finally:
        r.close()


async def import_parsed(
    parsed: ParsedCsv, wait: float, progress: Progress | None = None
) -> ImportResult:
    res = await run.io_bound(run_import, parsed, wait, progress)
    if res is None:
        raise RuntimeError("the app is shutting down")
    return res


def _errors(bad: list[BadRow]) -> list[dict[str, Any]]:
    return [{"line": b.line, "reason": b.reason} for b in bad]


def _redis_down(exc: BaseException) -> JSONResponse:
    return JSONResponse(
        {"detail": f"redis unavailable: {type(exc).__name__}: {exc}"},
        status_code=503,
        headers={"Retry-After": "1"},
    )


@router.post("/api/participants", response_model=api_models.ImportOut)
async def post_participants(
    request: Request,
    _key: ApiKeyDep,
    wait: Annotated[float, Query(ge=0, le=300)] = DEFAULT_IMPORT_WAIT_S,
) -> JSONResponse:
    """Import participants: 200 with new/updated/unchanged counts, the bad rows (line, reason)
    and whether the check-in flow had applied every change within `wait` seconds; 422 when
    nothing valid was sent (or the file itself is unusable), 413 too large, 415 wrong type."""
    try:
        parsed = await read_upload(request)
    except UploadError as exc:
        return JSONResponse({"detail": str(exc), "errors": []}, status_code=exc.status)
    if not parsed.participants:
        detail = (
            f"no valid participant: {parsed.bad_total} bad rows"
            + (
                f" (the first {len(parsed.bad)} listed)"
                if len(parsed.bad) < parsed.bad_total
                else ""
            )
            if parsed.bad_total
            else "no participants in the upload"
        )
        return JSONResponse(
            {
                "detail": detail,
                "errors": _errors(parsed.bad),
                "error_count": parsed.bad_total,
                "rows": parsed.rows,
            },
            status_code=422,
        )
    try:
        res = await import_parsed(parsed, wait)
    except (RedisError, OSError, RuntimeError) as exc:
        return _redis_down(exc)
    return JSONResponse({**res.as_dict(), "rows": parsed.rows, "sent": res.sent})


# --- reading participants ---------------------------------------------------------------------


async def fetch_participants(
    q: str | None = None, status: str | None = None, page: int = 1, size: int = 20
) -> dict[str, Any]:
    return await in_thread(query_participants, get_settings().lake, q, status, page, size)


async def index_entry(pid: str) -> dict | None:
    raw = await redis_client().hget(keys.PARTICIPANTS_INDEX, pid)
    return json.loads(raw) if raw else None


async def participant_detail(pid: str) -> dict[str, Any] | None:
    """Lake row + `participants:index` state + scans; None if neither knows the id."""
    entry = await index_entry(pid)
    lake = await in_thread(query_participant, get_settings().lake, pid)
    if entry is None and lake["participant"] is None:
        return None
    if entry is not None:
        status = "revoked" if entry.get("revoked") else "active"
    else:
        status = lake["participant"]["status"]
    return {
        "id": pid,
        "status": status,
        "serial": (entry or {}).get("serial", (lake["participant"] or {}).get("serial")),
        "name": (entry or {}).get("name") or (lake["participant"] or {}).get("name"),
        "index": entry,
        "participant": lake["participant"],
        "checked_in": lake["checkins"]["checked_in"],
        "checkins": lake["checkins"],
    }


@router.get("/api/participants", response_model=api_models.ParticipantList)
async def get_participants(
    _key: ApiKeyDep,
    q: Annotated[str | None, Query(max_length=200)] = None,
    status: Annotated[Literal["active", "revoked"] | None, Query()] = None,
    page: Annotated[int, Query(ge=1)] = 1,
    size: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JSONResponse:
    """Participants from the lake (a few seconds behind the flow), by id; `q` searches id,
    name, email and organization (case-insensitive substring)."""
    try:
        return JSONResponse(await fetch_participants((q or "").strip() or None, status, page, size))
    except LakeUnavailable as exc:
        return JSONResponse({"detail": str(exc)}, status_code=503)


# --- QR codes -------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def _signer(data_dir: Path) -> TokenSigner:
    return load_signer(data_dir)


def current_token(pid: str, entry: dict) -> str:
    s = get_settings()
    event_id = venue_for(s.venue_config).event.id
    return _signer(Path(s.data_dir)).mint(event_id, pid, int(entry.get("serial") or 0))


def _render(pid: str, entry: dict, kind: str) -> bytes:
    token = current_token(pid, entry)
    return qr_png(token) if kind == "png" else qr_svg(token).encode()


async def qr_image(pid: str, kind: str, download: bool = False) -> Response:
    """The participant's current QR code: 404 unknown, 410 revoked (the code would be refused)."""
    try:
        entry = await index_entry(pid)
    except (RedisError, OSError) as exc:
        return _redis_down(exc)
    if entry is None:
        return JSONResponse({"detail": f"no participant with id {pid!r}"}, status_code=404)
    if entry.get("revoked"):
        return JSONResponse(
            {"detail": f"participant {pid!r} is revoked: its ticket is refused (restore it)"},
            status_code=410,
        )
    body = await run.io_bound(_render, pid, entry, kind)  # ~9 ms of pure Python
    if body is None:
        return JSONResponse({"detail": "the app is shutting down"}, status_code=503)
    name = f"{file_stem(pid, set())}.{kind}"
    return Response(
        body,
        media_type="image/png" if kind == "png" else "image/svg+xml",
        headers={
            "Content-Disposition": f'{"attachment" if download else "inline"}; filename="{name}"',
            "Cache-Control": "no-store",  # a reissue changes the code
        },
    )


def _qr_route(kind: str, with_key: bool) -> Callable[..., Any]:
    if with_key:

        async def keyed(
            pid: str,
            _key: ApiKeyDep,
            download: bool = False,
        ) -> Response:
            return await qr_image(pid, kind, download)

        return keyed

    async def dashboard(pid: str, download: bool = False) -> Response:
        return await qr_image(pid, kind, download)

    return dashboard


async def export_stream(fmt: str) -> AsyncIterator[bytes]:
    """The zip of every code, made by `run.py participants qr --zip -` in a child process
    (rendering uses every CPU; the app's event loop only forwards bytes).

    A plain `Popen` read on worker threads (uvloop's own subprocess support crashed the child
    with SIGSEGV here). The child and its render workers get their own process group, killed
    as a whole if the client goes away; the pipe is only closed once the reading thread has
    seen its end, so the event loop never waits on it.
    """
    global _exports
    _exports += 1
    proc: subprocess.Popen | None = None
    err = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
    try:
        proc = subprocess.Popen(
            [sys.executable, "run.py", "participants", "qr", "--zip", "-", "--format", fmt, "-q"],
            cwd=PROJECT_DIR,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            start_new_session=True,
        )
        out = proc.stdout
        assert out is not None
        while chunk := await run.io_bound(out.read1, 256 * 1024):
            yield chunk
        code = await run.io_bound(proc.wait)
        if code:
            err.seek(0)
            msg = err.read().decode(errors="replace")
            log.warning("QR export failed (exit %s): %s", code, msg[-2000:])
    finally:
        _exports -= 1
        if proc is not None:
            if proc.poll() is None:  # the client went away: stop rendering
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            await asyncio.shield(_reap(proc))
        err.close()


async def _reap(proc: subprocess.Popen) -> None:
    """Wait for the child and close its pipe, both on worker threads."""
    await run.io_bound(proc.wait)
    if proc.stdout is not None:
        await run.io_bound(proc.stdout.close)


async def qr_zip(fmt: str) -> Response:
    if fmt not in {"png", "svg", "both"}:
        return JSONResponse({"detail": "format must be png, svg or both"}, status_code=422)
    try:
        n = await redis_client().hlen(keys.PARTICIPANTS_INDEX)
    except (RedisError, OSError) as exc:
        return _redis_down(exc)
    if not n:
        return JSONResponse({"detail": "no participants yet: import some first"}, status_code=404)
    if _exports >= MAX_EXPORTS:
        return JSONResponse(
            {"detail": f"{MAX_EXPORTS} exports are running; try again when one has finished"},
            status_code=429,
            headers={"Retry-After": "30"},
        )
    name = f"{venue_for(get_settings().venue_config).event.id}-qr-codes.zip"
    return StreamingResponse(
        export_stream(fmt),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/api/participants/qr.zip", responses=api_models.binary("application/zip"))
async def get_qr_zip(_key: ApiKeyDep, format: str = "png") -> Response:
    """Every participant's QR code (revoked ones skipped) as a streamed zip + index.csv."""
    return await qr_zip(format)


@router.get("/participants/qr.zip", include_in_schema=False)
async def dashboard_qr_zip(format: str = "png") -> Response:
    return await qr_zip(format)


@router.get("/api/participants/{pid}", response_model=api_models.ParticipantDetail)
async def get_participant(pid: str, _key: ApiKeyDep) -> JSONResponse:
    try:
        doc = await participant_detail(pid)
    except LakeUnavailable as exc:
        return JSONResponse({"detail": str(exc)}, status_code=503)
    except (RedisError, OSError) as exc:
        return _redis_down(exc)
    if doc is None:
        return JSONResponse({"detail": f"no participant with id {pid!r}"}, status_code=404)
    return JSONResponse(doc)


# --- revoke / reissue / restore ---------------------------------------------------------------


async def admin_op(
    pid: str, op: AdminOp, reason: str | None = None, wait: float = 5.0
) -> tuple[int, dict[str, Any]]:
    """Send the op and wait up to `wait` s for the flow: (200 applied | 202 sent | 404, body)."""
    before = await index_entry(pid)
    if before is None:
        return 404, {"detail": f"no participant with id {pid!r}"}
    if no_op(op, before):
        return 200, {"id": pid, "op": op, "applied": True, "changed": False, "index": before}
    msg = ParticipantOp(op=op, id=pid, reason=reason or None)
    r = redis_client()
    await r.xadd(keys.participants_in(pid), {"data": msg.model_dump_json(exclude_none=True)})
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    now = before
    while True:
        now = await index_entry(pid)
        if op_applied(op, before, now):
            return 200, {"id": pid, "op": op, "applied": True, "changed": True, "index": now}
        if loop.time() >= deadline:
            return 202, {"id": pid, "op": op, "applied": False, "changed": True, "index": now}
        await asyncio.sleep(0.1)


def _op_route(op: AdminOp) -> Callable[..., Any]:
    async def handler(
        pid: str,
        request: Request,
        _key: ApiKeyDep,
        wait: Annotated[float, Query(ge=0, le=60)] = 5.0,
    ) -> JSONResponse:
        reason = None
        raw = await request.body()
        if raw.strip():
            try:
                doc = json.loads(raw)
                reason = doc.get("reason") if isinstance(doc, dict) else None
                if reason is not None and (not isinstance(reason, str) or len(reason) > 500):
                    raise ValueError("reason must be a string of at most 500 characters")
            except ValueError as exc:
                return JSONResponse(
                    {
                        "detail": "invalid body",
                        "errors": [{"field": "reason", "message": str(exc), "type": "value"}],
                    },
                    status_code=422,
                )
        try:
            status, body = await admin_op(pid, op, reason, wait)
        except (RedisError, OSError) as exc:
            return _redis_down(exc)
        return JSONResponse(body, status_code=status)

    handler.__doc__ = {
        "revoke": 'Revoke: the token is refused from now on (body: optional {"reason": …}).',
        "reissue": "Issue a new token (serial + 1); the old one is refused as revoked.",
        "restore": "Undo a revocation.",
    }[op]
    return handler


for kind in ("png", "svg"):
    router.add_api_route(
        f"/api/participants/{{pid}}/qr.{kind}", _qr_route(kind, True), methods=["GET"],
        responses=api_models.binary("image/png" if kind == "png" else "image/svg+xml"),
    )  # fmt: skip
for op in ("revoke", "reissue", "restore"):
    router.add_api_route(
        f"/api/participants/{{pid}}/{op}",
        _op_route(op),
        methods=["POST"],
        response_model=api_models.ParticipantOpOut,
    )
for kind in ("png", "svg"):
    router.add_api_route(
        f"/participants/{{pid}}/qr.{kind}", _qr_route(kind, False), methods=["GET"],
        include_in_schema=False,
    )  # fmt: skip
