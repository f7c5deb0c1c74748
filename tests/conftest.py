"""Fixtures over real components: a fresh redis-server per test, real Bytewax flow processes,
the real app, and one headless Chromium per test module.

The components themselves live in `tests/support.py` (re-exported here, so
`from tests.conftest import AppProcess` keeps working); the browser in `tests/ui_fixtures.py`.

Parallel runs (pytest-xdist, pyproject's `addopts`): every fixture here starts its own
processes on free ports with its own tmp dirs, so tests on different workers share nothing.
`--dist loadfile` keeps each module on one worker, so a module-scoped stack or browser is
built once, not once per worker.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from playwright.sync_api import Browser, Page
from redis.cluster import RedisCluster

from core.redis_conn import connect
from sim.redis_cluster import LocalRedisCluster
from tests.support import (
    API_KEY,
    ORGANISER,
    PASSWORD,
    AppProcess,
    FlowProcess,
    RedisServer,
    _pings,
    add_user,
    free_port,
    login_browser,
    login_http,
    wait_for,
)
from tests.ui_fixtures import VIEWPORT, chromium

__all__ = [
    "API_KEY",
    "ORGANISER",
    "PASSWORD",
    "AppProcess",
    "FlowProcess",
    "RedisServer",
    "_pings",
    "add_user",
    "free_port",
    "login_browser",
    "login_http",
    "wait_for",
]


#: The slowest modules, slowest first (`pytest -n0 --durations=80` on main, 2026-12-04): they
#: start first, so under `--dist loadfile` no worker begins a long module when the others are
#: nearly done. Every other module keeps its place after these. Order only: tests share nothing.
SLOW_FIRST = (
    "test_notify_delivery.py",
    "test_run_py.py",
    "test_events_flow.py",
    "test_participants.py",
    "test_auth_matrix.py",
    "test_lake.py",
    "test_video_flow.py",
    "test_video_demo.py",
    "test_auth.py",
    "test_redis_namespace.py",
    "test_report.py",
    "test_sql_sandbox.py",
    "test_file_modes.py",
    "test_http_api.py",
    "test_gate_sim.py",
    "test_erasure.py",
    "test_rooms_browser.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FIRST)))  # stable sort


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    srv = RedisServer(tmp_path / "redis")
    srv.start()
    yield srv
    srv.kill()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
def flow_env(redis_url: str, data_dir: Path) -> dict[str, str]:
    """Settings for child processes, tuned so windows and lake files appear within seconds."""
    return {
        "REDIS_URL": redis_url,
        "DATA_DIR": str(data_dir),
        "API_KEYS": API_KEY,
        "WINDOW_S": "2",
        "ALLOWED_LATENESS_S": "1",
        "SNAPSHOT_INTERVAL_S": "1",
        "LAKE_FLUSH_AGE_S": "0",
        "HEALTH_FLOWS": "events",  # /health: the tests run the flows they need, not all
    }


@pytest.fixture
def events_flow(flow_env: dict[str, str], data_dir: Path) -> Iterator[FlowProcess]:
    """The events flow, started; killed at teardown if still running."""
    fp = FlowProcess("events", flow_env, data_dir / "events-flow.log").start()
    yield fp
    if fp.alive():
        fp.kill()


@pytest.fixture
def app_process(flow_env: dict[str, str], data_dir: Path) -> Iterator[AppProcess]:
    app = AppProcess(flow_env, data_dir / "app.log").wait_ready()
    yield app
    app.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's headless Chromium, one per test module (a module needing other flags, e.g. a
    fake camera, overrides this fixture with `chromium(*flags)`)."""
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A page in a fresh browser context (own cookies: own login), closed after the test."""
    ctx = browser.new_context(viewport=VIEWPORT)
    try:
        yield ctx.new_page()
    finally:
        ctx.close()


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisCluster]:
    """A real 3-master Redis Cluster on loopback (Debian's redis-server, `sim.redis_cluster`),
    one per test module; its URL is `redis_cluster.url` (`redis+cluster://…`)."""
    cluster = LocalRedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def rc(redis_cluster: LocalRedisCluster) -> Iterator[RedisCluster]:
    """A client of the module's cluster, emptied first (FLUSHALL on every master)."""
    c = connect(redis_cluster.url, socket_timeout=10)
    c.flushall()
    yield c
    c.close()
