"""The check-in flow: gate scans and participant changes → verdicts, attendance, the lake.

Run it with `uv run run.py flow checkins` (recovery on).

```
checkins:in ────┐                      ┌─▶ verdicts: checkins:verdict:<gate>, verdict:<nonce>
participants:in ┴─▶ parse, verify ─▶ decide ─┼─▶ lake: checkins, participants
                     └─▶ dead letters        ├─▶ totals: attendance:totals, live:attendance
    (decide is keyed by participant)         └─▶ minute windows: attendance_counts, late_records
```

The decision state (each participant's scans, revocation, token serial) lives in Bytewax's
recovery snapshots, so a `kill -9` replays the uncommitted input into the same state and makes
the same decisions: nobody is admitted twice, no verdict is lost, and the lake (written exactly
once) always recounts to the totals.
"""

from __future__ import annotations

import os
from datetime import timedelta

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from connectors.heartbeat import HeartbeatSource
from connectors.redis_merged_streams import RedisMergedStreamSource
from connectors.redis_sink import RedisCommandSink
from core import keys
from core.records import dumps
from core.settings import Settings, get_settings
from core.shutdown import install_stop_handlers
from core.tokens import load_verifier
from core.venue import venue_for
from flows.attendance_totals import totals_step
from flows.cached_state import cached_state_builder
from flows.checkins_logic import (
    attendance_row,
    counts_by_window,
    outcome_dead_letters,
    parse_input,
    step,
    verdict_commands,
)
from flows.event_time import Closed, Late, TumblingCounter
from flows.events_logic import late_rows
from flows.lake_output import lake_output as flow_lake_output

FLOW_NAME = "checkins"
MINUTE = timedelta(minutes=1)


def build_flow(s: Settings | None = None) -> Dataflow:
    s = s or get_settings()
    install_stop_handlers()
    url = s.effective_redis_url
    venue = venue_for(s.venue_config)
    verifier = load_verifier(s.data_dir)
    lateness = timedelta(seconds=s.checkin_allowed_lateness_s)

    flow = Dataflow(FLOW_NAME)
    batches = op.input(
        "in",
        flow,
        # Participants first: at equal times a participant change precedes a scan.
        RedisMergedStreamSource(
            url, [keys.PARTICIPANTS_IN, keys.CHECKINS_IN], retention=s.stream_retention_s
        ),
    )
    parsed = op.map("parse", batches, lambda b: parse_input(b, verifier, s.max_checkin_bytes))
    beats = op.input("heartbeat", flow, HeartbeatSource())
    live_ticks = op.input("live_ticks", flow, HeartbeatSource(timedelta(milliseconds=250)))

    lake_output = flow_lake_output(s, beats, prefix="checkins.")

    # The decision, keyed by participant.
    keyed = op.flat_map("items", parsed, lambda p: p.items)
    outcomes = op.stateful_batch(
        "decide", keyed, cached_state_builder(lambda st, item: step(st, item, venue))
    )
    outcomes = op.map("unkey", outcomes, lambda kv: kv[1])

    # Verdicts out at once; the lake records every decision that is not a replay.
    verdict_cmds = op.map("verdict_cmds", outcomes, verdict_commands)
    lake_output(
        "checkins_lake",
        op.filter_map(
            "checkin_rows",
            outcomes,
            lambda o: (
                ("c", rows) if (rows := [v for v in o.verdicts if not v["replayed"]]) else None
            ),
        ),
        "checkins",
    )
    lake_output(
        "participants_lake",
        op.filter_map(
            "participant_rows",
            outcomes,
            lambda o: ("p", o.participant_rows) if o.participant_rows else None,
        ),
        "participants",
    )

    # Dead letters: bad entries (parse) and changes to unknown participants (decide).
    dead_pairs = op.filter_map("op_dead", outcomes, lambda o: outcome_dead_letters(o) or None)
    dead_cmds = op.merge(
        "dead_cmds",
        op.filter_map("parse_dead", parsed, lambda p: p.dead or None),
        op.map("op_dead_cmds", dead_pairs, lambda pairs: [c for c, _ in pairs]),
    )
    dead_rows = op.merge(
        "dead_rows",
        op.filter_map(
            "parse_dead_rows", parsed, lambda p: ("d", p.dead_rows) if p.dead_rows else None
        ),
        op.map("op_dead_rows", dead_pairs, lambda pairs: ("d", [r for _, r in pairs])),
    )
    lake_output("dead_lake", dead_rows, "dead_letters")

    # Per-minute attendance on event time (offline uploads land in their minute).
    counter = TumblingCounter(MINUTE, lateness)
    window_in = op.merge(
        "window_in",
        op.filter_map(
            "window_groups",
            outcomes,
            lambda o: ("all", counts_by_window(o.counts, MINUTE)) if o.counts else None,
        ),
        op.map("window_ticks", beats, lambda _t: ("all", [])),
    )
    results = op.stateful_flat_map("attendance_windows", window_in, counter.step)
    rows = op.map("attendance_rows", results, lambda kr: _window_row(kr[1]))
    lake_output(
        "counts_lake", op.map("counts_keyed", rows, lambda r: ("a", [r])), "attendance_counts"
    )
    late = op.filter_map(
        "late_rows",
        results,
        lambda kr: (
            ("late", late_rows(kr[1].key, kr[1].group, "checkins"))
            if isinstance(kr[1], Late)
            else None
        ),
    )
    lake_output("late_lake", late, "late_records")
    live_counts = op.map(
        "live_counts", rows, lambda r: [("PUBLISH", keys.LIVE_ATTENDANCE_COUNTS, dumps(r))]
    )

    # Totals: exact (in the snapshot), published at most 4 times a second.
    totals_in = op.merge(
        "totals_in",
        op.map("totals_outcomes", outcomes, lambda o: ("all", o)),
        op.map("totals_ticks", live_ticks, lambda _t: ("all", None)),
    )
    totals = op.stateful_flat_map(
        "totals", totals_in, lambda st, item: totals_step(st, item, venue)
    )
    beat_cmds = op.map(
        "beat_cmds",
        beats,
        lambda t: [
            ("SET", keys.heartbeat_key(FLOW_NAME), dumps({"at": t, "pid": os.getpid()}), "EX", 5)
        ],
    )
    redis_cmds = op.merge(
        "redis_cmds",
        verdict_cmds,
        dead_cmds,
        live_counts,
        op.map("totals_cmds", totals, lambda kv: kv[1]),
        beat_cmds,
    )
    op.output("redis_out", redis_cmds, RedisCommandSink(url))
    return flow


def _window_row(res: Closed | Late) -> dict:
    if isinstance(res, Closed):
        return attendance_row(res.key, res.window_start, MINUTE, res.count, late=False)
    return attendance_row(res.key, res.group.window_start, MINUTE, res.group.count, late=True)


flow = build_flow()
