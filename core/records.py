"""Every record that crosses a process boundary, as pydantic models.

One module imported by all processes (flows, dashboard, simulators, tests) so that the HTTP API
and the Bytewax flows validate with exactly the same rules.
"""

from __future__ import annotations

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
from pydantic_core import to_json

Level = Literal["INFO", "WARN", "ERROR", "CRITICAL"]
LEVELS: tuple[str, ...] = ("INFO", "WARN", "ERROR", "CRITICAL")

#: How far in the future a source clock may run before its events are refused.
MAX_CLOCK_SKEW = timedelta(minutes=5)


def _utc(ts: datetime) -> datetime:
    """Naive timestamps are taken as UTC; aware ones are converted to UTC."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]
Name = Annotated[str, Field(min_length=1, max_length=128)]


class UiClickPayload(BaseModel):
    """Payload of a browser `ui.click` event (seed 004)."""

    model_config = ConfigDict(extra="forbid")
    page: Name
    target: Annotated[str, Field(min_length=1, max_length=512)]
    x: Annotated[float, Field(ge=0, le=100_000)]
    y: Annotated[float, Field(ge=0, le=100_000)]
    session: Name


class UiKeydownPayload(BaseModel):
    """Payload of a browser `ui.keydown` event (seed 004)."""

    model_config = ConfigDict(extra="forbid")
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

    model_config = ConfigDict(extra="forbid")
    source: Name
    type: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]
    level: Level
    payload: dict[str, JsonValue] = Field(default_factory=dict)
    ts: UtcDatetime | None = None

    @field_validator("ts")
    @classmethod
    def _not_in_future(cls, ts: datetime | None) -> datetime | None:
        if ts is not None and ts > datetime.now(UTC) + MAX_CLOCK_SKEW:
            raise ValueError(f"ts lies more than {MAX_CLOCK_SKEW} in the future")
        return ts

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


class StoredEvent(BaseModel):
    """An event as stored in the lake and broadcast on `events:new` / kept in `events:recent`.

    The flow builds these documents on its hot path without the model (see
    `flows.events_logic`); this is their schema for consumers, checked by the tests.
    """

    id: str
    stream: str
    source: str
    type: str
    level: Level
    payload: dict[str, JsonValue]
    ts: datetime
    received_at: datetime


class DeadLetter(BaseModel):
    """An `events:dead` entry: the reason, where it came from, and the original bytes."""

    reason: str
    origin: str  # the stream key, or `pubsub:<channel>`
    origin_id: str  # the stream entry ID (or pub/sub message ID) that was refused
    data: bytes  # the original bytes, untouched (empty if the entry had no `data` field)


class EventCount(BaseModel):
    """Events per (type, level) in one event-time window, as on `live:event_counts` and in the
    lake's `event_counts` parts. `late` rows are corrections for events after the window closed.
    """

    window_start: datetime
    window_end: datetime
    type: str
    level: Level
    count: int
    late: bool = False
    emitted_at: datetime


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


def dumps(obj: Any) -> str:
    """Compact JSON; datetimes as ISO 8601 (pydantic's encoder, like every other record)."""
    return to_json(obj).decode()
