"""The one mechanism behind every live model of the dashboard (`live.events` events,
`live.attendance`, `live.alarms`, `live.video_hub`): a Redis subscriber that folds messages
into an in-memory model, and a throttled emitter that tells the pages the model moved.

Why this shape (measured while choosing NiceGUI): one push to the browsers per event collapsed
the server at 1k events/s with one client and at 100 events/s with ten; batched at 4 Hz, ten
clients took 1k events/s at 20 % server CPU (about 1.5 ms of server CPU per client per push for
a page with a chart, a 50-row feed and labels). So each model has ONE subscriber task for all
clients, and ONE emitter task fires its `changed` event at most `MAX_HZ` times a second. Pages
subscribe to `changed` and read the model; NiceGUI unsubscribes them when their client goes.

A live model declares what it listens to and how a message changes it:

    subscriber = LiveSubscriber("alarms", model, apply, channels=[keys.LIVE_ALARMS], seed=seed)

- `channels` / `patterns`: names from `core.keys` (namespaced there, never built here);
  `add_channel` / `remove_channel` change the set while running (the video hub's cameras).
- `apply(channel, data)`: fold one message in (for a pattern, `channel` is the one it came on).
  A message that raises is logged and skipped, never the end of the subscription.
- `seed(redis)`: optional, read the present from a hash/list/string after EVERY (re)subscribe.
  Subscribing comes first, so nothing published while the seed is read falls in between;
  what the seed and the first messages both hold, the model drops (by id or by progress).

The subscriber owns the rest: connecting, subscribing, seeding, the model's `connected` flag,
and on any Redis failure a log line, a back-off (0.5 s doubling to 10 s) and a new connection
that subscribes and seeds again. redis-py's retries stay off for this connection (`retry=0`,
what `from_url` gives anyway, made explicit): with retries, redis-py reconnects a dropped
subscription and resubscribes on its own, silently, and the model misses what was published in
between without a seed to catch up (tests/test_live_subscriber.py kills the connection).

The emitter fires `changed` when the model's `version` moved: at once after a quiet spell
(leading edge, so a lone new alarm is not held back by the throttle), then at most `MAX_HZ`
times a second, and once a second anyway so ages on pages keep ticking. A change made outside a
message (a background re-read) is picked up within 1/`MAX_HZ` s.

Many open pages: one firing refreshes every subscribed page, and each refresh costs CPU and a
socket message (profiled: docs/operating.md, Many users on one replica). So one model
refreshes at most `LIVE_PAGE_UPDATES_PER_S` pages a second in one process
(`set_page_update_budget`): with more pages open than budget / `MAX_HZ`, every page is
refreshed less often (1,000 pages and the default 1,000 a second: once a second) instead
of the process falling behind for all of them — NiceGUI closes a socket whose pings go
unanswered (2 s), and gates' HTTP calls wait behind the re-rendering. And a firing runs the
pages' refreshes in slices of `FIRE_SLICE`, yielding to the event loop between slices, so
pings, HTTP requests and the socket writes of earlier pages go on while a thousand pages are
refreshed, not after.

Also here: the small helpers the models share to read messages and stored values
(`json_object`, `json_objects`) and times (`minute_floor`, `parse_utc`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis
from nicegui import Event, background_tasks, helpers
from nicegui import app as nicegui_app
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from core.redis_conn import connect_async
from live.background import BackgroundTasks

log = logging.getLogger(__name__)

MAX_HZ = 4.0
TICK_S = 1.0  # `changed` fires at least this often (ages, load bars)
PAGE_UPDATES_PER_S = 1000.0  # per model and process: `LIVE_PAGE_UPDATES_PER_S` (settings)
FIRE_SLICE = 50  # page refreshes between two yields to the event loop
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 10.0
READ_TIMEOUT_S = 1.0  # a read returns this often when idle: health checks (PING) run between


def minute_floor(ts: datetime) -> datetime:
    """The minute `ts` falls in (seconds and microseconds cut, time zone kept)."""
    return ts.replace(second=0, microsecond=0)


def parse_utc(value: Any) -> datetime | None:
    """An ISO-8601 text (or a datetime) as an aware UTC datetime; a naive one is taken as UTC.
    None for anything that is not a time (an empty or missing field, a bad string)."""
    if isinstance(value, datetime):
        ts = value
    else:
        try:
            ts = datetime.fromisoformat(str(value))
        except ValueError:
            return None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def json_object(channel: str, data: bytes | str) -> dict[str, Any] | None:
    """A message's JSON object; None (and a log line) if it is not JSON or not an object."""
    try:
        doc = orjson.loads(data)  # a 12 KB live:events message: 136 µs, json.loads 258 µs
    except ValueError:
        log.warning("%s: message is not JSON; ignored", channel)
        return None
    if not isinstance(doc, dict):
        log.warning("%s: message is not a JSON object; ignored", channel)
        return None
    return doc


