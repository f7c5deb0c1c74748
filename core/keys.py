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
