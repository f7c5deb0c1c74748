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
import zlib

from core.redis_conn import is_cluster
from core.settings import REDIS_NAMESPACE_PATTERN, Settings, get_settings
from core.tokens import peek

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


#: Whether this deployment's REDIS_URL names a Redis Cluster (`redis+cluster://`, see
#: core/redis_conn.py); read once, like the namespace.
CLUSTER = is_cluster(get_settings().redis_url or "")


def slot_tagged(base: str, tag: str, cluster: bool = CLUSTER) -> str:
    """`base` with its leading `tag` as a Redis Cluster hash tag in a cluster (`notify:jobs`,
    tag `notify` → `{notify}:jobs`), else unchanged: keys written together in one transaction
    or script carry the same tag, so they share a slot, while a single server keeps the names
    (and the data) it always had."""
    if not base.startswith(tag):
        raise ValueError(f"{base!r} does not start with its tag {tag!r}")
    return "{" + tag + "}" + base[len(tag) :] if cluster else base


def event_streams(settings: Settings) -> list[str]:
    """The stream keys the events flow (and the alarm flow) reads, under `settings`'
    namespace: every `EVENT_STREAMS` key, plus the input shards `events:in:{0}` …
    `events:in:{N-1}` when `STREAM_SHARDS=N` > 1 (the plain `events:in` is still read then:
    entries written before the switch, or by a writer that does not shard). Each is one
    resumable partition of the flow, so a cluster spreads them over its processes."""
    p = prefix_of(settings.redis_namespace)
    streams = [p + k for k in settings.stream_keys]
    return streams + [s for s in event_write_streams(settings) if s not in streams]


def event_write_streams(settings: Settings) -> list[str]:
    """The streams events are XADDed to, in shard order: with `STREAM_SHARDS=N` > 1 the
    shards `events:in:{k}`, else the `EVENT_STREAMS` keys. An event of `source` goes to
    element `crc32(utf8(source)) % len(...)` (`core.records.event_stream_for`; docs/contract.md
    spells the hash out for sensors in other languages)."""
    p = prefix_of(settings.redis_namespace)
    n = settings.stream_shards
    if n <= 1:
        return [p + k for k in settings.stream_keys]
    return [f"{p}events:in:{shard_tag(k)}" for k in range(n)]


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

#: Input shards of this deployment (`STREAM_SHARDS`), read once like the namespace.
STREAM_SHARDS = get_settings().stream_shards


def shard_of(key: str, shards: int) -> int:
    """THE check-in shard of a participant key `p:<participant id>` (or of a gate id, for a
    scan whose token names nobody): `crc32(UTF-8 bytes) mod shards` (zlib/IEEE CRC-32, the
    one of zip and PNG). Example: crc32(b"p:P001") = 814731454, so shard 0 of 2, 2 of 4. A
    gate in any language computes the same (docs/gates.md); the deciders of the check-in flow own
    their participants by it too."""
    return zlib.crc32(key.encode()) % shards if shards > 1 else 0


def checkin_shard(token: str, gate_id: str, shards: int) -> int:
    """The shard of a scan: that of the participant its token *claims* (decoded, not
    verified: the decider verifies), or of its gate id when the token is not parseable."""
    claims = peek(token)
    return shard_of(f"p:{claims.participant_id}" if claims else gate_id, shards)


def checkins_in(token: str, gate_id: str, shards: int | None = None) -> str:
    """The `checkins:in` stream a scan goes to: `checkins:in` with one shard, else
    `checkins:in:{k}` with k = `checkin_shard` (so one participant's scans stay in order)."""
    n = STREAM_SHARDS if shards is None else shards
    return sharded("checkins:in", checkin_shard(token, gate_id, n), n)


