"""Every record that crosses a process boundary, as pydantic models.

One module imported by all processes (flows, dashboard, simulators, tests) so that the HTTP API
and the Bytewax flows validate with exactly the same rules. The contract lists (levels,
check-in outcomes) and the records that are also lake rows are defined in `core.contract`
(the lake tables are derived from them) and re-exported here.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError, to_json

from core import keys

# The contract lists and the lake rows are defined in `core.contract` (once; storage derives
# the lake tables from them) and re-exported here, with every other record.
from core.contract import CHECKIN_OUTCOMES as CHECKIN_OUTCOMES
from core.contract import LEVELS as LEVELS
from core.contract import CheckinMethod as CheckinMethod
from core.contract import CheckinStatus as CheckinStatus
from core.contract import DeadLetter as DeadLetter
from core.contract import DeadLetterRow as DeadLetterRow
from core.contract import Direction as Direction
from core.contract import EventCount as EventCount
from core.contract import Level as Level
from core.contract import RequestLog as RequestLog
from core.contract import StoredEvent as StoredEvent
from core.contract import Verdict as Verdict

#: How far in the future a source clock may run before its events are refused.
MAX_CLOCK_SKEW = timedelta(minutes=5)


def _utc(ts: datetime) -> datetime:
    """Naive timestamps are taken as UTC; aware ones are converted to UTC."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]


def _not_in_future(ts: datetime) -> datetime:
    if ts > datetime.now(UTC) + MAX_CLOCK_SKEW:
        raise ValueError(f"ts lies more than {MAX_CLOCK_SKEW} in the future")
    return ts


#: When something happened at its source: UTC, and not more than MAX_CLOCK_SKEW ahead (a wrong
#: clock would open far-future windows).
SourceTime = Annotated[datetime, AfterValidator(_utc), AfterValidator(_not_in_future)]
Name = Annotated[str, Field(min_length=1, max_length=128)]

#: The one pattern for ids that reach Redis keys, channels, lake partitions, alarm ids and CSV
#: cells: gate, camera, room and event source ids (in records and in the venue file). A letter
#: or digit first (so an id can never start a spreadsheet formula, a path like `..`, or an
#: option like `-x`), then letters, digits, `_`, `.` and `-`; at most 64 characters. No `:`
#: (the Redis key separator), `|` (the alarm id separator), `/`, `*` (glob) or spaces.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
Id = Annotated[str, Field(min_length=1, max_length=64, pattern=ID_PATTERN)]


def non_finite_path(value: Any, path: str = "") -> str | None:
    """Where in a JSON-like value (dicts, lists, scalars) a NaN or ±Infinity float sits
    (`"a.b.2"`; `""` for the value itself), or None when every number is finite.

    JSON has no NaN or Infinity, but Python's and pydantic's parsers accept the tokens (and
    `1e999` overflows to inf); a stored NaN later made every JSON answer that held it fail
    (`GET /api/events` and `GET /logs` answered 500, issue 10)."""
    if isinstance(value, float):
        return None if math.isfinite(value) else path
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    for k, v in items:
        found = non_finite_path(v, f"{path}.{k}" if path else str(k))
        if found is not None:
            return found
    return None


def all_finite(value: Any) -> bool:
    """True when no float in a JSON-like value is NaN or ±Infinity. The events flow runs this
    on every payload, so it is a flat loop building no paths (`non_finite_path` says where,
    only for a refused value)."""
    stack = [value]
    pop, isfinite = stack.pop, math.isfinite
    while stack:
        v = pop()
        t = type(v)
        if t is float:
            if not isfinite(v):
                return False
        elif t is dict:
            stack.extend(v.values())
        elif t is list or t is tuple:
            stack.extend(v)
    return True


def _finite_json(value: dict[str, Any]) -> dict[str, Any]:
    where = None if all_finite(value) else non_finite_path(value)
    if where is not None:
        raise PydanticCustomError(
            "finite_number",
            "Input should be a finite number at {where} (NaN and Infinity are not JSON)",
            {"where": where},
        )
    return value


#: A JSON object that came from outside: any depth, but every number finite. Every input
#: record uses it for its free-form part (`payload`, `metadata`), so the HTTP API and the flows
#: refuse NaN/Infinity the same way (422 naming the field, or a dead letter with the reason).
JsonObject = Annotated[dict[str, JsonValue], AfterValidator(_finite_json)]

