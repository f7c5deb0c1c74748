"""The bench harness's arithmetic, and the ingest floor's validation against the contract.

Benchmarks run by hand (`uv run python -m bench.<name>`); these checks only make sure the
figures they print are computed right and that the floor refuses exactly what `Event` refuses
(the floor is only a fair floor if it does the same job).
"""

from __future__ import annotations

import json
import math
import random
import re
import time

import orjson
import pytest
from pydantic import ValidationError

from bench.harness import pct, quantile, rows, slope
from bench.http import parse_wrk
from bench.ingest import INVALID, floor_check, make_event
from core.records import ID_PATTERN, Event

ID_MATCH = re.compile(ID_PATTERN).match


def test_percentiles_and_slope() -> None:
    vals = list(range(1, 101))
    assert pct(vals, 50) == 50
    assert pct(vals, 99) == 99
    assert pct(vals, 100) == 100
    assert pct(vals, 0) == 1
    assert quantile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert math.isnan(quantile([], 0.5))
    assert slope([(0, 10.0), (1, 12.0), (2, 14.0)]) == pytest.approx(2.0)
    assert slope([(1, 5.0)]) == 0.0
    assert rows("\na  first row\nbb second\n") == (("first row", "a"), ("second", "bb"))


def _ours_accepts(data: bytes) -> bool:
    try:
        Event.model_validate_json(data)
        return True
    except ValidationError:
        return False


def _floor_accepts(data: bytes) -> bool:
    try:
        ev = orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return not isinstance(floor_check(ev, ID_MATCH, time.time_ns() // 1000), str)


EDGE = [
    {"source": "s-1", "type": "t", "level": "INFO"},
    {"source": "-bad", "type": "t", "level": "INFO"},
    {"source": "s" * 65, "type": "t", "level": "INFO"},
    {"source": "s", "type": "a b", "level": "INFO"},
    {"source": "s", "type": "t" * 65, "level": "INFO"},
    {"source": "s", "type": "t", "level": "info"},
    {"source": "s", "type": "t", "level": "INFO", "extra": 1},
    {"source": "s", "type": "t", "level": "INFO", "payload": []},
    {"source": "s", "type": "t", "level": "INFO", "payload": {"a": [1, 2.5, {"b": None}]}},
    {"source": "s", "type": "t", "level": "INFO", "ts": "2026-01-01T00:00:00Z"},
    {"source": "s", "type": "t", "level": "INFO", "ts": "2026-01-01T00:00:00"},
    {"source": "s", "type": "t", "level": "INFO", "ts": "yesterday"},
    {"source": "s", "type": "t", "level": "INFO", "ts": "2999-01-01T00:00:00+00:00"},
    {"source": "s", "type": "ui.keydown", "level": "INFO"},
    {"source": "s", "type": "ui.keydown", "level": "INFO",
     "payload": {"page": "/", "key": "a", "session": "x"}},
    {"source": "s", "type": "ui.keydown", "level": "INFO",
     "payload": {"page": "/", "key": "a", "session": "x", "more": 1}},
    {"source": "s", "type": "ui.click", "level": "INFO",
     "payload": {"page": "/", "target": "b", "x": 1, "y": -1, "session": "x"}},
    {"source": "s", "type": "ui.click", "level": "INFO",
     "payload": {"page": "/", "target": "b", "x": "5", "y": True, "session": "x"}},
    {"source": "s", "type": "t", "level": "INFO", "payload": None},
    {"source": "s", "type": "t", "level": "INFO", "ts": 1700000000},
    {"source": "s", "type": "t", "level": "INFO", "ts": "1700000000"},
    {"source": "s", "type": "t", "level": "INFO", "ts": 1700000000123},
    {"source": "s", "type": "t", "level": "INFO", "ts": 99999999999999},
    {"source": "s", "type": "t", "level": "INFO", "ts": "2026-01-01"},
    {"source": "s", "type": "t", "level": "INFO", "ts": None},
    {"source": "s", "type": "t", "level": "INFO", "ts": True},
    [1, 2],
]  # fmt: skip


def test_the_ingest_floor_refuses_what_the_event_model_refuses() -> None:
    rng = random.Random(5)
    docs = [make_event(rng, time.time()) for _ in range(3000)]
    docs += list(INVALID) + [json.dumps(e).encode() for e in EDGE]
    docs += [b'{"source":"s","type":"t","level":"INFO","payload":{"x":NaN}}', b"not json"]
    disagree = [d for d in docs if _ours_accepts(d) != _floor_accepts(d)]
    assert not disagree, disagree[:5]
    assert sum(map(_floor_accepts, docs)) >= 3000  # the realistic events all pass


def test_a_refused_event_gets_a_named_reason() -> None:
    now = time.time_ns() // 1000
    assert floor_check({"type": "t", "level": "INFO"}, ID_MATCH, now).startswith("source:")
    assert floor_check({"source": "s", "type": "t"}, ID_MATCH, now).startswith("level:")
    bad_ts = {"source": "s", "type": "t", "level": "INFO", "ts": "x"}
    assert floor_check(bad_ts, ID_MATCH, now).startswith("ts:")


WRK = """Running 5s test @ http://127.0.0.1:1/api/events
  2 threads and 20 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    37.40ms   50.11ms 353.20ms   88.00%
    Req/Sec   625.12    100.00     0.90k    70.00%
  Latency Distribution
     50%   20.00ms
     75%   40.00ms
     90%   90.00ms
     99%  287.60ms
  6264 requests in 5.03s, 1.20MB read
  Non-2xx or 3xx responses: 3
Requests/sec:   1244.35
Transfer/sec:    244.00KB
"""


def test_wrk_output_is_read() -> None:
    x = parse_wrk(WRK)
    assert x["requests"] == 6264 and x["non2xx"] == 3
    assert x["avg_ms"] == pytest.approx(37.4) and x["p99_ms"] == pytest.approx(287.6)
    assert x["max_ms"] == pytest.approx(353.2) and x["rps"] == pytest.approx(1244.35)
