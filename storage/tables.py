"""The lake's tables: their Arrow schemas and the column that picks each row's date partition.

Later capabilities (check-ins, alarms, cameras) register their tables here too, so the sink,
the catalog and the UI all agree on one definition.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")


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
    pa.schema(
        [
            ("id", pa.string()),
            ("stream", pa.string()),
            ("source", pa.string()),
            ("type", pa.string()),
            ("level", pa.string()),
            ("payload", pa.string()),  # the JSON object, as text; query it with ->> in DuckDB
            ("ts", TS),
            ("received_at", TS),
        ]
    ),
    "ts",
)

#: Partial counts: a window may be emitted in several parts (corrections for late events, or
#: a resume after long downtime); the catalog view sums them per (window, type, level).
EVENT_COUNTS = Table(
    "event_counts",
    pa.schema(
        [
            ("window_start", TS),
            ("window_end", TS),
            ("type", pa.string()),
            ("level", pa.string()),
            ("count", pa.int64()),
            ("late", pa.bool_()),
            ("emitted_at", TS),
        ]
    ),
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
    pa.schema(
        [
            ("origin", pa.string()),
            ("origin_id", pa.string()),
            ("reason", pa.string()),
            ("data", pa.binary()),
            ("received_at", TS),
        ]
    ),
    "received_at",
)

#: Every check-in decision (seed 002's attendance records). A scan normally has one row; an
#: offline upload that overturns an earlier verdict adds a row with `revision` + 1. The view
#: `checkins` keeps the latest revision of each scan; `checkin_decisions` has them all.
CHECKINS = Table(
    "checkins",
    pa.schema(
        [
            ("checkin_id", pa.string()),
            ("nonce", pa.string()),
            ("gate_id", pa.string()),
            ("direction", pa.string()),
            ("status", pa.string()),
            ("reason", pa.string()),
            ("participant_id", pa.string()),
            ("participant_name", pa.string()),
            ("ts", TS),
            ("received_at", TS),
            ("decided_at", TS),
            ("method", pa.string()),
            ("device_id", pa.string()),
            ("offline", pa.bool_()),
            ("flagged", pa.bool_()),
            ("revision", pa.int32()),
            ("token_fp", pa.string()),
        ]
    ),
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
    pa.schema(
        [
            ("id", pa.string()),  # the entry id in `origin`
            ("origin", pa.string()),  # activity:in or video:commands
            ("ts", TS),
            ("event", pa.string()),
            ("client_id", pa.string()),
            ("ip", pa.string()),
            ("user_agent", pa.string()),
            ("room_id", pa.string()),
            ("camera_id", pa.string()),
            ("metadata", pa.string()),
            ("received_at", TS),
        ]
    ),
    "ts",
    personal=frozenset({"ip", "user_agent"}),
)

#: The alarm history (issue 5): one row per transition of an alarm — raised, acknowledged,
#: cleared (repeats only raise the live alarm's count). `by` is "rule" or the username, `at`
#: the wall time of the transition, `event_ts` the event time that caused it (null for a
#: person); `revision` numbers an alarm's transitions, so its newest row is its status.
ALARMS = Table(
    "alarms",
    pa.schema(
        [
            ("alarm_id", pa.string()),
            ("rule_id", pa.string()),
            ("rule_name", pa.string()),
            ("kind", pa.string()),
            ("source", pa.string()),
            ("severity", pa.string()),
            ("transition", pa.string()),
            ("status", pa.string()),
            ("by", pa.string()),
            ("role", pa.string()),
            ("comment", pa.string()),
            ("at", TS),
            ("event_ts", TS),
            ("value", pa.float64()),
            ("count", pa.int64()),
            ("message", pa.string()),
            ("revision", pa.int32()),
        ]
    ),
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
