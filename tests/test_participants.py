"""Participants end to end: `run.py participants …` as an operator runs it, the HTTP API, the
dashboard page in Chromium, QR codes, and revocation seen by a real gate scan.

One real stack for the module (redis-server, the check-in flow, the app); each test uses its
own id prefix, so the tests do not see each other's participants.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import duckdb
import numpy as np
import pytest
from playwright.sync_api import Page, expect

from core import keys
from core.qr import qr_png, qr_svg
from core.tokens import PUBLIC_NAME, key_dir, load_verifier, peek
from storage.catalog import connect_memory, query
from tests.conftest import free_port, login_browser, wait_for
from tests.participants_helpers import Stack

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("participants"))
    yield s
    s.close()


def decode_qr(png: bytes) -> str:
    """What a phone reads from the PNG (OpenCV's QR detector)."""
    assert png.startswith(PNG_SIGNATURE)
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE)
    # OpenCV's classic detector misses some valid codes at some sizes (as a phone may on a
    # first frame); like a phone, look again at other sizes and with the ArUco-based one.
    for scale in (1.0, 0.5, 1.5):
        view = img if scale == 1.0 else cv2.resize(img, None, fx=scale, fy=scale)
        for detector in (cv2.QRCodeDetector(), cv2.QRCodeDetectorAruco()):
            text, _points, _ = detector.detectAndDecode(view)
            if text:
                return text
    return ""


def lake_rows(stack: Stack, sql: str, params: list | None = None) -> list[tuple]:
    con = connect_memory(stack.data / "lake")
    try:
        return query(con, sql, params)[1]
    except duckdb.Error:
        return []
    finally:
        con.close()


CSV = """id,name,email,organization,category,seat
c-P1,Ada Lovelace,ada@example.org,Analytical Engines,speaker,A1
c-P2,Alan Turing,alan@example.org,Bletchley,,B2
,Nobody,nobody@example.org,,,
c-P3,Grace Hopper,grace@example.org,US Navy,,C3
c-P4,Edsger Dijkstra,not-an-email,,,
c-P1,Ada Again,,,,
c-P5,"Liskov, Barbara",barbara@example.org,MIT,,D4,surplus
c-P6,Ken Thompson,ken@example.org,Bell Labs,,E5
"""


