"""Each contract list is defined once, and its derived forms agree (issue 11, item 5).

The lake tables whose rows are also records are derived from the models in `core.contract`;
here the real row builders of the flows (the very functions they run) must write exactly the
columns of their table, in types the table takes, and the records sent on Redis must match
their models field for field. A field added in one place only fails one of these.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, get_args

import pyarrow as pa
import pytest
from pydantic import BaseModel

from connectors.redis_streams import StreamBatch
from connectors.rtsp_camera import StatsDelta
from core import contract, keys
from core.alarms import REFUSED_STATUSES, AlarmCommand, RefusedBurstRule
from core.notify_plan import TransitionMsg
from core.records import CheckIn, ParticipantOp
from core.tokens import load_signer
from core.venue import parse_venue
from flows.alarms_lifecycle import Life, RuleInfo, Signal, on_command, on_signal
from flows.alarms_lifecycle import transition_command as alarm_transition_command
from flows.checkins_logic import Scan, apply_op, attendance_row, decide
from flows.dead_letters import dead_letter
from flows.events_logic import PAYLOAD_OBJ, count_row, live_commands, parse_batch
from flows.request_logs import parse_log_batch
from flows.video_logic import CameraWindows
from storage.tables import TABLES, Table, arrow_type, columns_of
from tests.attendance_helpers import EVENT_ID, venue_yaml

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)

#: Each lake table derived from a record, with the fields it leaves out.
DERIVED: dict[str, tuple[type[BaseModel], tuple[str, ...]]] = {
    "events": (contract.StoredEvent, ()),
    "event_counts": (contract.EventCount, ()),
    "dead_letters": (contract.DeadLetterRow, ()),
    "checkins": (contract.Verdict, ("replayed",)),
    "request_logs": (contract.RequestLog, ()),
    "alarms": (contract.AlarmTransition, ()),
}


def assert_rows_fit(table: Table, rows: list[dict[str, Any]]) -> None:
    """Rows carry exactly the table's columns, and Arrow takes them in its types."""
    assert rows, f"no {table.name} rows were built"
    for row in rows:
        assert set(row) == set(table.schema.names), (
            f"{table.name}: builder columns {sorted(set(row) ^ set(table.schema.names))} "
            "are in the row or the table only"
        )
    pa.Table.from_pylist(rows, schema=table.schema)  # raises on a value of the wrong type


@pytest.mark.parametrize("name", sorted(DERIVED))
def test_derived_tables_have_every_field_of_their_model(name: str) -> None:
    model, left_out = DERIVED[name]
    schema = TABLES[name].schema
    fields = [f for f in model.model_fields if f not in left_out]
    assert schema.names == fields
    for f in fields:
        want = arrow_type(model.model_fields[f].annotation)
        got = schema.field(f).type
        assert got == want or (pa.types.is_integer(got) and pa.types.is_integer(want)), f


def test_column_types_follow_the_python_types() -> None:
    class Row(BaseModel):
        a: str
        b: int | None
        c: datetime
        d: dict[str, Any]
        e: contract.Level
        f: bytes | None = None

    schema = columns_of(Row, exclude=("f",), b=pa.int32())
    assert schema.names == ["a", "b", "c", "d", "e"]
    assert (
        schema.types == [pa.string(), pa.int32(), pa.timestamp("us", tz="UTC")] + [pa.string()] * 2
    )
    with pytest.raises(ValueError, match="no field"):
        columns_of(Row, exclude=("nope",))


def test_lists_are_derived_from_one_definition() -> None:
    assert get_args(contract.Level) == contract.LEVELS
    assert get_args(contract.Severity) == contract.SEVERITIES
    assert get_args(contract.AlarmStatus) == contract.ALARM_STATUSES
    assert get_args(contract.Transition) == contract.TRANSITIONS
    assert get_args(contract.CheckinStatus) == tuple(contract.CHECKIN_OUTCOMES)
    assert set(REFUSED_STATUSES) == set(contract.CHECKIN_OUTCOMES) - {"accepted", "duplicate"}
    assert contract.CHECKIN_WARNINGS.issubset(set(contract.CHECKIN_OUTCOMES) - {"accepted"})
    # A rule's `statuses:` accepts exactly the outcomes.
    rule = {"id": "r", "name": "r", "severity": "MAJOR", "kind": "refused_burst", "count": 1}
    RefusedBurstRule.model_validate({**rule, "statuses": list(contract.CHECKIN_OUTCOMES)})
    with pytest.raises(ValueError):
        RefusedBurstRule.model_validate({**rule, "statuses": ["not_an_outcome"]})


def test_alarm_rows_and_transition_entries() -> None:
    life = Life()
    rule = RuleInfo("gas", "Gas", "threshold", "MAJOR")
    sig = Signal("fire", "gas", "s1", T0, value=5.0, threshold=4.0, message="high")
    _, raised = on_signal(life, rule, sig, T0)
    aid = "gas|s1|1"
    cmd = AlarmCommand(command_id="c-000001", action="ack", alarm_id=aid, by="ann",
                       role="organiser", comment="seen", at=T0)  # fmt: skip
    _, acked, refused = on_command(life, cmd)
    assert refused is None and raised is not None and acked is not None
    rows = [raised.row, acked.row]
    assert_rows_fit(TABLES["alarms"], rows)
    for row in rows:
        contract.AlarmTransition.model_validate(row)
    # The `alarms:transitions` entry is a TransitionMsg built from the same row.
    for change in (raised, acked):
        data = alarm_transition_command(change)[6]
        msg = TransitionMsg.model_validate_json(data)
        assert msg.revision == change.row["revision"] and msg.alarm.alarm_id == aid
        assert set(json.loads(data)) == set(TransitionMsg.model_fields)


