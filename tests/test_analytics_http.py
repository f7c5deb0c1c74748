"""Free SQL through the real dashboard (issue 10, items 7 and 9): `POST /api/analytics/sql`
and the `/analytics` page's SQL box, logged in as an analyst and as an organiser.

- analysts get personal columns pseudonymised (stable keyed hashes), organisers in clear;
- one query in flight per session, `SQL_MAX_CONCURRENT` (2) in all: more is refused at once
  with 429 and the reason (the page shows it), and answers again once the slots are free.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

from storage.sql_sandbox import KEY_FILE, pseudonym, pseudonym_key
from tests.conftest import ORGANISER, AppProcess, add_user, login_browser, login_http, wait_for
from tests.test_sql_sandbox import MARKERS, digest, fill_lake, write_attempts
from tests.ui_fixtures import chromium

SLOW = "SELECT count(*) FROM range(1000000000000) a, range(1000) b"  # stopped after 10 s
NO_SHOW = ("nora@noshow.example", "Nora Noshow")
URL = "/api/analytics/sql"


@pytest.fixture
def app(flow_env: dict[str, str], data_dir: Path) -> Iterator[AppProcess]:
    fill_lake(data_dir)
    for name in ("ana", "ben", "cleo"):
        add_user(data_dir, name, "analyst")
    add_user(data_dir, "otto", "operator")
    a = AppProcess(flow_env, data_dir / "app.log").wait_ready()
    yield a
    a.stop()


def client(app: AppProcess, name: str) -> httpx.Client:
    c = httpx.Client(base_url=app.base_url, timeout=60)
    login_http(c, name)
    return c


def sql(c: httpx.Client, text: str) -> httpx.Response:
    return c.post(URL, json={"sql": text})


def test_analysts_read_pseudonyms_organisers_in_clear(app: AppProcess, data_dir: Path) -> None:
    org, ana, op = client(app, ORGANISER), client(app, "ana"), client(app, "otto")
    try:
        clear = sql(org, "SELECT email, name FROM no_shows")
        assert clear.status_code == 200, clear.text
        assert clear.json()["rows"] == [list(NO_SHOW)]

        masked = sql(ana, "SELECT email, name FROM no_shows")
        assert masked.status_code == 200, masked.text
        key = pseudonym_key(data_dir)  # made by the app at the first analyst query
        assert (data_dir / KEY_FILE).stat().st_mode & 0o777 == 0o600
        assert masked.json()["rows"] == [[pseudonym(key, v) for v in NO_SHOW]]

        every = sql(ana, "SELECT p.*, c.* FROM participants p LEFT JOIN checkins c "
                         "ON c.participant_id = p.id")  # fmt: skip
        logs = sql(ana, "SELECT * FROM request_logs")
        for r in (every, logs):
            assert r.status_code == 200, r.text
            for marker in MARKERS.values():
                assert marker not in r.text
        # Joins on pseudonyms still work, and give the organisers' count.
        join = (
            "SELECT count(*) AS n FROM participants p "
            "JOIN checkins c ON c.participant_name = p.name"
        )
        assert sql(ana, join).json()["rows"] == sql(org, join).json()["rows"] == [[1]]
        # Bad input and other roles.
        assert ana.post(URL, content=b"nope").status_code == 422
        refused = sql(ana, "COPY (SELECT 1) TO '/tmp/x.csv'")
        assert refused.status_code == 400 and "only read-only" in refused.json()["detail"]
        assert sql(op, "SELECT 1").status_code == 403
        assert httpx.post(app.base_url + URL, json={"sql": "SELECT 1"}).status_code == 401

        # Every write path through the real route, for both roles: refused or failed, and
        # not one byte of the lake changed (nor the key, nor anything added).
        before = digest(data_dir / "lake"), (data_dir / KEY_FILE).read_bytes()
        for text in write_attempts(data_dir):
            for c in (org, ana):
                r = sql(c, text)
                assert r.status_code in (400, 422), (text, r.status_code, r.text)
        assert (digest(data_dir / "lake"), (data_dir / KEY_FILE).read_bytes()) == before
    finally:
        for c in (org, ana, op):
            c.close()

    with chromium() as browser:
        ctx = browser.new_context()
        try:
            page = ctx.new_page()
            login_browser(page, app.base_url, "ana")
            page.goto(app.base_url + "/analytics")
            page.get_by_test_id("sql-input").locator(".cm-content").fill(
                "SELECT email FROM no_shows"
            )
            page.get_by_test_id("sql-run").click()
            expect(page.get_by_test_id("sql-result")).to_contain_text(
                pseudonym(key, NO_SHOW[0]), timeout=30_000
            )
            expect(page.get_by_test_id("sql-result")).not_to_contain_text("@")
        finally:
            ctx.close()


def test_one_query_per_session_and_a_global_cap(app: AppProcess) -> None:
    ana, ben, cleo = client(app, "ana"), client(app, "ben"), client(app, "cleo")
    answers: dict[str, httpx.Response] = {}

    def slow(name: str, c: httpx.Client) -> threading.Thread:
        twin = httpx.Client(base_url=app.base_url, cookies=c.cookies, timeout=60)  # same session

        def go() -> None:  # until it is admitted (the test's own probe may hold the slot)
            with twin:
                for _ in range(200):
                    answers[name] = sql(twin, SLOW)
                    if answers[name].status_code != 429:
                        return
                    time.sleep(0.05)

        t = threading.Thread(target=go)
        t.start()
        return t

    def busy_for(c: httpx.Client) -> str:
        """Wait until this session's own next query is refused as busy; the reason."""
        seen: list[httpx.Response] = []
        wait_for(lambda: seen.append(sql(c, "SELECT 1")) or seen[-1].status_code == 429, 30,
                 0.05, "the slow query to be in flight")  # fmt: skip
        assert seen[-1].headers.get("retry-after")
        return seen[-1].json()["detail"]

    try:
        ta = slow("ana", ana)
        assert "a query of yours is still running" in busy_for(ana)
        tb = slow("ben", ben)
        assert "a query of yours is still running" in busy_for(ben)
        full = sql(cleo, "SELECT 1")  # a third session: both slots are taken
        assert full.status_code == 429
        assert "2 queries are running" in full.json()["detail"]
        ta.join(60)
        tb.join(60)
        for name in ("ana", "ben"):  # the slow ones were stopped by the time limit
            assert answers[name].status_code == 422
            assert "longer than 10 s" in answers[name].json()["detail"]
        assert sql(cleo, "SELECT 42 AS x").json()["rows"] == [[42]]  # free again
    finally:
        for c in (ana, ben, cleo):
            c.close()

    # The page: the same tab runs again while its query runs, and is told why not.
    with chromium() as browser:
        ctx = browser.new_context()
        try:
            page = ctx.new_page()
            login_browser(page, app.base_url, "ana")
            page.goto(app.base_url + "/analytics")
            page.get_by_test_id("sql-input").locator(".cm-content").fill(SLOW)
            page.get_by_test_id("sql-run").click()
            expect(page.get_by_test_id("sql-info")).to_have_text("running…")
            page.get_by_test_id("sql-run").click()  # the same tab, again, while it runs
            expect(page.get_by_test_id("sql-error")).to_contain_text(
                "Busy: busy: a query of yours is still running", timeout=10_000
            )
            # The same session over HTTP is busy too (one query per session, page or API).
            r = page.request.post(app.base_url + URL, data={"sql": "SELECT 1"})
            assert r.status == 429, r.text()
        finally:
            ctx.close()