def json_objects(values: Iterable[bytes | str]) -> list[dict[str, Any]]:
    """The JSON objects among stored values (a seed), in order; anything else is skipped."""
    out = []
    for v in values:
        with contextlib.suppress(ValueError):
            doc = orjson.loads(v)
            if isinstance(doc, dict):
                out.append(doc)
    return out


async def _pubsub(r: Any) -> aioredis.client.PubSub:
    """A PubSub on `r`. In a Redis Cluster it is one connection to the node serving the first
    channel's slot: classic pub/sub is cluster-wide, so that node hears every PUBLISH (made on
    any node), and PSUBSCRIBE patterns work there too (tests/test_redis_cluster.py). The
    cluster client learns its slots first (its `pubsub()` needs them: a KeyError otherwise,
    measured with redis-py 8.1)."""
    if isinstance(r, AsyncRedisCluster):
        await r.initialize()
    return r.pubsub(ignore_subscribe_messages=True)


def set_page_update_budget(per_s: float) -> None:
    """How many page refreshes one live model may make a second in this process (> 0)."""
    global PAGE_UPDATES_PER_S
    if per_s <= 0:
        raise ValueError("the page update budget must be > 0")
    PAGE_UPDATES_PER_S = float(per_s)


def emit_period(max_hz: float, pages: int, budget: float) -> float:
    """Seconds between two firings of a model with `pages` refreshes subscribed: 1/`max_hz`,
    or longer so that `pages` refreshes a firing stay within `budget` a second."""
    return max(1 / max_hz, pages / budget)


class LiveModel(Protocol):
    """What the subscriber needs of a model: it sets `connected`, and watches `version` (every
    change to what a page shows adds one)."""

    connected: bool
    version: int


Apply = Callable[[str, bytes], None]
Seed = Callable[[aioredis.Redis], Awaitable[None]]
Tick = Callable[[], Awaitable[None]]


