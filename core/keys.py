"""Redis key and channel names of the public contract (design card), in one place.

Every key and channel this system creates, reads or subscribes to is named here (or by a
function here), so that `REDIS_NAMESPACE` can put all of them under `<namespace>:` and two
deployments can share one Redis server. Databases do not separate them: Redis pub/sub channels
are global across databases (measured: a second `run.py up` on db 7 showed the alarms of one on
db 13). The names below are the ones of a deployment with no namespace; with `REDIS_NAMESPACE=a`
`events:in` is `a:events:in`, `checkins:verdict:main` is `a:checkins:verdict:main`, and so on.
The namespace is read from the settings once, when this module is first imported (each process
has one deployment).
"""

from __future__ import annotations

import re

from core.settings import REDIS_NAMESPACE_PATTERN, Settings, get_settings

_NAMESPACE = re.compile(REDIS_NAMESPACE_PATTERN)


def prefix_of(namespace: str) -> str:
    """`<namespace>:`, or "" for none; raises ValueError for a namespace that is not valid."""
    if not namespace:
        return ""
    if not _NAMESPACE.match(namespace):
        raise ValueError(
            f"REDIS_NAMESPACE {namespace!r}: use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return f"{namespace}:"


#: This process's deployment: every name below starts with it.
PREFIX = prefix_of(get_settings().redis_namespace)


def name(base: str) -> str:
    """A key or channel of this deployment (`base` under the namespace, if one is set)."""
    return PREFIX + base


def event_streams(settings: Settings) -> list[str]:
    """The stream keys the events flow reads (`EVENT_STREAMS`, under `settings`' namespace)."""
    p = prefix_of(settings.redis_namespace)
    return [p + k for k in settings.stream_keys]


def shard_tag(shard: int) -> str:
    """`{<shard>}`: the Redis Cluster hash tag every key of input shard `shard` carries, so
    a shard's stream and the keys written with it in one transaction share a slot."""
    return "{" + str(int(shard)) + "}"


def sharded(base: str, shard: int, shards: int) -> str:
    """Input stream `base` of shard `shard` of `shards`: the plain name when there is one
    shard (today's names), else `<base>:{<shard>}` (under the namespace)."""
    if shards <= 1:
        return name(base)
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is not in 0..{shards - 1}")
    return name(f"{base}:{shard_tag(shard)}")


EVENTS_IN = name("events:in")  # stream: sensor / client events in
EVENTS_PUBLISH = name("events:publish")  # pub/sub: events in, at-most-once
EVENTS_NEW = name("events:new")  # pub/sub: every stored event out (JSON)
EVENTS_RECENT = name("events:recent")  # list: newest 50 stored events, newest first
EVENTS_DEAD = name("events:dead")  # stream: rejected input with reason and original bytes
LIVE_EVENTS = name("live:events")  # pub/sub: micro-batches of stored events for the dashboard
LIVE_EVENT_COUNTS = name("live:event_counts")  # pub/sub: closed window counts
RECENT_SIZE = 50
DEAD_MAXLEN = 100_000  # events:dead keeps about this many newest entries (the lake keeps all)


def heartbeat_key(flow: str) -> str:
    """String key a flow refreshes (with a TTL) while it is alive; read by /health."""
    return name(f"flow:{flow}:heartbeat")


# --- attendance --------------------------------------------------------------------------------
CHECKINS_IN = name("checkins:in")  # stream: gate check-ins in
PARTICIPANTS_IN = name("participants:in")  # stream: participant upserts, revocations, reissues
CHECKINS_DEAD = name("checkins:dead")  # stream: refused check-in/participant input with the reason
PARTICIPANTS_INDEX = name("participants:index")  # hash: id → {digest, serial, revoked, name}
ATTENDANCE_TOTALS = name("attendance:totals")  # string: the latest totals (JSON) for a page opening
LIVE_ATTENDANCE = name("live:attendance")  # pub/sub: totals + newest verdicts, micro-batched
LIVE_ATTENDANCE_COUNTS = name("live:attendance_counts")  # pub/sub: closed per-minute gate windows
VERDICT_TTL_S = 86_400  # `verdict:<nonce>` keeps each verdict this long for late lookups


def verdict_channel(gate_id: str) -> str:
    """Pub/sub channel where a gate hears the verdict of each of its scans."""
    return name(f"checkins:verdict:{gate_id}")


#: The common beginning of every gate's verdict channel (what a PSUBSCRIBE pattern starts with).
VERDICT_CHANNEL_PREFIX = verdict_channel("")


def verdict_key(nonce: str) -> str:
    """String key holding the (latest) verdict of one scan, for `GET /api/checkins/<nonce>`."""
    return name(f"verdict:{nonce}")


# --- video: cameras, rooms, activity log -------------------------------------------------------
VIDEO_COMMANDS = name("video:commands")  # stream: capture commands in (start / stop / status)
VIDEO_STATUS = name("video:status")  # hash: camera id → CameraStatus JSON (the present, for a page)
VIDEO_DEAD = name("video:dead")  # stream: refused commands / activity entries with the reason
VIDEO_REPLY_PREFIX = name("video:reply:")  # lists: status replies a command asked for (reply_to)
VIDEO_REPLY_TTL_S = 60
LIVE_CAMERAS = name("live:cameras")  # pub/sub: CameraStatus JSON on every change and once a second
ACTIVITY_IN = name("activity:in")  # stream: client activity (connects, room joins/leaves, logs)
ROOMS = name("rooms")  # hash: room id → Room JSON
LIVE_ROOMS = name("live:rooms")  # pub/sub: {"room_id": ...} whenever a room or its members change
ROOM_MEMBER_TTL_S = 30  # a member not refreshed for this long has left (tab or app gone)


def video_channel(camera_id: str) -> str:
    """Pub/sub channel of one camera's frames (FrameHeader + JPEG per message)."""
    return name(f"video:{camera_id}")


VIDEO_CHANNEL_PREFIX = video_channel("")
VIDEO_HUB = name("video:hub")  # pub/sub: keeps the dashboard's frame subscription open, idle


def camera_of_channel(channel: str) -> str | None:
    """The camera whose frames a channel carries (None: not a camera's frame channel)."""
    if channel.startswith(VIDEO_CHANNEL_PREFIX) and channel != VIDEO_HUB:
        return channel[len(VIDEO_CHANNEL_PREFIX) :]
    return None


def room_members_key(room_id: str) -> str:
    """Hash of a room's members: member id → RoomMember JSON."""
    return name(f"room:{room_id}:members")


ROOMS_SEEDED = name("rooms:seeded")  # string: set once the default room was created (never again)

# --- alarms ------------------------------------------------------------------------------------
CHECKINS_VERDICTS = name("checkins:verdicts")  # stream: every verdict (JSON), for the alarm flow
CHECKINS_VERDICTS_MAXLEN = 100_000  # approximate trim; the lake `checkins` keeps all
ALARMS_COMMANDS = name("alarms:commands")  # stream: acknowledge / clear by a person (who, comment)
ALARMS_ACTIVE = name("alarms:active")  # hash: alarm id → Alarm JSON (not cleared AND acknowledged)
ALARMS_DEAD = name("alarms:dead")  # stream: refused alarm commands with the reason
LIVE_ALARMS = name("live:alarms")  # pub/sub: {"transition": ..., "alarm": Alarm JSON} per change

# --- check-in deciders (internal to the check-in flow; see flows/checkins_decider.py) ----------
CHECKIN_DECIDER_SHARDS = name("checkins:decider:shards")  # string: shards the state is cut in


def decider_state_key(shard: int) -> str:
    """Hash of one decider shard: participant key → pickled state."""
    return name(f"checkins:decider:{shard}:state")


def decider_offsets_key(shard: int) -> str:
    """String: the input offsets one decider shard has committed (JSON)."""
    return name(f"checkins:decider:{shard}:offsets")


def decider_nonces_key(shard: int) -> str:
    """Hash of one decider shard: nonce → the scan it first named (`checkins_logic.NonceBook`)."""
    return name(f"checkins:decider:{shard}:nonces")


def decided_key(shard: int) -> str:
    """Stream: the batches of outcomes one decider shard committed (pickled)."""
    return name(f"checkins:decided:{shard}")


# --- notifications (see notify/ and docs/notifications.md) --------------------------------------
ALARMS_TRANSITIONS = name(
    "alarms:transitions"
)  # stream: every alarm transition, once (notifier input)
ALARMS_TRANSITIONS_MAXLEN = 100_000  # approximate trim; the lake `alarms` keeps all
NOTIFY_CURSOR = name(
    "notify:cursor"
)  # string: the last alarms:transitions entry the notifier planned
NOTIFY_JOBS = name(
    "notify:jobs"
)  # hash: notification id → Job JSON (the outbox: due, not yet done)
NOTIFY_DUE = name(
    "notify:due"
)  # sorted set: notification id → when its next attempt is due (epoch s)
NOTIFY_INFLIGHT = name("notify:inflight")  # hash: notification id → attempt started (epoch s)
NOTIFY_DONE = name("notify:done")  # sorted set: notification id → when it finished (de-dup, 7 days)
NOTIFY_ESCALATIONS = name(
    "notify:escalations"
)  # sorted set: escalation key → next step due (epoch s)
NOTIFY_ESCALATION_STATE = name("notify:escalation")  # hash: escalation key → Escalation JSON
NOTIFY_HEALTH = name("notify:health")  # hash: target name → TargetHealth JSON
NOTIFY_ATTEMPTS = name("notify:attempts")  # stream: every attempt (→ lake `notifications`)
NOTIFY_SUBSCRIPTIONS = name("notify:subscriptions")  # hash: username → Subscription JSON
NOTIFY_LOCK = name("notify:lock")  # string (with TTL): the one running notifier's token
NOTIFIER_HEARTBEAT = "notifier"  # its heartbeat is heartbeat_key("notifier"), like a flow's
ALARMS_TRANSITIONS_SEEN = name("alarms:transitions:seen")  # sorted set: transitions already written


# --- dashboard sessions (auth/sessions.py) ------------------------------------------------------


def session_key(digest: str) -> str:
    """String (TTL SESSION_MAX_AGE_S): one dashboard session's `app.storage.user` (JSON), by
    the SHA-256 of its session id (first 32 hex digits)."""
    return name(f"session:{digest}")
