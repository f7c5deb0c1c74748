"""Erasure: `run.py participants erase ID` leaves no byte of the person's name or e-mail in any
file under DATA_DIR (lake data, Delta log and checkpoints, recovery stores, logs, catalog) nor
in any Redis key, keeps everyone else's, and records who erased which id when."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import redis

from storage.erasure import ERASED, needles_of
from tests.conftest import wait_for
from tests.participants_helpers import Stack

NAME, EMAIL = "Zelda Quixote-Ångström", "zelda.q@example.org"
OTHER = "Otto Keeper"


@pytest.fixture
def stack(tmp_path: Path):
    s = Stack(tmp_path, app=False)
    yield s
    s.close()


def files_holding(root: Path, needles: list[bytes]) -> list[str]:
    out = []
    for d, _, files in os.walk(root):
        for f in files:
            p = Path(d) / f
            data = p.read_bytes()
            if any(n in data for n in needles):
                out.append(str(p.relative_to(root)))
    return out


def redis_keys_holding(r: redis.Redis, needles: list[bytes]) -> list[str]:
    out = []
    for key in r.scan_iter(count=500):
        kind = r.type(key)
        if kind == b"stream":
            vals = [v for _, f in r.xrange(key) for v in f.values()]
        elif kind == b"string":
            vals = [r.get(key)]
        elif kind == b"hash":
            vals = list(r.hgetall(key).values()) + list(r.hkeys(key))
        elif kind == b"list":
            vals = r.lrange(key, 0, -1)
        elif kind in (b"set", b"zset"):
            vals = list(r.smembers(key)) if kind == b"set" else r.zrange(key, 0, -1)
        else:
            vals = []
        if any(n in (v or b"") for v in vals for n in needles) or any(n in key for n in needles):
            out.append(key.decode())
    return out


def test_erase_leaves_no_byte_of_the_person_anywhere(stack: Stack) -> None:
    csv = stack.data.parent / "people.csv"  # the organiser's file, not ours to erase
    csv.write_text(f"id,name,email,phone\nZQ1,{NAME},{EMAIL},555-0101\nOK1,{OTHER},,\n")
    out = stack.run_py("participants", "import", str(csv), "-q")
    assert out.returncode == 0, out.stderr
    assert stack.scan(stack.token("ZQ1"))["status"] == "accepted"
    assert stack.scan(stack.token("OK1"))["status"] == "accepted"
    wait_for(
        lambda: len(stack.query("SELECT * FROM checkins WHERE participant_id = 'ZQ1'")) == 1,
        60,
        0.5,
        "the check-in in the lake",
    )
    needles = [*needles_of({NAME, EMAIL}), b"555-0101"]
    assert files_holding(stack.data / "lake", needles), "the test must see the name first"
    assert redis_keys_holding(stack.r, needles)

    out = stack.run_py("participants", "erase", "ZQ1", "--by", "olga")
    assert out.returncode == 0, out.stderr + out.stdout
    assert "personal data erased" in out.stdout

    assert files_holding(stack.data, needles) == []
    assert redis_keys_holding(stack.r, needles) == []
    # Everyone else is untouched, and the erased person is revoked with no name.
    assert files_holding(stack.data / "lake", [OTHER.encode()])
    (p,) = stack.query("SELECT name, email, status FROM participants WHERE id = 'ZQ1'")
    assert p == {"name": ERASED, "email": None, "status": "revoked"}
    (c,) = stack.query("SELECT participant_name FROM checkins WHERE participant_id = 'ZQ1'")
    assert c["participant_name"] == ERASED
    (e,) = stack.query('SELECT participant_id, "by", rows FROM erasures')
    assert (e["participant_id"], e["by"]) == ("ZQ1", "olga")
    assert json.loads(e["rows"])["checkins"] == 1
    # The flow keeps working: a new participant's check-in still reaches the lake.
    assert stack.run_py("participants", "erase", "nobody").returncode == 1
    assert stack.scan(stack.token("OK1"), gate="side")["status"] != "error"