class LiveSubscriber:
    """One model's Redis subscription, seed and throttled `changed` event (see the module)."""

    def __init__(
        self,
        name: str,
        model: LiveModel,
        apply: Apply,
        *,
        channels: Iterable[str] = (),
        patterns: Iterable[str] = (),
        seed: Seed | None = None,
        on_tick: Tick | None = None,
        max_hz: float = MAX_HZ,
    ) -> None:
        """`name` starts every log line; `on_tick` runs in the emitter every 1/`max_hz` s."""
        self.name = name
        self.model = model
        self._apply, self._seed, self._on_tick = apply, seed, on_tick
        self._channels = set(channels)
        self._patterns = tuple(patterns)
        self.max_hz = max_hz
        #: Fired (without arguments) when the model moved, throttled; read the model then.
        self.changed: Event[[]] = Event()
        #: The connection the subscription was made on, while it is up (for re-reads).
        self.redis: aioredis.Redis | None = None
        self.url = ""
        self._ps: aioredis.client.PubSub | None = None
        self._wake = asyncio.Event()
        self._tasks = BackgroundTasks()

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._tasks.running

    async def start(self, url: str) -> None:
        """Start the subscriber and the emitter (from `app.on_startup`); once only."""
        if self.running:
            return
        self.url = url
        self._wake = asyncio.Event()  # on the running loop
        self._tasks.spawn(self._subscribe_forever(), f"{self.name}-subscriber")
        self._tasks.spawn(self._emit_forever(), f"{self.name}-emitter")

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        """Run another task for as long as the subscriber runs (cancelled by `stop`)."""
        self._tasks.spawn(coro, name)

    async def stop(self) -> None:
        await self._tasks.cancel_all()

    def poke(self) -> None:
        """The model moved: let the emitter fire now (within the throttle)."""
        self._wake.set()

    # --- channels --------------------------------------------------------------------------

    def subscribed_to(self, channel: str) -> bool:
        return channel in self._channels

    async def add_channel(self, channel: str) -> None:
        """Listen to `channel` too, now if connected, else from the next (re)subscribe."""
        if channel in self._channels:
            return
        self._channels.add(channel)
        if self._ps is not None:
            try:
                await self._ps.subscribe(channel)
            except Exception as exc:  # the reconnect subscribes to every channel in the set
                log.warning("%s: cannot subscribe to %s (%s)", self.name, channel, exc)

    async def remove_channel(self, channel: str) -> None:
        """Stop listening to `channel`."""
        if channel not in self._channels:
            return
        self._channels.discard(channel)
        if self._ps is not None:
            with contextlib.suppress(Exception):  # a reconnect leaves it out anyway
                await self._ps.unsubscribe(channel)

    async def _subscribe(self, ps: aioredis.client.PubSub) -> None:
        wanted = set(self._channels)
        if wanted:
            await ps.subscribe(*wanted)
        if self._patterns:
            await ps.psubscribe(*self._patterns)
        self._ps = ps
        # Channels added or removed while the SUBSCRIBE was on its way.
        if added := self._channels - wanted:
            await ps.subscribe(*added)
        if gone := wanted - self._channels:
            await ps.unsubscribe(*gone)

    # --- the subscriber --------------------------------------------------------------------

    def _set_connected(self, up: bool) -> None:
        if self.model.connected != up:
            self.model.connected = up
            self.model.version += 1
            self.poke()

    def _handle(self, msg: dict[str, Any]) -> None:
        if msg.get("type") not in ("message", "pmessage"):
            return
        ch = msg["channel"]
        channel = ch.decode() if isinstance(ch, bytes) else str(ch)
        before = self.model.version
        try:
            self._apply(channel, msg["data"])
        except Exception:  # a bug shows in the log; the subscription and the model stay up
            log.exception("%s: message on %s not applied", self.name, channel)
        if self.model.version != before:
            self.poke()

    async def _subscribe_forever(self) -> None:
        delay = BACKOFF_FIRST_S
        while True:
            r = connect_async(
                self.url,
                socket_connect_timeout=2,
                health_check_interval=10,
                retry=Retry(NoBackoff(), 0),
            )
            ps = None
            try:
                ps = await _pubsub(r)
                await self._subscribe(ps)  # first: nothing published during the seed is lost
                self.redis = r
                if self._seed is not None:
                    await self._seed(r)
                if not self.model.connected:
                    names = ", ".join(sorted(self._channels) + list(self._patterns))
                    log.info("%s: subscribed to %s", self.name, names)
                self._set_connected(True)
                delay = BACKOFF_FIRST_S
                while True:
                    msg = await ps.get_message(timeout=READ_TIMEOUT_S)
                    if msg is not None:
                        self._handle(msg)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never crash the app: Redis may come back
                self.redis = self._ps = None
                self._set_connected(False)
                log.warning(
                    "%s: Redis subscription lost (%s); retrying in %.1fs", self.name, exc, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
            finally:
                self.redis = self._ps = None
                with contextlib.suppress(Exception):
                    if ps is not None:
                        await ps.aclose()
                with contextlib.suppress(Exception):
                    await r.aclose()

    # --- the emitter -----------------------------------------------------------------------

    def period(self) -> float:
        """The throttle period now, for the pages subscribed now (`emit_period`)."""
        return emit_period(self.max_hz, len(self.changed.callbacks), PAGE_UPDATES_PER_S)

    async def _fire(self) -> None:
        """Run every subscribed refresh, `FIRE_SLICE` at a time with a yield in between (what
        NiceGUI's `Event.emit` does, minus running them all in one turn of the loop). A refresh
        that raises goes to the app's exception handler; an async one becomes a task."""
        callbacks = list(self.changed.callbacks)
        present: set[int] | None = None  # after a yield: the callbacks still subscribed
        for i, cb in enumerate(callbacks):
            if i and i % FIRE_SLICE == 0:
                await asyncio.sleep(0)
                present = {id(c) for c in self.changed.callbacks}
            if present is not None and id(cb) not in present:
                continue  # its page went while we yielded
            with cb.context:
                try:
                    result = cb.invoke()
                    if helpers.should_await(result):
                        background_tasks.create(
                            result, name=f"{self.name}-changed", context=cb.context
                        )
                except Exception as exc:
                    nicegui_app.handle_exception(exc)

    async def _emit_forever(self) -> None:
        last_version = -1
        last_change = last_emit = 0.0  # monotonic; the 1 Hz tick does not hold a change back
        while True:
            period = self.period()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 1 / self.max_hz)
            self._wake.clear()
            if self._on_tick is not None:
                await self._on_tick()
            if self.model.version != last_version:
                wait = period - (time.monotonic() - last_change)
                if wait > 0:
                    await asyncio.sleep(wait)
                last_version = self.model.version
                last_change = last_emit = time.monotonic()
                await self._fire()
            elif time.monotonic() - last_emit >= max(TICK_S, period):
                last_emit = time.monotonic()
                await self._fire()
