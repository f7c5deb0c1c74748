"""The attendance report: CSV, printable HTML, JSON and the page give the numbers that
`run.py query` gives for the documented SQL — checked on a small known scenario run through
the real check-in flow (5 participants, 3 admitted at 2 gates, 1 refused and flagged).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from playwright.sync_api import expect

from storage.catalog import connect_memory, query
from storage.reports import SECTIONS
from tests.conftest import login_browser, wait_for
from tests.participants_helpers import Stack
from tests.ui_fixtures import chromium


def test_every_report_query_is_documented_verbatim() -> None:
    """docs/gates.md gives analysts the report's SQL: it must hold each query verbatim."""
    doc = " ".join((Path(__file__).parent.parent / "docs" / "gates.md").read_text().split())
    for s in SECTIONS.values():
        assert s.sql in doc, s.key


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("report"))
    yield s
    s.close()


def norm(v: Any) -> Any:
    """One comparable value from JSON (run.py, API) or CSV text."""
    if v is None:
        return ""
    if isinstance(v, str):
        if v in ("true", "false"):
            return v == "true"
        try:
            return int(v)
        except ValueError:
            pass
        try:
            return datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            return v
    return v


def table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: norm(v) for k, v in r.items()} for r in rows]


def csv_sections(text: str) -> dict[str, list[dict[str, Any]]]:
    """The report CSV back into tables: a title row, a header row, rows, a blank row."""
    assert text.startswith("\ufeff")  # so Excel reads it as UTF-8
    rows = list(csv.reader(io.StringIO(text[1:])))
    titles = {s.title: k for k, s in SECTIONS.items()}
    out: dict[str, list[dict[str, Any]]] = {}
    i = 0
    while i < len(rows):
        if len(rows[i]) == 1 and rows[i][0] in titles:
            key, header, body = titles[rows[i][0]], rows[i + 1], []
            j = i + 2
            while j < len(rows) and rows[j]:
                if rows[j] != ["(none)"]:
                    body.append(dict(zip(header, rows[j], strict=True)))
                j += 1
            out[key] = table(body)
            i = j
        else:
            i += 1
    return out


def lake_count(stack: Stack, sql: str) -> int:
    con = connect_memory(stack.data / "lake")
    try:
        return int(query(con, sql)[1][0][0] or 0)
    except duckdb.Error:
        return -1
    finally:
        con.close()