def participants_in(participant_id: str, shards: int | None = None) -> str:
    """The `participants:in` stream a change of participant `participant_id` goes to: the
    shard of `p:<participant_id>`, the one its scans go to."""
    n = STREAM_SHARDS if shards is None else shards
    return sharded("participants:in", shard_of(f"p:{participant_id}", n), n)


def checkin_streams(shards: int | None = None) -> list[str]:
    """Every stream scans are XADDed to (`checkins_in`): `checkins:in`, or with
    `STREAM_SHARDS=N` > 1 its shards `checkins:in:{0}` … `checkins:in:{N-1}` (what the alarm
    flow reads for `gate_congestion`; the deciders read only these too)."""
    n = STREAM_SHARDS if shards is None else shards
    return [sharded("checkins:in", k, n) for k in range(max(n, 1))]


def checkin_inputs(shard: int, shards: int) -> list[str]:
    """The input streams decider `shard` reads, participants first (at equal times)."""
    return [sharded("participants:in", shard, shards), sharded("checkins:in", shard, shards)]


def verdict_channel(gate_id: str) -> str:
    """Pub/sub channel where a gate hears the verdict of each of its scans."""
    return name(f"checkins:verdict:{gate_id}")


#: The common beginning of every gate's verdict channel (what a PSUBSCRIBE pattern starts with).
VERDICT_CHANNEL_PREFIX = verdict_channel("")


def nonce_claim_key(nonce: str) -> str:
    """String (TTL 1 day, `STREAM_SHARDS` > 1 only): the scan that first used `nonce`, over
    all input shards (JSON [ticket fingerprint, gate, direction, arrival ms, shard])."""
    return name(f"checkins:nonce:{nonce}")


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
CHECKIN_DECIDER_SHARDS = name("checkins:decider:shards")  # string: shares the state is cut in


def decider_count(s: Settings) -> int:
    """How many deciders the check-in flow runs: one per input shard when `STREAM_SHARDS` > 1
    (decider k reads only `checkins:in:{k}` / `participants:in:{k}`), else `CHECKIN_DECIDERS`
    (each reads the one `checkins:in` and decides its share of the participants)."""
    return s.stream_shards if s.stream_shards > 1 else s.checkin_deciders


def decider_layout(s: Settings) -> str:
    """How the decider state is cut, as stored under `CHECKIN_DECIDER_SHARDS`: "<n>" for n
    deciders over one input (today's value), "<n> input shards" with `STREAM_SHARDS` = n."""
    n = decider_count(s)
    return f"{n} input shards" if s.stream_shards > 1 else str(n)


def _decider(shard: int, stream_shards: int, cluster: bool | None = None) -> str:
    """`<shard>` with one input shard on one server (today's names), `{<shard>}` with more
    input shards or in a Redis Cluster: then every key a decider writes in its MULTI/EXEC
    carries one hash tag (its input shard's, or with one input stream its decider's own)."""
    tagged = stream_shards > 1 or (CLUSTER if cluster is None else cluster)
    return shard_tag(shard) if tagged else str(shard)


def decider_state_key(shard: int, stream_shards: int = 1) -> str:
    """Hash of one decider shard: participant key → pickled state."""
    return name(f"checkins:decider:{_decider(shard, stream_shards)}:state")


def decider_offsets_key(shard: int, stream_shards: int = 1) -> str:
    """String: the input offsets one decider shard has committed (JSON)."""
    return name(f"checkins:decider:{_decider(shard, stream_shards)}:offsets")


#: How long a decider keeps a nonce's first use (`decider_nonce_key`): the day a nonce names
#: its scan (`checkins_logic.NONCE_TTL_MS`, by entry time) plus an hour for a decider that is
#: behind its input, so the key outlives that day for every scan that may still look it up.
NONCE_KEY_TTL_S = VERDICT_TTL_S + 3600


