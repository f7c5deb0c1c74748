"""The one live-subscriber mechanism (`live.subscriber`) against a real redis-server: it
subscribes before it seeds, notices every lost connection (a stopped server, a killed client)
and then subscribes and seeds again, follows patterns and channels added while running, keeps
going past a message its model cannot apply, and throttles `changed`."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

import pytest
import redis
import redis.asyncio as aioredis

import live.subscriber as live_subscriber
from live.subscriber import (
    FIRE_SLICE,
    LiveSubscriber,
    emit_period,
    json_object,
    json_objects,
    minute_floor,
    parse_utc,
)
from tests.conftest import RedisServer

SEED_KEY = "test:live:seed"
CHANNEL = "test:live:a"


@dataclass
class Model:
    """A live model as the mechanism sees it: `connected`, `version`, and what it folded in."""

    connected: bool = False
    version: int = 0
    messages: list[tuple[str, str]] = field(default_factory=list)
    seeded: list[list[str]] = field(default_factory=list)

    def apply(self, channel: str, data: bytes) -> None:
        if data == b"boom":
            raise RuntimeError("a bug in a model")
        self.messages.append((channel, data.decode()))
        self.version += 1

    async def seed(self, r: aioredis.Redis) -> None:
        self.seeded.append([v.decode() for v in await r.lrange(SEED_KEY, 0, -1)])
        self.version += 1

    def heard(self, data: str) -> bool:
        return any(d == data for _, d in self.messages)


async def until(pred: Callable[[], object], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or pred}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def pub(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(redis_server.url)
    yield c
    await c.aclose()


async def started(sub: LiveSubscriber, url: str) -> LiveSubscriber:
    await sub.start(url)
    await until(lambda: sub.model.connected, what="the first subscription")
    return sub


async def test_subscribes_before_it_seeds(redis_server: RedisServer, pub: aioredis.Redis):
    """A message published while the seed is being read is not lost: the subscription is
    already there (here the seed itself publishes one, the worst moment)."""
    model = Model()

    async def seed(r: aioredis.Redis) -> None:
        await pub.publish(CHANNEL, "during-seed")
        await model.seed(r)

    sub = LiveSubscriber("t", model, model.apply, channels=[CHANNEL], seed=seed)
    try:
        await started(sub, redis_server.url)
        await until(lambda: model.heard("during-seed"), what="the message sent during the seed")
    finally:
        await sub.stop()


async def test_redis_restart_resubscribes_and_seeds_again(
    redis_server: RedisServer, pub: aioredis.Redis
):
    """Redis stops under a running subscriber: the model says so (`connected` False, a new
    version for the pages), and when Redis is back the subscription and the seed are made again
    without anyone's help: what changed in the seeded list is read, new messages arrive."""
    model = Model()
    sub = LiveSubscriber("t", model, model.apply, channels=[CHANNEL], seed=model.seed)
    try:
        await started(sub, redis_server.url)
        assert model.seeded == [[]]
        await pub.publish(CHANNEL, "before")
        await until(lambda: model.heard("before"))
        await pub.rpush(SEED_KEY, "written-unannounced")  # only a seed can show this
        await pub.aclose()

        v = model.version
        redis_server.stop()
        await until(lambda: not model.connected, what="the lost connection to show")
        assert model.version > v
        assert sub.redis is None
        redis_server.start()  # same port, AOF: the list is still there
        await until(lambda: model.connected, 30, "the subscriber to reconnect")
        assert model.seeded[-1] == ["written-unannounced"]
        assert sub.redis is not None

        again = aioredis.Redis.from_url(redis_server.url)
        await again.publish(CHANNEL, "after")
        await until(lambda: model.heard("after"), what="a message after the restart")
        await again.aclose()
    finally:
        await sub.stop()


async def test_a_killed_connection_is_noticed_and_seeded_again(
    redis_server: RedisServer, pub: aioredis.Redis
):
    """The server stays up but drops the subscriber's connection (CLIENT KILL, as a proxy or
    `timeout` would). The loss must reach the mechanism, which reconnects and seeds again; with
    redis-py retries on, redis-py resubscribes on its own, silently, and the model never reads
    what it missed (measured: this test fails with `Retry(NoBackoff(), 3)`)."""
    model = Model()
    sub = LiveSubscriber("t", model, model.apply, channels=[CHANNEL], seed=model.seed)
    try:
        await started(sub, redis_server.url)
        await pub.rpush(SEED_KEY, "missed-while-down")
        killed = await pub.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        assert killed >= 1
        await until(lambda: len(model.seeded) >= 2, what="a second seed")
        assert model.seeded[-1] == ["missed-while-down"]
        await until(lambda: model.connected)
        await pub.publish(CHANNEL, "later")
        await until(lambda: model.heard("later"))
    finally:
        await sub.stop()