def test_cli_import_bad_rows_reimport_update_revoke_tokens_and_qr(
    stack: Stack, tmp_path: Path
) -> None:
    people = tmp_path / "people.csv"
    people.write_text(CSV)

    # Bad rows are reported with their line number and reason; the good rows are imported.
    out = stack.run_py("participants", "import", str(people))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "imported: 4 new, 0 updated, 0 unchanged, 4 bad rows" in out.stdout
    assert "the check-in flow applied all 4 changes" in out.stdout
    bad = [ln for ln in out.stderr.replace("\r", "\n").splitlines() if ln.startswith("line ")]
    assert bad[0].startswith("line 4: id:"), bad
    assert bad[1].startswith("line 6: email:"), bad
    assert bad[2] == "line 7: duplicate id 'c-P1', first on line 2"
    assert bad[3] == "line 8: 7 fields, the header has 6"
    assert len(bad) == 4
    # The progress bar (stderr, redrawn with \r; text mode reads that as a line end).
    assert f"[{'#' * 30}] 100% sending 4/4" in out.stderr

    # Re-importing the same file changes nothing.
    out = stack.run_py("participants", "import", str(people))
    assert out.returncode == 1
    assert "imported: 0 new, 0 updated, 4 unchanged, 4 bad rows" in out.stdout
    assert "nothing to send" in out.stdout

    # An edited row is an update (and only that row is sent).
    people.write_text(CSV.replace("Alan Turing", "Alan M. Turing"))
    out = stack.run_py("participants", "import", str(people), "--quiet")
    assert "imported: 0 new, 1 updated, 3 unchanged, 4 bad rows" in out.stdout, out.stdout
    assert "applied all 1 changes" in out.stdout
    assert "sending" not in out.stderr  # --quiet: no bar

    # The lake's `participants` view shows the update (newest version), with the extra column.
    wait_for(
        lambda: (
            lake_rows(stack, "SELECT name FROM participants WHERE id = 'c-P2'")
            == [("Alan M. Turing",)]
        ),
        30,
        what="the update in the lake",
    )
    rows = stack.query(
        "SELECT id, name, extra, status, serial, (SELECT count(*) FROM participant_versions v "
        "WHERE v.id = p.id) AS versions FROM participants p WHERE id LIKE 'c-%' ORDER BY id"
    )
    assert [r["id"] for r in rows] == ["c-P1", "c-P2", "c-P3", "c-P6"]
    assert rows[1]["name"] == "Alan M. Turing" and '"seat":"B2"' in rows[1]["extra"]
    assert [r["versions"] for r in rows] == [1, 2, 1, 1]

    # A file-level problem: nothing is imported, exit 2, the reason on stderr.
    headerless = tmp_path / "headerless.csv"
    headerless.write_text("foo,bar\n1,2\n")
    out = stack.run_py("participants", "import", str(headerless))
    assert out.returncode == 2 and "the header has no id or name column" in out.stderr

    # Revoke, reissue, tokens.
    out = stack.run_py("participants", "revoke", "c-P3", "--reason", "lost badge")
    assert out.returncode == 0 and "c-P3: revoked" in out.stdout, out.stdout + out.stderr
    out = stack.run_py("participants", "reissue", "c-P1")
    assert out.returncode == 0 and "new token serial 1" in out.stdout, out.stdout
    out = stack.run_py("participants", "token", "c-P1")
    token = out.stdout.strip()
    verifier = load_verifier(stack.data)
    claims = verifier.check(token)
    assert peek(token) == claims and claims.serial == 1 and claims.participant_id == "c-P1"
    out = stack.run_py("participants", "public-key")
    assert out.stdout == (key_dir(stack.data) / PUBLIC_NAME).read_text()
    assert out.stdout.startswith("-----BEGIN PUBLIC KEY-----")

    # Bulk QR export: every participant that may enter, revoked ones skipped.
    qr_dir = tmp_path / "qr"
    out = stack.run_py("participants", "qr", "--out", str(qr_dir), "--format", "both")
    assert out.returncode == 0, out.stderr
    assert re.search(r"skipped [1-9]\d* revoked", out.stdout), out.stdout
    with open(qr_dir / "index.csv", newline="") as fh:
        index = {row["id"]: row for row in csv.DictReader(fh)}
    assert {"c-P1", "c-P2", "c-P6"} <= set(index) and "c-P3" not in index
    for pid in ("c-P1", "c-P2", "c-P6"):
        row = index[pid]
        assert row["file"] == f"{pid}.png"
        assert verifier.check(row["token"]).participant_id == pid
        assert decode_qr((qr_dir / row["file"]).read_bytes()) == row["token"]
        assert (qr_dir / f"{pid}.svg").read_text().startswith("<svg")
    assert index["c-P1"]["token"] == token  # the reissued one

    # Redis not reachable: a clear message and exit 2.
    out = stack.run_py(
        "participants",
        "import",
        str(people),
        env={"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"},
    )
    assert out.returncode == 2
    assert "start `uv run run.py up` first or set REDIS_URL" in out.stderr