#: Config of every input record: unknown fields refused, floats must be finite.
INPUT = ConfigDict(extra="forbid", allow_inf_nan=False)


class UiClickPayload(BaseModel):
    """Payload of a browser `ui.click` event (seed 004)."""

    model_config = INPUT
    page: Name
    target: Annotated[str, Field(min_length=1, max_length=512)]
    x: Annotated[float, Field(ge=0, le=100_000)]
    y: Annotated[float, Field(ge=0, le=100_000)]
    session: Name


class UiKeydownPayload(BaseModel):
    """Payload of a browser `ui.keydown` event (seed 004)."""

    model_config = INPUT
    page: Name
    key: Annotated[str, Field(min_length=1, max_length=32)]
    session: Name


#: Event types whose payload has a schema of its own.
PAYLOAD_SCHEMAS: dict[str, type[BaseModel]] = {
    "ui.click": UiClickPayload,
    "ui.keydown": UiKeydownPayload,
}


class Event(BaseModel):
    """A sensor, system or client event as sent by its source (seed 003 + 004).

    `ts` is when it happened at the source; it defaults to the time it was accepted, and may not
    lie more than `MAX_CLOCK_SKEW` in the future (a wrong clock would open far-future windows).
    """

    model_config = INPUT
    source: Id
    type: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]
    level: Level
    payload: JsonObject = Field(default_factory=dict)
    ts: SourceTime | None = None

    @model_validator(mode="after")
    def _payload_schema(self) -> Event:
        schema = PAYLOAD_SCHEMAS.get(self.type)
        if schema is not None:
            try:
                schema.model_validate(self.payload)
            except ValidationError as exc:
                # Re-raise with locations under `payload` so callers see `payload.x`.
                raise ValidationError.from_exception_data(
                    "Event",
                    [
                        {
                            "type": e["type"],
                            "loc": ("payload", *e["loc"]),
                            "input": e["input"],
                            "ctx": e.get("ctx", {}),
                        }
                        for e in exc.errors(include_url=False)
                    ],
                ) from None
        return self