async def test_patterns_and_channels_added_while_running_survive_a_restart(
    redis_server: RedisServer, pub: aioredis.Redis
):
    """A pattern delivers each message with the channel it came on; a channel added while
    running (a camera someone started to watch) is listened to at once, and again after a
    reconnect; a removed one is not listened to any more."""
    model = Model()
    sub = LiveSubscriber("t", model, model.apply, patterns=["test:verdict:*"])
    try:
        await started(sub, redis_server.url)
        await pub.publish("test:verdict:main", "v1")
        await until(lambda: ("test:verdict:main", "v1") in model.messages)

        await sub.add_channel("test:cam:1")
        await sub.add_channel("test:cam:2")
        assert sub.subscribed_to("test:cam:1")
        await pub.publish("test:cam:1", "f1")
        await until(lambda: ("test:cam:1", "f1") in model.messages)
        await sub.remove_channel("test:cam:2")
        assert not sub.subscribed_to("test:cam:2")

        await pub.aclose()
        redis_server.stop()
        await until(lambda: not model.connected)
        redis_server.start()
        await until(lambda: model.connected, 30, "the subscriber to reconnect")
        c = redis.Redis.from_url(redis_server.url)
        try:
            channels = {ch.decode() for ch in c.pubsub_channels()}
            assert channels == {"test:cam:1"}, channels
            assert c.pubsub_numpat() == 1
            c.publish("test:cam:2", "not-listened")
            c.publish("test:cam:1", "f2")
            c.publish("test:verdict:side", "v2")
        finally:
            c.close()
        await until(lambda: model.heard("f2") and model.heard("v2"), what="messages after it")
        assert not model.heard("not-listened")
    finally:
        await sub.stop()


async def test_a_message_the_model_cannot_apply_does_not_end_the_subscription(
    redis_server: RedisServer, pub: aioredis.Redis
):
    model = Model()
    sub = LiveSubscriber("t", model, model.apply, channels=[CHANNEL], seed=model.seed)
    try:
        await started(sub, redis_server.url)
        await pub.publish(CHANNEL, "boom")
        await pub.publish(CHANNEL, "next")
        await until(lambda: model.heard("next"))
        assert model.connected and len(model.seeded) == 1  # no reconnect, no second seed
    finally:
        await sub.stop()


async def test_a_lone_change_is_emitted_without_waiting_for_the_throttle(
    redis_server: RedisServer,
):
    """After a quiet spell a change is emitted at once (leading edge), not at the end of a
    throttle period. The period here is 2 s (max_hz 0.5) so that "at once" is told apart from
    "at the next poll" with a wide margin even on a loaded machine: each of three lone changes
    must be emitted within half a period (a poller would manage that one time in eight)."""
    model = Model()
    sub = LiveSubscriber("t", model, model.apply, channels=[CHANNEL], max_hz=0.5)
    fired: list[tuple[float, int]] = []
    sub.changed.subscribe(lambda: fired.append((time.monotonic(), model.version)))
    delays = []
    try:
        await started(sub, redis_server.url)
        for _ in range(3):
            await asyncio.sleep(2.2)  # quiet for more than a period
            t0 = time.monotonic()
            model.version += 1
            sub.poke()
            v = model.version
            await until(lambda v=v: any(fv == v for _, fv in fired), 10, "the change's emit")
            delays.append(next(t for t, fv in fired if fv == v) - t0)
    finally:
        await sub.stop()
    assert max(delays) < 1.0, delays


async def test_a_burst_of_changes_is_emitted_at_most_max_hz(redis_server: RedisServer):
    """100 changes over about a second reach the pages a few times, never once per change."""
    model = Model()
    sub = LiveSubscriber("t", model, model.apply, channels=[CHANNEL], max_hz=4.0)
    fired: list[float] = []
    sub.changed.subscribe(lambda: fired.append(time.monotonic()))
    try:
        await started(sub, redis_server.url)
        n = len(fired)
        for _ in range(100):
            model.version += 1
            sub.poke()
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        burst = len(fired) - n
    finally:
        await sub.stop()
    assert 2 <= burst <= 7, burst  # ~1.3 s at <= 4 Hz, plus the leading emit