def test_request_log_and_dead_letter_rows() -> None:
    act = {"event": "auth.login.success", "client_id": "c1", "ip": "127.0.0.1",
           "metadata": {"user": "ann"}, "ts": T0.isoformat()}  # fmt: skip
    cmd = {"action": "start", "camera_id": "cam-1", "client_id": "c1"}
    logs = parse_log_batch(
        StreamBatch(keys.ACTIVITY_IN, [("1-0", json.dumps(act).encode()), ("2-0", b"{bad")]),
        frozenset({"cam-1"}),
    )
    cmds = parse_log_batch(
        StreamBatch(keys.VIDEO_COMMANDS, [("3-0", json.dumps(cmd).encode()), ("4-0", None)]),
        frozenset({"cam-1"}),
    )
    rows = logs.rows + cmds.rows
    assert len(rows) == 2
    assert_rows_fit(TABLES["request_logs"], rows)
    for row in rows:  # what `GET /logs` answers: the row with its metadata parsed
        contract.RequestLog.model_validate({**row, "metadata": json.loads(row["metadata"])})
    dead = logs.dead_rows + cmds.dead_rows
    assert len(dead) == 2
    _, row = dead_letter(keys.EVENTS_DEAD, "why", keys.EVENTS_IN, "5-0", b"x", T0)
    assert_rows_fit(TABLES["dead_letters"], [*dead, row])
    for r in (*dead, row):
        contract.DeadLetterRow.model_validate(r)


def test_event_rows() -> None:
    ev = {"source": "s1", "type": "GAS", "level": "WARN", "payload": {"ppm": 1}}
    parsed = parse_batch(StreamBatch(keys.EVENTS_IN, [("1-0", json.dumps(ev).encode())]), 1 << 16)
    # The row also carries the payload object for the live messages (not a lake column).
    assert_rows_fit(TABLES["events"], [{k: v for k, v in r.items() if k != PAYLOAD_OBJ}
                                       for r in parsed.rows])  # fmt: skip
    # What `events:new` broadcasts is the StoredEvent, field for field.
    (doc,) = [c[2] for c in live_commands(parsed.rows) if c[:2] == ("PUBLISH", keys.EVENTS_NEW)]
    assert set(json.loads(doc)) == set(contract.StoredEvent.model_fields)
    contract.StoredEvent.model_validate_json(doc)
    counts = [count_row("GAS\x1fWARN", T0, timedelta(minutes=1), 3, late=False)]
    assert_rows_fit(TABLES["event_counts"], counts)
    contract.EventCount.model_validate(counts[0])


def test_checkin_rows_and_published_verdicts(tmp_path: Path) -> None:
    signer = load_signer(tmp_path)
    venue = parse_venue(venue_yaml())
    op = ParticipantOp.model_validate({"op": "upsert", "participant": {"id": "P1", "name": "A"}})
    st, changed = apply_op(None, op, "1-0", T0)
    assert_rows_fit(TABLES["participants"], changed.participant_rows)
    verdicts: list[dict[str, Any]] = []
    for i, direction in enumerate(("in", "in", "out")):
        c = CheckIn(gate_id="main", token=signer.mint(EVENT_ID, "P1"), direction=direction,
                    nonce=f"nonce-{i:04d}", ts=T0 + timedelta(minutes=i))  # fmt: skip
        scan = Scan(f"{10 + i}-0", c, T0 + timedelta(hours=1), signer.check(c.token))
        st, out = decide(st, scan, venue, now=T0)
        verdicts += out.verdicts
    assert [v["status"] for v in verdicts] == ["accepted", "duplicate", "accepted"]
    # Sent on Redis as they are: exactly the Verdict's fields; stored without `replayed`.
    for v in verdicts:
        assert set(v) == set(contract.Verdict.model_fields)
        contract.Verdict.model_validate(v)
    stored = [{k: x for k, x in v.items() if k != "replayed"} for v in verdicts]
    assert_rows_fit(TABLES["checkins"], stored)
    key = "main\x1fin\x1faccepted"
    counts = [attendance_row(key, T0, timedelta(minutes=1), 2, late=False)]
    assert_rows_fit(TABLES["attendance_counts"], counts)


def test_camera_stats_rows() -> None:
    win = CameraWindows(timedelta(minutes=1), timedelta(seconds=2))
    delta = StatsDelta(camera_id="cam-1", at=T0, frames_in=10, frames_out=9, bytes_out=900,
                       dropped=1, bad_frames=0, reconnects=0, errors=0, uptime_s=1.0,
                       observed_s=1.0)  # fmt: skip
    rows, _ = win.on_item(delta)  # a window long past: emitted at once
    rows += win.on_eof()[0]
    assert_rows_fit(TABLES["camera_stats"], rows)
    assert rows[0]["frames_in"] == 10 and rows[0]["uptime_s"] == 1.0
