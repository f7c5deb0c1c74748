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
