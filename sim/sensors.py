"""Simulated venue sensors for `run.py demo`: every input path, every kind of event.

Sends realistic readings (gas, temperature, crowd noise, door contacts) and browser UI events
through all three inputs — sensors by `XADD events:in` (its shard `events:in:{k}` with
STREAM_SHARDS > 1; most) and `PUBLISH events:publish`
(at-most-once devices), browser `ui.click`/`ui.keydown` events by `POST /api/events` with an API
key, as a browser would — plus, rarely, an invalid message (to show the dead-letter path) and a
late reading from a sensor that was offline (to show late handling). For the alarm rules of
`venue.example.yaml` to fire now and then (but not constantly), gas-hall-a has a one-minute
leak every 5 minutes and temp-foyer drops off the network for 40 s every 7 minutes.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import redis

from core import keys
from core.records import event_stream_for
from core.redis_conn import connect
from core.settings import get_settings

log = logging.getLogger("venueflow.sim")

SENSORS = [
    ("gas-hall-a", "GAS", "ppm", 40, 120),
    ("gas-kitchen", "GAS", "ppm", 30, 100),
    ("temp-stage", "TEMP", "celsius", 22, 30),
    ("temp-foyer", "TEMP", "celsius", 20, 27),
    ("noise-main", "NOISE", "db", 70, 95),
]
LEAK_SOURCE, LEAK_EVERY_S, LEAK_S, LEAK_PPM = "gas-hall-a", 300, 60, 70.0
DROPOUT_SOURCE, DROPOUT_EVERY_S, DROPOUT_S = "temp-foyer", 420, 40
DOORS = ["door-north", "door-south", "door-vip"]
PAGES = ["/", "/events", "/attendance"]


def leak(source: str, t: float) -> float:
    """Extra ppm of the demo's gas leak: a one-minute bump (peak +70) every 5 minutes."""
    phase = t % LEAK_EVERY_S
    if source != LEAK_SOURCE or phase >= LEAK_S:
        return 0.0
    return LEAK_PPM * math.sin(math.pi * phase / LEAK_S)


def silent(source: str, t: float) -> bool:
    """The demo's flaky sensor is off the network for 40 s every 7 minutes."""
    return source == DROPOUT_SOURCE and t % DROPOUT_EVERY_S < DROPOUT_S


def reading(t: float, rng: random.Random) -> dict:
    source, typ, unit, base, warn = rng.choice([s for s in SENSORS if not silent(s[0], t)])
    value = base + (warn - base) * 0.6 * (1 + math.sin(t / 40 + hash(source) % 7)) / 2
    value += leak(source, t)
    value += rng.gauss(0, (warn - base) * 0.08)
    if rng.random() < 0.01:
        value = warn * 1.3  # a spike
    level = "INFO" if value < warn else ("ERROR" if value > warn * 1.2 else "WARN")
    return {"source": source, "type": typ, "level": level, "payload": {unit: round(value, 2)}}


def ui_event(rng: random.Random) -> dict:
    session = f"s{rng.randint(1, 40)}"
    if rng.random() < 0.6:
        payload = {
            "page": rng.choice(PAGES), "target": rng.choice(["#checkin", "#feed", "nav a"]),
            "x": rng.randint(0, 1400), "y": rng.randint(0, 900), "session": session,
        }  # fmt: skip
        return {"source": "browser", "type": "ui.click", "level": "INFO", "payload": payload}
    payload = {
        "page": rng.choice(PAGES),
        "key": rng.choice(["Enter", "Tab", "a", "7"]),
        "session": session,
    }
    return {"source": "browser", "type": "ui.keydown", "level": "INFO", "payload": payload}


def door_event(rng: random.Random) -> dict:
    forced = rng.random() < 0.05
    return {
        "source": rng.choice(DOORS),
        "type": "DOOR",
        "level": "CRITICAL" if forced else "INFO",
        "payload": {"state": "forced" if forced else rng.choice(["open", "closed"])},
    }


def post(url: str, api_key: str, ev: dict) -> None:
    req = urllib.request.Request(
        f"{url}/api/events",
        data=json.dumps(ev).encode(),
        headers={"Content-Type": "application/json", "X-API-Key": api_key},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=2) as resp:
        resp.read()


def wait_for_dashboard(url: str, stopping: Callable[[], bool], timeout: float = 120) -> None:
    """The dashboard starts alongside us; give it time before the first POST."""
    deadline = time.monotonic() + timeout
    while not stopping() and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers (503 while flows start is fine)
        except OSError:
            time.sleep(0.5)
    log.warning("dashboard at %s not reachable; browser events will fail until it is", url)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rate", type=float, default=20.0, help="events per second")
    ap.add_argument("--http", default=None, help="dashboard base URL for POST /api/events")
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--seconds", type=float, default=0, help="stop after this long (0: never)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s sim %(levelname)s %(message)s")
    r = connect(os.environ["REDIS_URL"])  # one server or a Redis Cluster
    streams = keys.event_write_streams(get_settings())  # the STREAM_SHARDS shards

    def stream_of(ev: dict) -> str:
        return event_stream_for(ev.get("source"), streams)

    rng = random.Random()
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    if args.http:
        wait_for_dashboard(args.http, lambda: stop)
    t0 = time.monotonic()
    sent = 0
    while not stop and (not args.seconds or time.monotonic() - t0 < args.seconds):
        roll = rng.random()
        ev = (
            ui_event(rng)
            if roll < 0.15
            else door_event(rng)
            if roll < 0.2
            else reading(time.time(), rng)
        )
        ev["ts"] = datetime.now(UTC).isoformat()
        try:
            if rng.random() < 0.003:
                bad = b'{"source": "gas-hall-a", "level": "LOUD"'  # cut off: a dead letter
                r.xadd(event_stream_for("gas-hall-a", streams), {"data": bad})
            elif rng.random() < 0.005:
                ev["ts"] = (datetime.now(UTC) - timedelta(minutes=3)).isoformat()  # offline sensor
                r.xadd(stream_of(ev), {"data": json.dumps(ev)})
            elif args.http and args.api_key and ev["type"].startswith("ui."):
                post(args.http, args.api_key, ev)
            elif rng.random() < 0.1:
                r.publish(keys.EVENTS_PUBLISH, json.dumps(ev))
            else:
                r.xadd(stream_of(ev), {"data": json.dumps(ev)})
            sent += 1
        except (redis.exceptions.RedisError, OSError) as exc:
            log.warning("send failed (%s); retrying", exc)
            time.sleep(1)
        if sent % 500 == 0:
            log.info("sent %d events", sent)
        time.sleep(rng.expovariate(args.rate))


if __name__ == "__main__":
    main()
