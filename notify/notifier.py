"""The notifier process: alarm transitions → notifications, durably, with retries and escalation.

Run by `run.py up` / `demo` (supervised like the flows); alone: `python -m notify.notifier`.

```
alarms:transitions ─▶ plan (routes, quiet hours, subscriptions) ─┐ one MULTI with the cursor
                                                                 ▼
        notify:jobs (outbox) + notify:due (when) ◀── retries (backoff) ── attempt ─▶ target
        notify:escalations ─▶ escalation steps ─┘          │
                                                          ├─▶ notify:attempts ─▶ lake notifications
                                                          └─▶ notify:health ─▶ events:in
                                                               (notify.failing / notify.recovered)
```

Durability. Planning a transition and advancing the cursor (`notify:cursor`) happen in one
Redis transaction, and each notification enters the outbox under its stable id only if it is
neither pending nor done (`notify:done`, 7 days): a `kill -9` anywhere replans at most what was
not committed, and never twice. A notification leaves the outbox in the same transaction that
records its successful attempt. The one window left is between a receiver accepting a
notification and that transaction — a notification in flight then (`notify:inflight`) is sent
again after a restart with the same id (`webhook-id`, the e-mail's "Notification id"), which
is what receivers de-duplicate on.

Never in the way: the alarm flow only XADDs; each target has its own concurrency limit and
timeout (a dead one holds only its own attempts), and the notifier runs in its own process.
A single notifier runs at a time (`notify:lock`, taken over from a dead holder at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Awaitable, Callable

import redis

from core import keys
from core.alarms import Alarm
from core.notify_config import (
    FAILING_EVENT,
    FAILING_SOURCE_PREFIX,
    RECOVERED_EVENT,
    Notifications,
    Target,
)
from core.notify_plan import (
    USER_TARGET_PREFIX,
    AttemptRow,
    Escalation,
    Job,
    Subscription,
    TargetHealth,
    TransitionMsg,
    attempt_row,
    escalation_key,
    escalation_step,
    health_after,
    plan,
    retry_delay,
    utc,
)
from core.records import dumps
from core.redis_conn import connect_async, transaction
from core.settings import get_settings
from core.venue import Venue, venue_for
from notify import message
from notify.apprise_sender import warm_up
from notify.senders import sender_for, user_destination
from notify.transport import Delivery, Sender, deliver

log = logging.getLogger("venueflow.notifier")

DONE_KEEP_S = 7 * 86_400
FIRST_START_LOOKBACK_S = 600  # no cursor yet: transitions of the last 10 minutes still count
LOCK_TTL_MS = 10_000
STOP_GRACE_S = 8.0
ATTEMPTS_MAXLEN = 1_000_000

#: Put a notification in the outbox unless it is already there or done (same id = same one).
_ENQUEUE = """
if redis.call('ZSCORE', KEYS[3], ARGV[1]) then return 0 end
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
"""
_REFRESH_LOCK = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if not holder then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0
"""
_DROP_LOCK_OF = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Notifier:
    def __init__(self, url: str, venue: Venue):
        self.venue = venue
        self.n: Notifications = venue.notifications
        self.r = connect_async(url, socket_timeout=10, socket_connect_timeout=5)
        self.senders: dict[tuple[str, str], Sender] = {}
        self.sems: dict[str, asyncio.Semaphore] = {}
        self.running: set[str] = set()
        self.health: dict[str, TargetHealth] = {}
        self.wake = asyncio.Event()
        self.stopping = asyncio.Event()
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.tasks: set[asyncio.Task] = set()

    # -- lifecycle ----------------------------------------------------------------------------

    async def run(self) -> None:
        if self.n.targets or self.n.mail_url:  # before the lock: it takes seconds under load
            await asyncio.to_thread(warm_up)
        await self._take_lock()
        for name, raw in (await self.r.hgetall(keys.NOTIFY_HEALTH)).items():
            with contextlib.suppress(ValueError):
                self.health[name.decode()] = TargetHealth.model_validate_json(raw)
        inflight = await self.r.hlen(keys.NOTIFY_INFLIGHT)
        if inflight:
            log.warning(
                "%d notification(s) were being sent when the notifier stopped; sending them "
                "again (receivers de-duplicate on their id)", inflight,
            )  # fmt: skip
        for t in self.n.targets:  # made now: a client's set-up must not delay the first alarm
            self._sender(t)
        log.info("notifier up: %d target(s), %d route(s)", len(self.n.targets), len(self.n.routes))
        loops = [self._plan_loop, self._dispatch_loop, self._escalation_loop, self._keep_lock]
        workers = [asyncio.create_task(self._forever(f)) for f in loops]
        await self.stopping.wait()
        for t in workers:
            t.cancel()
        # attempts under way get a few seconds to finish and record their outcome (the
        # supervisor kills after 20 s; what is cut off is simply sent again at the next start)
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=STOP_GRACE_S)
        for s in self.senders.values():
            await s.close()
        with contextlib.suppress(redis.RedisError):
            await self.r.eval(_DROP_LOCK_OF, 1, keys.NOTIFY_LOCK, self.token)
        await self.r.aclose()

    async def _forever(self, step: Callable[[], Awaitable[None]]) -> None:
        """Run a loop; Redis trouble is waited out with backoff, never fatal."""
        delay = 0.2
        while not self.stopping.is_set():
            try:
                await step()
                delay = 0.2
            except asyncio.CancelledError:
                raise
            except (redis.RedisError, OSError) as exc:
                log.warning(
                    "%s: Redis unavailable (%s); retrying in %.1fs", step.__name__, exc, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            except SystemExit:
                self.stopping.set()
                raise

    async def _take_lock(self) -> None:
        said = False
        while True:
            if await self.r.set(keys.NOTIFY_LOCK, self.token, nx=True, px=LOCK_TTL_MS):
                return
            holder = (await self.r.get(keys.NOTIFY_LOCK) or b"").decode()
            host, _, rest = holder.partition(":")
            pid = rest.partition(":")[0]
            if host == socket.gethostname() and pid.isdigit() and not _pid_alive(int(pid)):
                await self.r.eval(_DROP_LOCK_OF, 1, keys.NOTIFY_LOCK, holder)
                log.info("took over from notifier pid %s (gone)", pid)
                continue
            if not said:
                log.warning("another notifier runs (%s); waiting for it to stop", holder)
                said = True
            await asyncio.sleep(1.0)

    async def _keep_lock(self) -> None:
        ok = await self.r.eval(_REFRESH_LOCK, 1, keys.NOTIFY_LOCK, self.token, LOCK_TTL_MS)
        if not ok:
            log.error("lost the notifier lock to another process; stopping")
            self.stopping.set()
            return
        await self.r.set(
            keys.heartbeat_key(keys.NOTIFIER_HEARTBEAT),
            dumps({"at": time.time(), "pid": os.getpid()}),
            ex=5,
        )
        await asyncio.sleep(2.0)

    # -- planning -----------------------------------------------------------------------------

    async def _subscriptions(self) -> list[Subscription]:
        out = []
        for raw in (await self.r.hgetall(keys.NOTIFY_SUBSCRIPTIONS)).values():
            with contextlib.suppress(ValueError):
                out.append(Subscription.model_validate_json(raw))
        return out

    async def _plan_loop(self) -> None:
        cursor = await self.r.get(keys.NOTIFY_CURSOR)
        start = (
            cursor.decode() if cursor else f"{int((time.time() - FIRST_START_LOOKBACK_S) * 1000)}-0"
        )
        reply = await self.r.xread({keys.ALARMS_TRANSITIONS: start}, count=200, block=500)
        if not reply:
            return
        entries = reply[0][1]
        subs = await self._subscriptions()
        now = time.time()
        pipe = await transaction(self.r)
        planned = 0
        for eid, fields in entries:
            try:
                msg = TransitionMsg.model_validate_json(fields.get(b"data") or b"")
            except ValueError as exc:
                log.error("alarms:transitions %s is not a transition (%s); skipped", eid, exc)
                continue
            p = plan(self.n, subs, msg, self.venue.event.zone, now)
            for job in p.jobs:
                self._enqueue(pipe, job, now)
                planned += 1
            for sk in p.skipped:
                job = Job(id=f"{msg.alarm.alarm_id}/{msg.transition}-{msg.revision}/{sk.target}/"
                          f"{sk.route}", transition=msg.transition, target=sk.target,
                          route=sk.route, alarm=msg.alarm, created_at=now)  # fmt: skip
                self._row(pipe, attempt_row(job, "quiet_hours", now, error=sk.reason))
            for esc in p.escalations:
                pipe.zadd(keys.NOTIFY_ESCALATIONS, {esc.key: esc.due}, nx=True)
                pipe.hsetnx(keys.NOTIFY_ESCALATION_STATE, esc.key, esc.model_dump_json())
            if p.stop_escalations:
                for route in self.n.routes:
                    k = escalation_key(msg.alarm.alarm_id, route.name)
                    pipe.zrem(keys.NOTIFY_ESCALATIONS, k)
                    pipe.hdel(keys.NOTIFY_ESCALATION_STATE, k)
        pipe.set(keys.NOTIFY_CURSOR, entries[-1][0])
        await pipe.execute()
        if planned:
            self.wake.set()

    @staticmethod
    def _enqueue(pipe, job: Job, now: float) -> None:
        """Queue `_ENQUEUE` for `job` in a transaction. Plain EVAL, not a registered script:
        redis-py's cluster pipeline refuses EVALSHA ("Calling pipelined function evalsha is
        blocked when running redis in cluster mode", measured with redis-py 8.1)."""
        pipe.eval(_ENQUEUE, 3, keys.NOTIFY_JOBS, keys.NOTIFY_DUE, keys.NOTIFY_DONE,
                  job.id, job.model_dump_json(), now)  # fmt: skip

    def _row(self, pipe, row: AttemptRow) -> None:
        pipe.xadd(
            keys.NOTIFY_ATTEMPTS, {"data": row.model_dump_json()},
            maxlen=ATTEMPTS_MAXLEN, approximate=True,
        )  # fmt: skip

    # -- escalation ---------------------------------------------------------------------------

    async def _escalation_loop(self) -> None:
        now = time.time()
        due = await self.r.zrangebyscore(keys.NOTIFY_ESCALATIONS, "-inf", now, start=0, num=100)
        for key in due:
            raw = await self.r.hget(keys.NOTIFY_ESCALATION_STATE, key)
            if raw is None:
                await self.r.zrem(keys.NOTIFY_ESCALATIONS, key)
                continue
            esc = Escalation.model_validate_json(raw)
            cur = await self.r.hget(keys.ALARMS_ACTIVE, esc.alarm.alarm_id)
            status = None
            if cur is not None:
                alarm = Alarm.model_validate_json(cur)
                esc, status = esc.model_copy(update={"alarm": alarm}), alarm.status
            jobs, nxt, what = escalation_step(self.n, esc, status, now)
            pipe = await transaction(self.r)
            for job in jobs:
                self._enqueue(pipe, job, now)
            level = esc.level + 1 if jobs else esc.level
            step = Job(
                id=f"{esc.alarm.alarm_id}/escalation-{level}/-/{esc.to}", kind="escalation",
                transition="escalation", level=level,
                target=",".join(j.target for j in jobs) or "-", route=esc.to, alarm=esc.alarm,
                created_at=now,
            )  # fmt: skip
            result = "escalated" if jobs else "escalation_stopped"
            self._row(pipe, attempt_row(step, result, now, error=None if jobs else what))
            if nxt is None:
                pipe.zrem(keys.NOTIFY_ESCALATIONS, key)
                pipe.hdel(keys.NOTIFY_ESCALATION_STATE, key)
            else:
                pipe.zadd(keys.NOTIFY_ESCALATIONS, {key: nxt.due})
                pipe.hset(keys.NOTIFY_ESCALATION_STATE, key, nxt.model_dump_json())
            await pipe.execute()
            if jobs:
                log.info("alarm %s not acknowledged: escalation %d to %s", esc.alarm.alarm_id,
                         level, esc.to)  # fmt: skip
                self.wake.set()
        await asyncio.sleep(0.25)

    # -- delivery -----------------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        # cleared before reading, so a job planned while we read wakes the wait below (cleared
        # after reading, such a wake-up was lost: 200-450 ms more per notification, measured)
        self.wake.clear()
        now = time.time()
        ids = await self.r.zrangebyscore(keys.NOTIFY_DUE, "-inf", now, start=0, num=5000)
        fresh = [i for i in ids if i.decode() not in self.running]
        if fresh:
            raws = await self.r.hmget(keys.NOTIFY_JOBS, fresh)
            for jid, raw in zip(fresh, raws, strict=True):
                if raw is None:  # finished meanwhile, or a leftover: nothing to send
                    await self.r.zrem(keys.NOTIFY_DUE, jid)
                    continue
                job = Job.model_validate_json(raw)
                self.running.add(job.id)
                t = asyncio.create_task(self._attempt(job))
                self.tasks.add(t)
                t.add_done_callback(self.tasks.discard)
        nxt = await self.r.zrange(keys.NOTIFY_DUE, 0, 0, withscores=True)
        wait = 0.5
        if nxt and nxt[0][0].decode() not in self.running:
            wait = min(wait, max(0.0, nxt[0][1] - time.time()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), timeout=max(wait, 0.005))

    async def _destination(self, name: str) -> Target | str:
        """The target a job goes to, or why it cannot go anywhere any more."""
        if name.startswith(USER_TARGET_PREFIX):
            user = name[len(USER_TARGET_PREFIX) :]
            raw = await self.r.hget(keys.NOTIFY_SUBSCRIPTIONS, user)
            if raw is None:
                return f"{user} has no subscription any more"
            return user_destination(Subscription.model_validate_json(raw), self.n)
        t = self.n.target(name)
        return t if t is not None else f"target {name!r} is no longer in the venue file"

    def _sender(self, target: Target) -> Sender:
        k = (target.name, target.url)
        s = self.senders.get(k)
        if s is None:
            s = self.senders[k] = sender_for(target)
        return s

    async def _attempt(self, job: Job) -> None:
        try:
            dest = await self._destination(job.target)
            if isinstance(dest, str):
                job.attempt += 1
                await self._record(job, Delivery(False, 0.0, dest), final=True)
                return
            sem = self.sems.setdefault(job.target, asyncio.Semaphore(dest.concurrency))
            async with sem:
                await self.r.hset(keys.NOTIFY_INFLIGHT, job.id, time.time())
                d = await deliver(
                    self._sender(dest), job.id, message.title(job),
                    message.text(job, self.n.link_base), message.payload(job, self.n.link_base),
                )  # fmt: skip
            job.attempt += 1
            await self._record(job, d, final=job.attempt >= self.n.max_attempts)
        except (redis.RedisError, OSError) as exc:
            # the outcome could not be recorded: the job stays due and is tried again
            log.warning("notification %s: Redis unavailable (%s); will retry", job.id, exc)
        finally:
            self.running.discard(job.id)
            self.wake.set()

    async def _record(self, job: Job, d: Delivery, final: bool) -> None:
        now = time.time()
        h0 = self.health.get(job.target, TargetHealth())
        h, event = health_after(h0, d.ok, d.error, self.n.failing_after, now)
        self.health[job.target] = h
        if event is not None:
            # Before the transaction, not in it: `events:in` lies in another slot of a Redis
            # Cluster. A crash in between sends the event again at the next failure (at least
            # once; the alarm it raises is simply still active), never not at all.
            await self.r.xadd(keys.EVENTS_IN, {"data": self._health_event(job.target, h, event,
                                                                         now)})  # fmt: skip
            log.warning("notifications to %s %s%s", job.target, event,
                        f": {d.error}" if d.error else "")  # fmt: skip
        pipe = await transaction(self.r)
        if d.ok or final:
            result = "delivered" if d.ok else "gave_up"
            pipe.hdel(keys.NOTIFY_JOBS, job.id)
            pipe.zrem(keys.NOTIFY_DUE, job.id)
            pipe.zadd(keys.NOTIFY_DONE, {job.id: now})
            pipe.zremrangebyscore(keys.NOTIFY_DONE, "-inf", now - DONE_KEEP_S)
        else:
            result = "failed"
            pipe.hset(keys.NOTIFY_JOBS, job.id, job.model_dump_json())
            pipe.zadd(keys.NOTIFY_DUE, {job.id: now + retry_delay(job.attempt)})
        pipe.hdel(keys.NOTIFY_INFLIGHT, job.id)
        self._row(pipe, attempt_row(job, result, now, round(d.latency_ms, 2), d.error,
                                    d.status_code))  # fmt: skip
        pipe.hset(keys.NOTIFY_HEALTH, job.target, h.model_dump_json())
        await pipe.execute()
        if not d.ok:
            log.info("notification %s to %s failed (attempt %d): %s", job.id, job.target,
                     job.attempt, d.error)  # fmt: skip

    def _health_event(self, target: str, h: TargetHealth, event: str, now: float) -> str:
        failing = event == "failing"
        return dumps(
            {
                "source": f"{FAILING_SOURCE_PREFIX}{target}",
                "type": FAILING_EVENT if failing else RECOVERED_EVENT,
                "level": "ERROR" if failing else "INFO",
                "payload": {
                    "target": target,
                    "failures": h.failures,
                    "error": (
                        f"notifications to {target} failing: {h.last_error}"
                        if failing
                        else f"notifications to {target} work again"
                    ),
                },
                "ts": utc(now),
            }
        )


def main() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stdout,
    )
    s = get_settings()
    notifier = Notifier(s.effective_redis_url, venue_for(s.venue_config))

    async def go() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, notifier.stopping.set)
        await notifier.run()

    asyncio.run(go())
    log.info("notifier stopped")


if __name__ == "__main__":
    main()
