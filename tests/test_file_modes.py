"""Issue 10 item 12: what Venueflow writes under DATA_DIR is not readable by other local users.

`run.py up` (embedded Redis, every flow, the dashboard) runs for real; after a login, an
event in the lake, a user and an API key, every path under DATA_DIR is stat-ed.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx

from core.tokens import PUBLIC_NAME
from ops.processes import PROJECT_DIR
from tests.conftest import PASSWORD, wait_for
from tests.test_run_py import RunPy
from tests.ui_fixtures import ROLE_USERS

SECRETS = ("users.json", "api_keys.json", "storage_secret")


def modes(root: Path) -> dict[str, int]:
    return {
        str(p.relative_to(root)) or ".": stat.S_IMODE(p.lstat().st_mode)
        for p in [root, *root.rglob("*")]
        if not p.is_symlink()
    }


def _run_py(data: Path, *args: str, stdin: str | None = None, **env: str) -> str:
    e = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    e.update(DATA_DIR=str(data), **env)
    done = subprocess.run(
        [sys.executable, "run.py", *args], cwd=PROJECT_DIR, env=e, input=stdin,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_run_py_up_creates_nothing_others_can_read(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)  # a DATA_DIR made by hand (or an older version): tightened
    data.chmod(0o755)
    _run_py(data, "users", "add", "organiser", "--role", "organiser", "--password-stdin",
            stdin=PASSWORD)  # fmt: skip
    key = _run_py(data, "keys", "add", "sensor", "--kind", "device").strip()
    up = RunPy(tmp_path, ["up"], API_KEYS="k1")
    try:

        def healthy() -> bool:
            assert up.proc.poll() is None, up.output()
            try:
                return httpx.get(f"{up.base}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 120, 0.25, "run.py up to be healthy")
        ev = {"source": "modes", "type": "GAS", "level": "WARN", "payload": {"ppm": 1}}
        res = httpx.post(f"{up.base}/api/events", json=ev, headers={"X-API-Key": key})
        assert res.status_code == 202, res.text
        with httpx.Client(base_url=up.base) as c:
            login = {"username": ROLE_USERS["organiser"], "password": PASSWORD}
            assert c.post("/api/auth/login", json=login).status_code == 200
            assert c.get("/events").status_code == 200
        count = "select count(*) as n from events where source = 'modes'"
        wait_for(lambda: up.query(count) == [{"n": 1}], 60, 0.5, "the event in the lake")
    finally:
        up.stop_cleanly()
    got = modes(data)
    lake_files = [p for p in got if p.startswith("lake/") and p.endswith(".parquet")]
    assert lake_files and "venue.duckdb" in got and "users.json" in got, sorted(got)
    assert any(p.startswith("redis/") for p in got) and any(p.startswith("logs/") for p in got)
    # Nothing for group or others (the tokens' public key is public by design: 0644, but in
    # a DATA_DIR that others cannot enter).
    loose = {p: oct(m) for p, m in got.items() if m & 0o077 and p != f"keys/{PUBLIC_NAME}"}
    assert not loose, loose
    assert got["."] == 0o700
    assert all(got[name] == 0o600 for name in got if name.endswith(SECRETS)), got


def test_data_umask_027_shares_the_lake_with_a_group_but_never_the_secrets(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    _run_py(data, "users", "add", "organiser", "--role", "organiser", "--password-stdin",
            stdin=PASSWORD, DATA_UMASK="027")  # fmt: skip
    _run_py(data, "keys", "add", "sensor", "--kind", "device", DATA_UMASK="027")
    _run_py(data, "catalog", DATA_UMASK="027")
    got = modes(data)
    assert got["venue.duckdb"] == 0o640  # analysts in the folder's group read the catalog
    assert got["users.json"] == 0o600 and got["api_keys.json"] == 0o600
    assert all(m & 0o007 == 0 for m in got.values()), got  # never anything for others