def decider_nonce_key(shard: int, nonce: str, stream_shards: int = 1) -> str:
    """String (TTL `NONCE_KEY_TTL_S`) of one decider shard: the scan `nonce` first named, JSON
    [ticket fingerprint, gate, direction, arrival ms] (`checkins_logic.NonceBook`)."""
    return name(f"checkins:decider:{_decider(shard, stream_shards)}:nonce:{nonce}")


def decider_nonces_key(shard: int, stream_shards: int = 1) -> str:
    """Hash of one decider shard, before the per-nonce keys: nonce → the scan it first named.
    Read once into `decider_nonce_key` keys and deleted by the decider's first start."""
    return name(f"checkins:decider:{_decider(shard, stream_shards)}:nonces")


def decider_published_key(shard: int, stream_shards: int = 1) -> str:
    """String (with input shards or in a Redis Cluster): the last `checkins:decided:{<shard>}`
    entry whose shared-key writes (`verdict:<nonce>`, `checkins:verdicts`, ...) were made
    after EXEC."""
    return name(f"checkins:decider:{_decider(shard, stream_shards)}:published")


def decided_key(shard: int, stream_shards: int = 1) -> str:
    """Stream: the batches of outcomes one decider shard committed (pickled)."""
    return name(f"checkins:decided:{_decider(shard, stream_shards)}")


# --- notifications (see notify/ and docs/notifications.md) --------------------------------------
# The notifier's outbox keys change together in one transaction: in a cluster they share the hash
# tag `{notify}` (docs/operating.md#redis-cluster). So do `alarms:transitions` and its `seen` set.
ALARMS_TRANSITIONS = name(
    slot_tagged("alarms:transitions", "alarms:transitions")
)  # stream: every alarm transition, once (notifier input)
ALARMS_TRANSITIONS_MAXLEN = 100_000  # approximate trim; the lake `alarms` keeps all
NOTIFY_CURSOR = name(
    slot_tagged("notify:cursor", "notify")
)  # string: the last alarms:transitions entry the notifier planned
NOTIFY_JOBS = name(
    slot_tagged("notify:jobs", "notify")
)  # hash: notification id → Job JSON (the outbox: due, not yet done)
NOTIFY_DUE = name(
    slot_tagged("notify:due", "notify")
)  # sorted set: notification id → when its next attempt is due (epoch s)
NOTIFY_INFLIGHT = name(
    slot_tagged("notify:inflight", "notify")
)  # hash: notification id → attempt started (epoch s)
NOTIFY_DONE = name(
    slot_tagged("notify:done", "notify")
)  # sorted set: notification id → when it finished (de-dup, 7 days)
NOTIFY_ESCALATIONS = name(
    slot_tagged("notify:escalations", "notify")
)  # sorted set: escalation key → next step due (epoch s)
NOTIFY_ESCALATION_STATE = name(
    slot_tagged("notify:escalation", "notify")
)  # hash: escalation key → Escalation JSON
NOTIFY_HEALTH = name(
    slot_tagged("notify:health", "notify")
)  # hash: target name → TargetHealth JSON
NOTIFY_ATTEMPTS = name(
    slot_tagged("notify:attempts", "notify")
)  # stream: every attempt (→ lake `notifications`)
NOTIFY_SUBSCRIPTIONS = name("notify:subscriptions")  # hash: username → Subscription JSON
NOTIFY_LOCK = name("notify:lock")  # string (with TTL): the one running notifier's token
NOTIFIER_HEARTBEAT = "notifier"  # its heartbeat is heartbeat_key("notifier"), like a flow's
ALARMS_TRANSITIONS_SEEN = name(
    slot_tagged("alarms:transitions:seen", "alarms:transitions")
)  # sorted set: transitions already written


# --- dashboard sessions (auth/sessions.py) ------------------------------------------------------


def session_key(digest: str) -> str:
    """String (TTL SESSION_MAX_AGE_S): one dashboard session's `app.storage.user` (JSON), by
    the SHA-256 of its session id (first 32 hex digits)."""
    return name(f"session:{digest}")
