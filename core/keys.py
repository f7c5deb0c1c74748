"""Redis key and channel names of the public contract (design card), in one place."""

EVENTS_IN = "events:in"  # stream: sensor / client events in
EVENTS_PUBLISH = "events:publish"  # pub/sub: events in, at-most-once
EVENTS_NEW = "events:new"  # pub/sub: every stored event out (JSON)
EVENTS_RECENT = "events:recent"  # list: newest 50 stored events, newest first
EVENTS_DEAD = "events:dead"  # stream: rejected input with reason and original bytes
LIVE_EVENTS = "live:events"  # pub/sub: micro-batches of stored events for the dashboard
LIVE_EVENT_COUNTS = "live:event_counts"  # pub/sub: closed window counts
RECENT_SIZE = 50
DEAD_MAXLEN = 100_000  # events:dead keeps about this many newest entries (the lake keeps all)


def heartbeat_key(flow: str) -> str:
    """String key a flow refreshes (with a TTL) while it is alive; read by /health."""
    return f"flow:{flow}:heartbeat"


# --- attendance --------------------------------------------------------------------------------
CHECKINS_IN = "checkins:in"  # stream: gate check-ins in
PARTICIPANTS_IN = "participants:in"  # stream: participant upserts, revocations, reissues
CHECKINS_DEAD = "checkins:dead"  # stream: refused check-in/participant input with the reason
PARTICIPANTS_INDEX = "participants:index"  # hash: id → {digest, serial, revoked, name}
ATTENDANCE_TOTALS = "attendance:totals"  # string: the latest totals (JSON) for a page opening
LIVE_ATTENDANCE = "live:attendance"  # pub/sub: totals + newest verdicts, micro-batched
LIVE_ATTENDANCE_COUNTS = "live:attendance_counts"  # pub/sub: closed per-minute gate windows
VERDICT_TTL_S = 86_400  # `verdict:<nonce>` keeps each verdict this long for late lookups


def verdict_channel(gate_id: str) -> str:
    """Pub/sub channel where a gate hears the verdict of each of its scans."""
    return f"checkins:verdict:{gate_id}"


def verdict_key(nonce: str) -> str:
    """String key holding the (latest) verdict of one scan, for `GET /api/checkins/<nonce>`."""
    return f"verdict:{nonce}"


# --- video: cameras, rooms, activity log -------------------------------------------------------
VIDEO_COMMANDS = "video:commands"  # stream: capture commands in (start / stop / status)
VIDEO_STATUS = "video:status"  # hash: camera id → CameraStatus JSON (the present, for a page)
VIDEO_DEAD = "video:dead"  # stream: refused commands / activity entries with the reason
VIDEO_REPLY_PREFIX = "video:reply:"  # lists: status replies a command asked for (reply_to)
VIDEO_REPLY_TTL_S = 60
LIVE_CAMERAS = "live:cameras"  # pub/sub: CameraStatus JSON on every change and once a second
ACTIVITY_IN = "activity:in"  # stream: client activity (connects, room joins/leaves, POST /logs)
ROOMS = "rooms"  # hash: room id → Room JSON
LIVE_ROOMS = "live:rooms"  # pub/sub: {"room_id": ...} whenever a room or its members change
ROOM_MEMBER_TTL_S = 30  # a member not refreshed for this long has left (tab or app gone)


def video_channel(camera_id: str) -> str:
    """Pub/sub channel of one camera's frames (FrameHeader + JPEG per message)."""
    return f"video:{camera_id}"


def room_members_key(room_id: str) -> str:
    """Hash of a room's members: member id → RoomMember JSON."""
    return f"room:{room_id}:members"


ROOMS_SEEDED = "rooms:seeded"  # string: set once the default room was created (never again)

# --- alarms ------------------------------------------------------------------------------------
CHECKINS_VERDICTS = "checkins:verdicts"  # stream: every verdict (JSON), for the alarm flow
CHECKINS_VERDICTS_MAXLEN = 100_000  # approximate trim; the lake `checkins` keeps all
ALARMS_COMMANDS = "alarms:commands"  # stream: acknowledge / clear by a person (who, comment)
ALARMS_ACTIVE = "alarms:active"  # hash: alarm id → Alarm JSON (not yet cleared AND acknowledged)
ALARMS_DEAD = "alarms:dead"  # stream: refused alarm commands with the reason
LIVE_ALARMS = "live:alarms"  # pub/sub: {"transition": ..., "alarm": Alarm JSON} per change

# --- check-in deciders (internal to the check-in flow; see flows/checkins_decider.py) ----------
CHECKIN_DECIDER_SHARDS = "checkins:decider:shards"  # string: the shard count the state is cut in


def decider_state_key(shard: int) -> str:
    """Hash of one decider shard: participant key → pickled state."""
    return f"checkins:decider:{shard}:state"


def decider_offsets_key(shard: int) -> str:
    """String: the input offsets one decider shard has committed (JSON)."""
    return f"checkins:decider:{shard}:offsets"


def decided_key(shard: int) -> str:
    """Stream: the batches of outcomes one decider shard committed (pickled)."""
    return f"checkins:decided:{shard}"


# --- notifications (see notify/ and docs/notifications.md) --------------------------------------
ALARMS_TRANSITIONS = "alarms:transitions"  # stream: every alarm transition, once (notifier input)
ALARMS_TRANSITIONS_MAXLEN = 100_000  # approximate trim; the lake `alarms` keeps all
NOTIFY_CURSOR = "notify:cursor"  # string: the last alarms:transitions entry the notifier planned
NOTIFY_JOBS = "notify:jobs"  # hash: notification id → Job JSON (the outbox: due, not yet done)
NOTIFY_DUE = "notify:due"  # sorted set: notification id → when its next attempt is due (epoch s)
NOTIFY_INFLIGHT = "notify:inflight"  # hash: notification id → attempt started (epoch s)
NOTIFY_DONE = "notify:done"  # sorted set: notification id → when it finished (de-dup, 7 days)
NOTIFY_ESCALATIONS = "notify:escalations"  # sorted set: escalation key → next step due (epoch s)
NOTIFY_ESCALATION_STATE = "notify:escalation"  # hash: escalation key → Escalation JSON
NOTIFY_HEALTH = "notify:health"  # hash: target name → TargetHealth JSON
NOTIFY_ATTEMPTS = "notify:attempts"  # stream: every attempt (→ lake `notifications`)
NOTIFY_SUBSCRIPTIONS = "notify:subscriptions"  # hash: username → Subscription JSON
NOTIFY_LOCK = "notify:lock"  # string (with TTL): the one running notifier's token
NOTIFIER_HEARTBEAT = "notifier"  # its heartbeat is heartbeat_key("notifier"), like a flow's
ALARMS_TRANSITIONS_SEEN = "alarms:transitions:seen"  # sorted set: transitions already written
