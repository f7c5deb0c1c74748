"""The lake's tables: their Arrow schemas and the column that picks each row's date partition.

Later capabilities (check-ins, alarms, cameras) register their tables here too, so the sink,
the catalog and the UI all agree on one definition.

A table whose row is also a record crossing processes (`core.contract`) is
*derived* from that record's pydantic model (`columns_of`): the columns are the model's fields,
in order, so a field added to the model is a column of the table, and the test
`tests/test_contracts.py` proves each row builder writes exactly the table's columns. Tables
whose rows exist only in the lake list their columns here.
"""

from __future__ import annotations

import datetime as dt
import types
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import pyarrow as pa
from pydantic import BaseModel

from core.contract import (
    AlarmTransition,
    DeadLetterRow,
    EventCount,
    RequestLog,
    StoredEvent,
    Verdict,
)

TS = pa.timestamp("us", tz="UTC")

#: Python type → lake column type. Dicts and lists (free JSON) are stored as JSON text (query
#: them with `->>` in DuckDB); literals of strings are strings.
_ARROW: dict[type, pa.DataType] = {
    str: pa.string(),
    bool: pa.bool_(),
    int: pa.int64(),
    float: pa.float64(),
    bytes: pa.binary(),
    dt.datetime: TS,
    dict: pa.string(),
    list: pa.string(),
}