def test_api_import_qr_revoke_checkin_and_the_page(stack: Stack, page: Page) -> None:
    http = stack.http
    assert http is not None and stack.app is not None

    # JSON list: bad items reported with line = position, good ones imported.
    resp = http.post(
        "/api/participants",
        json=[
            {"id": "a-1", "name": "Alice"},
            {"id": "a-2"},
            {"id": "a-3", "name": "Bob", "email": "bob@example.org", "organization": "Acme"},
            {"id": "a-1", "name": "Alice again"},
        ],
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["new"], body["updated"], body["unchanged"], body["applied"]) == (2, 0, 0, True)
    assert [b["line"] for b in body["bad"]] == [2, 4]
    assert body["bad"][0]["reason"] == "name: Field required"
    assert "duplicate id 'a-1'" in body["bad"][1]["reason"]

    # A single object, a CSV body and a multipart file upload.
    assert http.post("/api/participants", json={"id": "a-4", "name": "Carol"}).json()["new"] == 1
    resp = http.post(
        "/api/participants", content=b"id,name\na-5,Dave\n", headers={"Content-Type": "text/csv"}
    )
    assert resp.json()["new"] == 1, resp.text
    resp = http.post(
        "/api/participants",
        files={"file": ("people.csv", b"id,name\na-6,Eve\n,No Id\n", "text/csv")},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["new"] == 1 and resp.json()["bad"][0]["line"] == 3
    # Re-sending changes nothing.
    again = http.post("/api/participants", json={"id": "a-4", "name": "Carol"}).json()
    assert (again["new"], again["unchanged"]) == (0, 1)

    # Refusals, each with a reason.
    resp = http.post("/api/participants", json=[{"id": ""}])
    assert resp.status_code == 422 and resp.json()["errors"][0]["line"] == 1
    resp = http.post(
        "/api/participants", content=b"foo,bar\n1,2\n", headers={"Content-Type": "text/csv"}
    )
    assert resp.status_code == 422 and "no id or name column" in resp.json()["detail"]
    resp = http.post(
        "/api/participants", content=b"<x/>", headers={"Content-Type": "application/xml"}
    )
    assert resp.status_code == 415
    resp = http.post("/api/participants", json={"id": "z", "name": "z"}, headers={"X-API-Key": ""})
    assert resp.status_code == 401

    # Search the lake (a few seconds behind the flow).
    def search() -> dict | None:
        doc = http.get("/api/participants", params={"q": "ACME"}).json()
        return doc if doc["total"] == 1 else None

    found = wait_for(search, 30, 0.2, "a-3 in the lake")
    assert found["items"][0]["id"] == "a-3" and found["items"][0]["status"] == "active"
    detail = http.get("/api/participants/a-3").json()
    assert detail["index"]["serial"] == 0 and detail["participant"]["name"] == "Bob"
    assert detail["checked_in"] is False
    assert http.get("/api/participants/nobody").status_code == 404

    # QR codes: the PNG reads back as the token the gates accept; the SVG is an SVG.
    token = stack.token("a-3")
    png = http.get("/api/participants/a-3/qr.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content.startswith(PNG_SIGNATURE)
    assert decode_qr(png.content) == token
    assert png.content == qr_png(token)  # deterministic rendering of the same token
    svg = http.get("/api/participants/a-3/qr.svg")
    assert svg.headers["content-type"].startswith("image/svg+xml")
    assert svg.text.startswith("<svg") and svg.text.rstrip().endswith("</svg>")
    assert svg.text == qr_svg(token)
    assert http.get("/api/participants/nobody/qr.png").status_code == 404
    assert http.get("/api/participants/a-3/qr.png", headers={"X-API-Key": ""}).status_code == 401
    dashboard = http.get("/participants/a-3/qr.svg?download=true", headers={"X-API-Key": ""})
    assert dashboard.status_code == 200
    assert "attachment" in dashboard.headers["content-disposition"]

    # Revoke: the QR is gone (410) and a gate scanning the token is told `revoked`.
    resp = http.post("/api/participants/a-4/revoke", json={"reason": "lost badge"})
    assert resp.status_code == 200 and resp.json()["applied"] is True, resp.text
    assert http.get("/api/participants/a-4/qr.png").status_code == 410
    verdict = stack.scan(stack.token("a-4"))
    assert verdict["status"] == "revoked" and "lost badge" in verdict["reason"]
    assert verdict["participant_id"] == "a-4"
    # Restore: admitted again.
    assert http.post("/api/participants/a-4/restore").json()["applied"] is True
    assert stack.scan(stack.token("a-4"))["status"] == "accepted"
    wait_for(
        lambda: http.get("/api/participants/a-4").json()["checked_in"], 30, 0.2, "a-4 checked in"
    )
    # Reissue: the old token is refused, the new one (serial 1) is what the QR code now holds.
    resp = http.post("/api/participants/a-5/reissue")
    assert resp.json()["index"]["serial"] == 1
    assert stack.scan(stack.token("a-5"))["status"] == "revoked"
    assert decode_qr(http.get("/api/participants/a-5/qr.png").content) == stack.token("a-5", 1)
    assert stack.scan(stack.token("a-5", 1))["status"] == "accepted"
    assert http.post("/api/participants/nobody/revoke").status_code == 404

    # Bulk export: a zip of PNGs and index.csv, streamed from a child process.
    resp = http.get("/api/participants/qr.zip")
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/zip"
    zf = zipfile.ZipFile(io.BytesIO(resp.content))
    index = {r["id"]: r for r in csv.DictReader(io.StringIO(zf.read("index.csv").decode()))}
    assert {"a-1", "a-3", "a-4", "a-5", "a-6"} <= set(index)
    assert index["a-5"]["token"] == stack.token("a-5", 1)
    assert decode_qr(zf.read(index["a-3"]["file"])) == token

    # The dashboard: upload a CSV, see the import report, open a participant, revoke.
    base = stack.app.base_url
    login_browser(page, base)
    page.goto(base + "/participants")
    expect(page.get_by_test_id("kpi-known")).not_to_have_text("—", timeout=10_000)
    csv_file = Path(stack.data) / "upload.csv"
    csv_file.write_text("id,name,email\na-7,Frank Page,frank@example.org\na-8,,x@example.org\n")
    page.locator('[data-testid="upload"] input[type=file]').set_input_files(str(csv_file))
    result = page.get_by_test_id("import-result")
    expect(result).to_contain_text("1 new", timeout=30_000)
    expect(result).to_contain_text("1 bad rows")
    expect(page.get_by_test_id("bad-rows")).to_contain_text("name")
    expect(page.get_by_test_id("bad-rows").locator("tbody tr").first).to_contain_text("3")
    page.get_by_test_id("search").fill("frank")
    row = page.locator('[data-participant-id="a-7"]')
    for _ in range(60):  # the lake catches up within seconds; the refresh button re-reads it
        if row.is_visible():
            break
        page.get_by_test_id("refresh").click()
        page.wait_for_timeout(500)
    row.click()
    dialog = page.get_by_test_id("participant-dialog")
    expect(dialog.locator("svg").first).to_be_visible(timeout=10_000)
    expect(dialog.get_by_test_id("qr-png-link")).to_have_attribute(
        "href", "/participants/a-7/qr.png?download=true"
    )
    dialog.get_by_test_id("revoke").click()
    expect(dialog.get_by_test_id("dialog-status")).to_have_text("revoked", timeout=15_000)
    assert stack.r.hget(keys.PARTICIPANTS_INDEX, "a-7") is not None
    assert http.get("/api/participants/a-7").json()["status"] == "revoked"
    # Erase (organiser): the confirmation, then the lake holds no name and records who did it.
    dialog.get_by_test_id("erase").click()
    page.get_by_test_id("erase-confirm").click()
    expect(page.get_by_text("personal data erased")).to_be_visible(timeout=60_000)
    assert stack.query("SELECT name, email FROM participants WHERE id = 'a-7'") == [
        {"name": "(erased)", "email": None}
    ]
    (e,) = stack.query("SELECT \"by\" FROM erasures WHERE participant_id = 'a-7'")
    assert e["by"] == "ui:organiser"
    assert b"Frank Page" not in b"".join(
        p.read_bytes() for p in (stack.data / "lake" / "participants").rglob("*") if p.is_file()
    )