def test_report_numbers_equal_run_py_query(stack: Stack) -> None:
    http = stack.http
    assert http is not None and stack.app is not None
    people = [{"id": f"r-{c}", "name": f"Person {c}"} for c in "ABCDE"]
    resp = http.post("/api/participants", json=people)
    assert resp.status_code == 200 and resp.json()["new"] == 5, resp.text

    # Three admitted at two gates in two minutes (scanned earlier, e.g. uploaded by a gate
    # that was offline), then A again at the side gate, offline: a duplicate, flagged.
    now = datetime.now(UTC)
    m0 = now.replace(second=0, microsecond=0) - timedelta(minutes=4)
    m1 = m0 + timedelta(minutes=1)
    assert stack.scan(stack.token("r-A"), "main", m0 + timedelta(seconds=10))["status"] == (
        "accepted"
    )
    assert stack.scan(stack.token("r-B"), "main", m0 + timedelta(seconds=20))["status"] == (
        "accepted"
    )
    assert stack.scan(stack.token("r-C"), "side", m1 + timedelta(seconds=5))["status"] == (
        "accepted"
    )
    dup = stack.scan(stack.token("r-A"), "side", now, offline=True)
    assert dup["status"] == "duplicate" and dup["flagged"] is True

    # The flow writes the lake; the two minutes close (allowed lateness 2 s) once the last
    # scan has moved event time on.
    wait_for(lambda: lake_count(stack, "SELECT count(*) FROM checkins") == 4, 30, 0.2, "4 rows")
    accepted_per_minute = (
        "SELECT sum(count) FROM attendance_per_minute WHERE status = 'accepted' "
        "AND direction = 'in'"
    )
    wait_for(lambda: lake_count(stack, accepted_per_minute) == 3, 30, 0.2, "two closed minutes")

    expected = {
        "summary": [
            {
                "registered": 5,
                "checked_in": 3,
                "no_shows": 2,
                "revoked": 0,
                "scans": 4,
                "entries": 3,
                "exits": 0,
                "refused": 1,
                "flagged": 1,
            }
        ],
        "arrival_curve": [{"minute": m0, "entries": 2}, {"minute": m1, "entries": 1}],
        "peak_minutes": [{"minute": m0, "entries": 2}, {"minute": m1, "entries": 1}],
        "refusals": [{"status": "duplicate", "scans": 1}],
    }
    # The same numbers three ways: `run.py query` on the documented SQL, the CSV, the JSON.
    report_csv = http.get("/api/reports/attendance.csv")
    assert report_csv.status_code == 200
    assert report_csv.headers["content-type"].startswith("text/csv")
    from_csv = csv_sections(report_csv.text)
    from_json = http.get("/api/reports/attendance.json").json()["sections"]
    assert list(from_csv) == list(SECTIONS) == list(from_json)
    # `run.py query` per section (the first creates the catalog file; then in parallel).
    readme_example = table(stack.query("select * from gate_totals order by gate_id"))
    with ThreadPoolExecutor(4) as pool:
        results = pool.map(lambda s: table(stack.query(s.sql)), SECTIONS.values())
        analysts = dict(zip(SECTIONS, results, strict=True))
    for key, sec in SECTIONS.items():
        analyst = analysts[key]
        assert from_csv[key] == analyst, key
        assert table(from_json[key]["rows"]) == analyst, key
        assert from_json[key]["sql"] == sec.sql
        if key in expected:
            assert analyst == expected[key], key

    gates = {g["gate_id"]: g for g in from_csv["gate_totals"]}
    assert set(gates) == {"main", "side"}
    assert {k: gates["main"][k] for k in ("entries", "exits", "refused", "flagged")} == {
        "entries": 2,
        "exits": 0,
        "refused": 0,
        "flagged": 0,
    }
    assert {k: gates["side"][k] for k in ("entries", "exits", "refused", "flagged")} == {
        "entries": 1,
        "exits": 0,
        "refused": 1,
        "flagged": 1,
    }
    assert [n["id"] for n in from_csv["no_shows"]] == ["r-D", "r-E"]
    [flag] = from_csv["flagged"]
    assert (flag["participant_id"], flag["status"], flag["gate_id"]) == ("r-A", "duplicate", "side")
    # docs/gates.md's own example, literally.
    assert readme_example == sorted(from_csv["gate_totals"], key=lambda g: g["gate_id"])

    # One section alone, for scripts; the API needs the key, the dashboard link a login.
    one = http.get("/api/reports/attendance.csv", params={"section": "no_shows"})
    assert one.text.lstrip("\ufeff").splitlines()[0] == "id,name,email,organization,category"
    assert len(one.text.strip().splitlines()) == 3
    assert http.get("/api/reports/attendance.csv", headers={"X-API-Key": ""}).status_code == 401
    assert http.get("/reports/attendance.csv", headers={"X-API-Key": ""}).status_code == 200
    bad = http.get("/api/reports/attendance.csv", params={"section": "nope"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "section"

    # The printable page: self-contained (no script, nothing fetched), print CSS, SVG curve.
    page_html = http.get("/reports/attendance.html", headers={"X-API-Key": ""})
    assert page_html.status_code == 200
    html = page_html.text
    assert "<script" not in html and "src=" not in html and "@import" not in html
    assert 'href="http' not in html and "href='http" not in html
    assert "@media print" in html
    assert html.count("<rect ") == 2  # one bar per minute with entries
    assert "data-key='no_shows'><span>No-shows</span><b>2</b>" in html
    assert "data-key='checked_in'><span>Checked in</span><b>3</b>" in html
    assert "Main entrance" in html and "Side gate" in html
    assert "r-D" in html and "r-E" in html

    # The dashboard page shows the same numbers.
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        login_browser(page, stack.app.base_url)
        page.goto(stack.app.base_url + "/report")
        expect(page.get_by_test_id("kpi-no_shows")).to_have_text("2", timeout=15_000)
        expect(page.get_by_test_id("kpi-checked_in")).to_have_text("3")
        expect(page.get_by_test_id("gate-totals")).to_contain_text("Side gate")
        expect(page.get_by_test_id("no-shows")).to_contain_text("r-E")
        expect(page.get_by_test_id("html-link")).to_have_attribute(
            "href", "/reports/attendance.html"
        )