def arrow_type(annotation: Any) -> pa.DataType:
    """The lake column type of a model field's type (`X | None` is a nullable X)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return arrow_type(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"no lake column type for the union {annotation!r}")
        return arrow_type(args[0])
    if origin is Literal:
        if all(isinstance(a, str) for a in get_args(annotation)):
            return pa.string()
        raise TypeError(f"no lake column type for {annotation!r}")
    found = _ARROW.get(origin or annotation)
    if found is None:
        raise TypeError(f"no lake column type for {annotation!r}")
    return found


def columns_of(
    model: type[BaseModel], exclude: Iterable[str] = (), **types_: pa.DataType
) -> pa.Schema:
    """A table's schema derived from a record model: one column per field (in order) except
    `exclude`, typed by `arrow_type` unless `types_` names the column's type (e.g. a narrower
    integer)."""
    skip = set(exclude)
    unknown = (skip | set(types_)) - set(model.model_fields)
    if unknown:
        raise ValueError(f"{model.__name__} has no field(s) {sorted(unknown)}")
    return pa.schema(
        [
            (name, types_.get(name) or arrow_type(f.annotation))
            for name, f in model.model_fields.items()
            if name not in skip
        ]
    )


@dataclass(frozen=True)
class Table:
    name: str
    schema: pa.Schema
    #: Timestamp column whose UTC date names the `date=YYYY-MM-DD` partition of a row.
    date_column: str
    #: Columns that hold personal data (seed 002's PII protection): the one place that says
    #: so. Analysts see them pseudonymised, erasure clears them, and they are kept out of
    #: file statistics so no copy of them survives outside the rows themselves.
    personal: frozenset[str] = frozenset()
    #: The column holding the participant id the personal columns belong to (erasure finds a
    #: person's rows by it); None when the table's personal data is not tied to a participant.
    subject: str | None = None


EVENTS = Table(
    "events",
    columns_of(StoredEvent),
    "ts",
)

#: Partial counts: a window may be emitted in several parts (corrections for late events, or
#: a resume after long downtime); the catalog view sums them per (window, type, level).
EVENT_COUNTS = Table(
    "event_counts",
    columns_of(EventCount),
    "window_start",
)

#: Records that arrived after their window had closed (allowed lateness exceeded). They are
#: still stored in their own table and counted as a `late` correction; this table says which.
LATE_RECORDS = Table(
    "late_records",
    pa.schema(
        [
            ("table_name", pa.string()),
            ("record_id", pa.string()),
            ("key", pa.string()),
            ("ts", TS),
            ("window_start", TS),
            ("detected_at", TS),
        ]
    ),
    "ts",
)

#: Rejected input, kept for good (the `events:dead` stream is capped): reason and raw bytes.
DEAD_LETTERS = Table(
    "dead_letters",
    columns_of(DeadLetterRow),
    "received_at",
)

#: Every check-in decision (seed 002's attendance records). A scan normally has one row; an
#: offline upload that overturns an earlier verdict adds a row with `revision` + 1. The view
#: `checkins` keeps the latest revision of each scan; `checkin_decisions` has them all.
CHECKINS = Table(
    "checkins",
    columns_of(Verdict, exclude=("replayed",), revision=pa.int32()),
    "ts",
    personal=frozenset({"participant_name"}),
    subject="participant_id",
)

#: Partial per-minute counts of scans per (gate, direction, status), on event time; a revision
#: adds -1/+1 parts, a late upload a `late` part. The view `attendance_per_minute` sums them.
ATTENDANCE_COUNTS = Table(
    "attendance_counts",
    pa.schema(
        [
            ("window_start", TS),
            ("window_end", TS),
            ("gate_id", pa.string()),
            ("direction", pa.string()),
            ("status", pa.string()),
            ("count", pa.int64()),
            ("late", pa.bool_()),
            ("emitted_at", TS),
        ]
    ),
    "window_start",
)

#: Participant versions: one row per change (import, update, revoke, reissue, restore). The
#: view `participants` keeps the newest version of each id.
PARTICIPANTS = Table(
    "participants",
    pa.schema(
        [
            ("id", pa.string()),
            ("name", pa.string()),
            ("email", pa.string()),
            ("organization", pa.string()),
            ("category", pa.string()),
            ("extra", pa.string()),
            ("serial", pa.int32()),
            ("status", pa.string()),
            ("revoked_at", TS),
            ("revoked_reason", pa.string()),
            ("op", pa.string()),
            ("updated_at", TS),
            ("entry_id", pa.string()),  # the participants:in entry: orders same-ms changes
        ]
    ),
    "updated_at",
    personal=frozenset({"name", "email", "extra"}),
    subject="id",
)

#: Per-camera capture statistics, one row per (camera, window) part: counters are additive, so
#: a window emitted in two parts (the flow stopped mid-window) sums correctly. The view
#: `camera_stats` sums the parts and derives fps and uptime; `camera_stat_parts` has them raw.
CAMERA_STATS = Table(
    "camera_stats",
    pa.schema(
        [
            ("camera_id", pa.string()),
            ("window_start", TS),
            ("window_end", TS),
            ("frames_in", pa.int64()),  # decoded from the camera
            ("frames_out", pa.int64()),  # encoded and published on video:<camera_id>
            ("dropped", pa.int64()),  # decoded but overtaken by a newer frame before publishing
            ("bad_frames", pa.int64()),
            ("reconnects", pa.int64()),
            ("errors", pa.int64()),  # failed connection attempts
            ("uptime_s", pa.float64()),  # seconds spent streaming
            ("observed_s", pa.float64()),  # seconds the flow measured (less if it was down)
            ("bytes_out", pa.int64()),
            ("emitted_at", TS),
        ]
    ),
    "window_start",
)

#: The activity log (seed 000's RequestLog): connects, room joins/leaves, capture commands,
#: `POST /logs` — who (client id, IP, user agent), when, and free metadata (JSON text).
REQUEST_LOGS = Table(
    "request_logs",
    columns_of(RequestLog),
    "ts",
    personal=frozenset({"ip", "user_agent"}),
)

#: The alarm history (issue 5): one row per transition of an alarm — raised, acknowledged,
#: cleared (repeats only raise the live alarm's count). `by` is "rule" or the username, `at`
#: the wall time of the transition, `event_ts` the event time that caused it (null for a
#: person); `revision` numbers an alarm's transitions, so its newest row is its status.
ALARMS = Table(
    "alarms",
    columns_of(AlarmTransition, revision=pa.int32()),
    "at",
)

#: Erasures of a person's data (`run.py participants erase`): who, when, which id and how
#: many rows of which tables — never the erased values.
ERASURES = Table(
    "erasures",
    pa.schema(
        [
            ("erasure_id", pa.string()),
            ("participant_id", pa.string()),
            ("by", pa.string()),
            ("at", TS),
            ("rows", pa.string()),  # JSON: table → rows whose personal columns were cleared
        ]
    ),
    "at",
)

#: Notifications (issue 12): one row per attempt to send one (delivered / failed / gave_up),
#: per notification a route's quiet hours held back (`quiet_hours`), and per escalation step
#: (`escalated`, `escalation_stopped`). `notification_id` is what receivers de-duplicate on;
#: `latency_ms` the attempt's duration; `error` never holds a secret (scrubbed).
NOTIFICATIONS = Table(
    "notifications",
    pa.schema(
        [
            ("notification_id", pa.string()),
            ("alarm_id", pa.string()),
            ("rule_id", pa.string()),
            ("source", pa.string()),
            ("severity", pa.string()),
            ("transition", pa.string()),
            ("level", pa.int32()),
            ("target", pa.string()),
            ("route", pa.string()),
            ("attempt", pa.int32()),
            ("result", pa.string()),
            ("status_code", pa.int32()),
            ("latency_ms", pa.float64()),
            ("error", pa.string()),
            ("at", TS),
        ]
    ),
    "at",
)

TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        EVENTS,
        EVENT_COUNTS,
        LATE_RECORDS,
        DEAD_LETTERS,
        CHECKINS,
        ATTENDANCE_COUNTS,
        PARTICIPANTS,
        CAMERA_STATS,
        REQUEST_LOGS,
        ALARMS,
        ERASURES,
        NOTIFICATIONS,
    )
}