def test_the_emit_period_keeps_page_refreshes_within_the_budget():
    """Few pages: `max_hz`; more pages than budget / `max_hz`: one firing every
    pages / budget seconds, so the refreshes a second stay within the budget."""
    assert emit_period(4.0, 10, 1000) == 0.25
    assert emit_period(4.0, 250, 1000) == 0.25
    assert emit_period(4.0, 1000, 1000) == 1.0
    assert emit_period(4.0, 3000, 1000) == 3.0
    with pytest.raises(ValueError):
        live_subscriber.set_page_update_budget(0)


async def test_many_pages_are_refreshed_less_often(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
):
    """With 400 pages subscribed and a budget of 400 refreshes a second, a model that changes
    all the time fires about once a second instead of four times: over 3 s of changes each page
    is refreshed 2-5 times (leading edge plus one a second), not 12."""
    monkeypatch.setattr(live_subscriber, "PAGE_UPDATES_PER_S", 400.0)
    model = Model()
    sub = LiveSubscriber("t", model, model.apply, channels=[CHANNEL], max_hz=4.0)
    counts = [0] * 400
    for i in range(400):
        sub.changed.subscribe(lambda i=i: counts.__setitem__(i, counts[i] + 1))
    try:
        await started(sub, redis_server.url)
        await asyncio.sleep(1.2)  # the first subscription's firing is behind us
        base = list(counts)
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            model.version += 1
            sub.poke()
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
    finally:
        await sub.stop()
    refreshed = {c - b for c, b in zip(counts, base, strict=True)}
    assert len(refreshed) == 1, refreshed  # every page as often as the others
    assert 2 <= refreshed.pop() <= 5


async def test_a_firing_yields_between_slices_and_skips_pages_gone_meanwhile(
    redis_server: RedisServer,
):
    """One firing to 500 pages runs them in slices with the event loop free in between (a
    task ticking on the loop moves between slices), and a page unsubscribed during the firing
    (its client went) is not refreshed after that."""
    model = Model()
    sub = LiveSubscriber("t", model, model.apply, channels=[CHANNEL], max_hz=4.0)
    ticks = 0
    seen: dict[int, int] = {}

    def late(i: int = 499) -> None:
        seen[i] = ticks

    def page(i: int) -> None:
        seen[i] = ticks
        if i == 10:
            sub.changed.unsubscribe(late)  # page 499 goes while the firing is on its way

    for i in range(499):
        sub.changed.subscribe(lambda i=i: page(i))
    sub.changed.subscribe(late)

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    try:
        await sub._fire()
    finally:
        task.cancel()
    assert sorted(seen) == list(range(499))  # all but the page that went
    slices = [seen[i] for i in range(0, 499, FIRE_SLICE)]
    assert len(set(slices)) == len(slices), slices  # the loop ran between every two slices
    assert all(seen[i] == seen[i - i % FIRE_SLICE] for i in range(499))  # not within one


def test_time_and_json_helpers():
    """The one minute floor and timestamp parser every live model uses."""
    cet = timezone(timedelta(hours=1))
    assert parse_utc("2026-05-01T10:20:30.5+01:00") == datetime(2026, 5, 1, 9, 20, 30, 500000, UTC)
    assert parse_utc("2026-05-01T10:20:30") == datetime(2026, 5, 1, 10, 20, 30, tzinfo=UTC)
    assert parse_utc(datetime(2026, 5, 1, 10, 0, tzinfo=cet)) == datetime(
        2026, 5, 1, 9, 0, tzinfo=UTC
    )
    assert parse_utc(datetime(2026, 5, 1, 10, 0)) == datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
    for bad in (None, "", "yesterday", 0):
        assert parse_utc(bad) is None
    ts = datetime(2026, 5, 1, 10, 20, 30, 999, UTC)
    assert minute_floor(ts) == datetime(2026, 5, 1, 10, 20, tzinfo=UTC)
    assert json_object("c", b'{"a": 1}') == {"a": 1}
    assert json_object("c", b"[1]") is None and json_object("c", b"{no") is None
    assert json_objects([b'{"a": 1}', b"x", b"2", json.dumps({"b": 2})]) == [{"a": 1}, {"b": 2}]