# --- attendance: participants, check-ins, verdicts (seed 002) -----------------------------------

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
Nonce = Annotated[str, Field(min_length=8, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")]


class CheckIn(BaseModel):
    """A scan sent by a gate (`XADD checkins:in * data <json>` or `POST /api/checkins`).

    `ts` is when the gate scanned (an offline gate uploads later with the original time);
    `nonce` is unique per scan: a retried upload with the same nonce counts once. `offline`
    says the gate decided on its own (it held only the public key) and already let the person
    through; the server's verdict then may flag it.
    """

    model_config = INPUT
    gate_id: Id
    token: Annotated[str, Field(min_length=1, max_length=1024)]
    ts: SourceTime | None = None
    device_id: Name | None = None
    method: CheckinMethod = "qr_scan"
    direction: Direction = "in"
    nonce: Nonce
    offline: bool = False


class Participant(BaseModel):
    """A registered participant (one CSV row). Columns other than these go to `extra`."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, str_strip_whitespace=True)
    id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@:\-]+$")]
    name: Annotated[str, Field(min_length=1, max_length=200)]
    email: Annotated[str | None, Field(max_length=254)] = None
    organization: Annotated[str | None, Field(max_length=200)] = None
    category: Annotated[str | None, Field(max_length=64)] = None
    extra: dict[str, str] = Field(default_factory=dict)

    @field_validator("email", "organization", "category", mode="before")
    @classmethod
    def _blank_is_none(cls, v: Any) -> Any:
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("email")
    @classmethod
    def _looks_like_email(cls, v: str | None) -> str | None:
        if v is not None and not _EMAIL.fullmatch(v):
            raise ValueError(f"{v!r} is not an e-mail address (like name@example.org)")
        return v


class ParticipantOp(BaseModel):
    """An entry of `participants:in`: create/update (`upsert`), `revoke` (the token is refused
    from now on), `reissue` (a new token; the old one is refused as revoked) or `restore`."""

    model_config = INPUT
    op: Literal["upsert", "revoke", "reissue", "restore"]
    participant: Participant | None = None
    id: str | None = None
    reason: Annotated[str | None, Field(max_length=500)] = None

    @model_validator(mode="after")
    def _target(self) -> ParticipantOp:
        if self.op == "upsert":
            if self.participant is None:
                raise ValueError("upsert needs `participant`")
            self.id = self.participant.id
        elif not self.id:
            raise ValueError(f"{self.op} needs `id`")
        return self


_event_json = TypeAdapter(Event)


def reason_of(exc: Exception) -> str:
    """A short, human-readable reason naming each bad field."""
    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors(include_url=False, include_input=False):
            loc = ".".join(str(p) for p in err["loc"]) or "(root)"
            parts.append(f"{loc}: {err['msg']}")
        return "; ".join(parts)
    return f"{type(exc).__name__}: {exc}"


def field_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """Field errors for an HTTP 422 body: location, message, error type."""
    return [
        {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"], "type": e["type"]}
        for e in exc.errors(include_url=False, include_input=False)
    ]


def parse_event(raw: bytes | str, max_bytes: int) -> Event:
    """Validate one raw JSON event; raise ValueError/ValidationError with the reason."""
    if len(raw) > max_bytes:
        raise ValueError(f"event is {len(raw)} bytes, more than the limit of {max_bytes}")
    if isinstance(raw, bytes):
        # Strict UTF-8: invalid bytes are refused, never replaced.
        raw.decode("utf-8")
    return _event_json.validate_json(raw)


def _null(_: str) -> None:
    return None


def _finite_or_null(text: str) -> float | None:
    f = float(text)
    return f if math.isfinite(f) else None


def stored_json(raw: str | bytes) -> Any:
    """JSON read back from Redis or the lake for an answer: `NaN`, `Infinity` and overflowing
    numbers (`1e999`) become null. Inputs refuse them (`JsonObject`), but a row written before
    that, or by hand, must not make a read API answer 500 (it did: issue 10). ValueError if
    `raw` is not JSON."""
    return json.loads(raw, parse_constant=_null, parse_float=_finite_or_null)


def dumps(obj: Any) -> str:
    """Compact JSON; datetimes as ISO 8601 (pydantic's encoder, like every other record)."""
    return to_json(obj).decode()


# --- video: cameras, capture commands, rooms, activity log (seeds 000 and 001) -----------------

CameraState = Literal["idle", "connecting", "streaming", "reconnecting", "error", "stopped"]
CaptureAction = Literal["start", "stop", "status"]
ObjectId = Id  # camera and room ids
ClientId = Annotated[str, Field(min_length=1, max_length=128)]
Ip = Annotated[str, Field(max_length=64)]
UserAgent = Annotated[str, Field(max_length=512)]
ActivityName = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")
]


#: `reply_to` must be a key under this deployment's `video:reply:` (never another key).
_REPLY_TO = "^" + re.escape(keys.VIDEO_REPLY_PREFIX) + r"[A-Za-z0-9_.:\-]{1,128}$"


class CaptureCommand(BaseModel):
    """An entry of `video:commands` (seed 001's start/stop/status requests).

    `camera_id` may be left out only for `status` (then every camera answers). `reply_to`, a
    key under `video:reply:`, gets each answering camera's status RPUSHed (expiring after a
    minute), so a client can `BLPOP` it; the prefix keeps clients from making the flow write
    arbitrary keys. Who sent it (`client_id`, `ip`, `user_agent`, `room_id`) goes to the
    activity log `request_logs` with the command.
    """

    model_config = INPUT
    action: CaptureAction
    camera_id: ObjectId | None = None
    reply_to: Annotated[str, Field(pattern=_REPLY_TO)] | None = None
    client_id: ClientId | None = None
    ip: Ip | None = None
    user_agent: UserAgent | None = None
    room_id: ObjectId | None = None
    metadata: JsonObject = Field(default_factory=dict)
    ts: SourceTime | None = None

    @model_validator(mode="after")
    def _needs_camera(self) -> CaptureCommand:
        if self.action != "status" and self.camera_id is None:
            raise ValueError(f"{self.action} needs camera_id")
        return self


class CameraStatus(BaseModel):
    """One camera's capture status: the hash `video:status` (field = camera id) and each
    message on `live:cameras`. `is_active`: capture is switched on (streaming, or trying to);
    `state` says how it goes. Counters run since the video flow started; `rtsp_url` has any
    password replaced by `***`."""

    camera_id: str
    name: str
    state: CameraState
    is_active: bool
    rtsp_url: str
    error_message: str | None = None
    fps_in: float = 0.0
    fps_out: float = 0.0
    frames_in: int = 0
    frames_out: int = 0
    dropped: int = 0
    bad_frames: int = 0
    reconnects: int = 0
    last_frame_at: datetime | None = None
    state_since: datetime
    target_fps: float
    width: int
    height: int
    updated_at: datetime


#: `video:<camera_id>` frame header: magic, then seq (u64), captured_at, encoded_at (f64),
#: width, height (u16), big-endian — 32 bytes. See `FrameHeader`.
FRAME_MAGIC = b"VFJ1"
FRAME_FORMAT = "!4sQddHH"
FRAME_HEADER_SIZE = 32


class FrameHeader(BaseModel):
    """The fixed 32-byte header in front of the JPEG in every `video:<camera_id>` message and
    every WebSocket frame sent to viewers (`FRAME_FORMAT`).

    Binary, not JSON, because it is read for every frame by every viewer (a browser reads it
    with a `DataView`); `captured_at` is when OpenCV returned the frame, so any reader can
    measure capture → viewer latency."""

    seq: int
    captured_at: float
    encoded_at: float
    width: int
    height: int

    def pack(self) -> bytes:
        import struct

        return struct.pack(
            FRAME_FORMAT, FRAME_MAGIC, self.seq, self.captured_at, self.encoded_at,
            self.width, self.height,
        )  # fmt: skip

    @classmethod
    def unpack(cls, data: bytes) -> tuple[FrameHeader, bytes]:
        """(header, JPEG bytes) of one message; ValueError if it is not a frame."""
        import struct

        if len(data) < FRAME_HEADER_SIZE or data[:4] != FRAME_MAGIC:
            raise ValueError("not a Venueflow video frame (bad magic or too short)")
        _, seq, cap, enc, w, h = struct.unpack(FRAME_FORMAT, data[:FRAME_HEADER_SIZE])
        header = cls(seq=seq, captured_at=cap, encoded_at=enc, width=w, height=h)
        return header, data[FRAME_HEADER_SIZE:]


#: Larger `activity:in` / `video:commands` entries (and `POST /logs` bodies) are refused: they
#: are small records.
MAX_LOG_BYTES = 16 * 1024


class LogPost(BaseModel):
    """The body of `POST /logs`; the server adds the caller's IP and user agent (`ActivityIn`)."""

    model_config = INPUT
    event: ActivityName
    ts: SourceTime | None = None
    client_id: ClientId | None = None
    room_id: ObjectId | None = None
    camera_id: ObjectId | None = None
    metadata: JsonObject = Field(default_factory=dict)


class ActivityIn(LogPost):
    """An entry of `activity:in` (seed 000's client activity): who did what, from where.

    The dashboard writes connects, room joins/leaves and room changes; `POST /logs` writes
    what clients send, and the login audit (`auth.login.*`). `flows/request_logs.py` (a branch
    of the video flow) stores each as a `request_logs` row (capture commands are logged from
    `video:commands` directly, so they are never logged twice)."""

    ip: Ip | None = None
    user_agent: UserAgent | None = None


class Room(BaseModel):
    """A streaming room (seed 000): cameras shown together. Hash `rooms`, field = id."""

    model_config = ConfigDict(extra="forbid")
    id: ObjectId
    name: Annotated[str, Field(min_length=1, max_length=120)]
    camera_ids: Annotated[list[ObjectId], Field(min_length=1, max_length=16)]
    created_at: UtcDatetime
    created_by: Annotated[str, Field(max_length=120)] | None = None


class RoomMember(BaseModel):
    """Someone in a room: hash `room:<id>:members`, field = member id (one per browser tab).
    `last_seen` is refreshed while the tab is open; stale members are dropped."""

    model_config = ConfigDict(extra="forbid")
    member_id: ClientId
    name: Annotated[str, Field(min_length=1, max_length=80)]
    joined_at: UtcDatetime
    last_seen: UtcDatetime
    ip: Ip | None = None
    user_agent: UserAgent | None = None


def event_stream_for(source: str | None, streams: list[str]) -> str:
    """The stream an event of `source` is XADDed to: sharded by source across EVENT_STREAMS
    (default just `events:in`), so one source keeps one order. Every door uses it (HTTP, and
    the pub/sub bridge); an event without a readable source goes to the first stream, where
    the events flow dead-letters it with the reason."""
    if not streams:
        return keys.EVENTS_IN
    if len(streams) == 1 or not source:
        return streams[0]
    return streams[zlib.crc32(source.encode()) % len(streams)]
