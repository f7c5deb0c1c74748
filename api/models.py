"""Response (and request) models of the HTTP API routes, for its OpenAPI description.

The handlers answer with `JSONResponse`s they build themselves, so these models describe the
bodies (FastAPI does not re-validate a returned Response); each is the shape the handler
writes, with `extra="allow"` where the body carries more than the contract promises. Routes
register with `response_model=` one of these (or `BINARY` content types for files), so
`/api/openapi.json` and `/api/docs` are read from the code. `tests/test_api_docs.py` fails when
an /api route has neither.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.records import CameraStatus


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Problem(_Open):
    """Every refusal: 4xx/5xx with the reason (validation errors add `errors`)."""

    detail: Any


class FlowHealth(_Open):
    alive: bool
    last_heartbeat: datetime | None = None


class Health(_Open):
    ok: bool
    redis: dict[str, Any]
    flows: dict[str, FlowHealth]


class Accepted(_Open):
    """202: the event is in its stream (`id`: the stream entry id)."""

    id: str
    requestId: str


class EventList(_Open):
    page: int
    size: int
    items: list[dict[str, Any]]
    total: int | None = None
    source: str = Field(description="`lake` or `cache` (events:recent while the lake is down)")


class LoginOut(_Open):
    username: str
    role: str


class LogoutOut(_Open):
    logged_out: str | None


class MeOut(LoginOut):
    permissions: list[str]


class RouteRow(_Open):
    path: str


class CheckinPending(_Open):
    """202: queued; the verdict is `GET /api/checkins/{nonce}` (or 200 with the verdict)."""

    id: str
    nonce: str
    status: str


class CheckinBatchOut(_Open):
    ids: list[str]
    count: int


class PublicKey(_Open):
    pass


class ImportOut(_Open):
    new: int
    updated: int
    unchanged: int
    bad: list[dict[str, Any]]
    applied: bool
    rows: int
    sent: int


class ParticipantList(_Open):
    page: int
    size: int
    total: int
    items: list[dict[str, Any]]
    source: str


class ParticipantDetail(_Open):
    id: str
    status: str
    serial: int | None = None
    name: str | None = None
    checked_in: bool | None = None


class ParticipantOpOut(_Open):
    """revoke / reissue / restore: the participant's index entry after the operation."""


class ReportJson(_Open):
    generated_at: datetime
    sections: dict[str, dict[str, Any]]


class CameraItem(_Open):
    camera_id: str
    viewers: int
    status: CameraStatus | None = None


class CaptureQueued(_Open):
    """202 for start / stop: the command's id in `video:commands`."""

    id: str
    action: str
    camera_id: str


class CaptureStatusReply(_Open):
    """200 for status: the flow's answer."""

    id: str
    status: CameraStatus


class LogAccepted(_Open):
    pass


def binary(*types: str) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route answering with a file of these media types."""
    schema = {"type": "string", "format": "binary"}
    return {200: {"content": {t: {"schema": schema} for t in types}, "description": "a file"}}


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` for a route that reads its JSON body itself (to bound and refuse it
    with its own reasons): the body's schema for the description."""
    schema = {"schema": model.model_json_schema()}
    return {"requestBody": {"required": True, "content": {"application/json": schema}}}


class SqlIn(BaseModel):
    """`POST /api/analytics/sql`: one SELECT (or EXPLAIN of one), at most 20,000 characters."""

    sql: str


class SqlOut(_Open):
    """A free-SQL result: at most 5,000 rows (`truncated` says if more matched)."""

    columns: list[str]
    rows: list[list[Any]]
    truncated: bool
    elapsed_ms: float