def test_get_logs_pseudonymises_personal_columns_for_analysts(
    app: AppProcess, data_dir: Path
) -> None:
    """`GET /logs` shows analysts the activity log with `request_logs`' personal columns as
    the same pseudonyms free SQL gives them; organisers read them in clear."""
    org, ana = client(app, ORGANISER), client(app, "ana")
    try:
        clear = org.get("/logs")
        assert clear.status_code == 200, clear.text
        assert MARKERS["ip"] in clear.text and MARKERS["user_agent"] in clear.text
        masked = ana.get("/logs")
        assert masked.status_code == 200, masked.text
        key = pseudonym_key(data_dir)
        row = next(i for i in masked.json()["items"] if i["ip"] == pseudonym(key, MARKERS["ip"]))
        assert row["user_agent"] == pseudonym(key, MARKERS["user_agent"])
        assert MARKERS["ip"] not in masked.text and MARKERS["user_agent"] not in masked.text
        # Filtering by a personal column would let a guess be checked: refused with the reason.
        refused = ana.get("/logs", params={"ip": MARKERS["ip"]})
        assert refused.status_code == 403 and "personal data" in refused.json()["detail"]
        assert org.get("/logs", params={"ip": MARKERS["ip"]}).json()["total"] >= 1
    finally:
        org.close()
        ana.close()
