"""The check-in flow: gate scans and participant changes → verdicts, attendance, the lake.

Run it with `uv run run.py flow checkins` (recovery on).

```
checkins:in ────┐  deciders (CHECKIN_DECIDERS processes, one share of participants each;
participants:in ┴─▶ parse, verify, decide ─┬─▶ one MULTI/EXEC per batch): verdicts on
                                           │   checkins:verdict:<gate>, verdict:<nonce>,
                                           │   checkins:verdicts; dead letters; participants:index
                                           └─▶ checkins:decided:<shard> ─▶ dataflow:
                        ┌─▶ lake: checkins, participants, dead_letters
                        ├─▶ totals: attendance:totals, live:attendance
                        └─▶ minute windows: attendance_counts, late_records
```

The decision (`flows/checkins_logic.step`) runs in the decider processes
(`flows/checkins_decider.py` says why: Bytewax's epoch barrier held verdicts up to a second),
each committing its batches' participant states, verdicts, outcomes and input offsets in one
Redis transaction. So a `kill -9` at any instant resumes from a consistent point: nobody is
admitted twice and no verdict is lost. The dataflow reads the committed outcomes as resumable
streams and writes the lake exactly once, so the lake always recounts to the totals.

The deciders are processes this flow starts itself, one per share, and that die with it
(`CHECKIN_DECIDERS`; its source `connectors.redis_staged_source` starts them): the supervisor
lists them as `checkins decider <shard>` (`run.py ps`), logs their starts and deaths, and
restarts them by restarting this flow (the rule and its reason: `flows/checkins_decider.py`).
"""

from __future__ import annotations

import gc
import os
import pickle
from datetime import timedelta

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from connectors.heartbeat import HeartbeatSource
from connectors.redis_sink import RedisCommandSink
from connectors.redis_staged_source import StagedStreamSource
from core import keys
from core.records import dumps
from core.settings import Settings, get_settings
from core.shutdown import install_stop_handlers
from core.venue import Venue, venue_for
from flows.attendance_totals import Totals, add, totals_step
from flows.checkins_logic import Outcome, attendance_row, counts_by_window
from flows.event_time import Closed, Late, TumblingCounter
from flows.events_logic import late_rows
from flows.lake_output import lake_output as flow_lake_output
from ops.processes import ChildStage, decider_argv

FLOW_NAME = "checkins"
MINUTE = timedelta(minutes=1)


def build_flow(s: Settings | None = None) -> Dataflow:
    """The check-in dataflow. Ends by freezing the objects made so far (modules, the venue,
    the sinks) out of the garbage collector's full collections, which otherwise walk them
    again and again while the flow runs (measured: 50-130 ms per full collection)."""
    s = s or get_settings()
    install_stop_handlers()
    url = s.effective_redis_url
    venue = venue_for(s.venue_config)
    lateness = timedelta(seconds=s.checkin_allowed_lateness_s)

    flow = Dataflow(FLOW_NAME)

    decided_keys = [keys.decided_key(i, s.stream_shards) for i in range(keys.decider_count(s))]

    def decider(decided: str) -> ChildStage:
        return ChildStage(decider_argv(decided_keys.index(decided)))

    # The decision and the verdicts happen in the decider processes (one per share of the
    # participants), outside the epoch barrier; the dataflow gets each committed batch of
    # outcomes from their `checkins:decided:<shard>` streams, one partition each. Each
    # partition starts its decider (`ChildStage`): the deciders are this flow's *parts*, listed
    # by the supervisor as `checkins decider <shard>` (`ops.processes.FLOW_SPECS`).
    batches = op.input(
        "decided",
        flow,
        StagedStreamSource(url, decided_keys, decider, retention=s.stream_retention_s),
    )
    decided = op.flat_map(
        "unpickle", batches, lambda b: [pickle.loads(d) for _, d in b.entries if d is not None]
    )
    beats = op.input("heartbeat", flow, HeartbeatSource())
    live_ticks = op.input("live_ticks", flow, HeartbeatSource(timedelta(milliseconds=250)))

    lake_output = flow_lake_output(s, beats, prefix="checkins.")
    # Every step below takes one committed batch (`Decided`: up to 1,000 outcomes), never one
    # outcome at a time: Bytewax charges each item a few µs per step, and there are seven.

    # The lake records every decision that is not a replayed answer to a retried nonce.
    lake_output(
        "checkins_lake",
        op.filter_map(
            "checkin_rows",
            decided,
            lambda d: (
                ("c", rows)
                if (rows := [v for o in d.outcomes for v in o.verdicts if not v["replayed"]])
                else None
            ),
        ),
        "checkins",
    )
    lake_output(
        "participants_lake",
        op.filter_map(
            "participant_rows",
            decided,
            lambda d: (
                ("p", rows)
                if (rows := [r for o in d.outcomes for r in o.participant_rows])
                else None
            ),
        ),
        "participants",
    )
    # Dead letters (bad entries, changes to unknown participants): Redis got them from the
    # decider with the batch; the lake gets them here.
    dead_rows = op.filter_map(
        "dead_rows", decided, lambda d: ("d", d.dead_rows) if d.dead_rows else None
    )
    lake_output("dead_lake", dead_rows, "dead_letters")

    # Per-minute attendance on event time (offline uploads land in their minute).
    counter = TumblingCounter(MINUTE, lateness)
    window_in = op.merge(
        "window_in",
        op.filter_map(
            "window_groups",
            decided,
            lambda d: (
                ("all", counts_by_window(counts, MINUTE))
                if (counts := [c for o in d.outcomes for c in o.counts])
                else None
            ),
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
        op.filter_map(
            "totals_outcomes", decided, lambda d: ("all", d.outcomes) if d.outcomes else None
        ),
        op.map("totals_ticks", live_ticks, lambda _t: ("all", None)),
    )
    totals = op.stateful_flat_map(
        "totals", totals_in, lambda st, item: _totals_step(st, item, venue)
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
        live_counts,
        op.map("totals_cmds", totals, lambda kv: kv[1]),
        beat_cmds,
    )
    op.output("redis_out", redis_cmds, RedisCommandSink(url))
    gc.freeze()
    return flow


def _totals_step(
    st: Totals | None, outcomes: list[Outcome] | None, venue: Venue
) -> tuple[Totals, list[list[tuple]]]:
    """`totals_step` over a batch's outcomes (None: a live tick)."""
    if outcomes is None:
        return totals_step(st, None, venue)
    st = st or Totals()
    for o in outcomes:
        add(st, o)
    return st, []


def _window_row(res: Closed | Late) -> dict:
    if isinstance(res, Closed):
        return attendance_row(res.key, res.window_start, MINUTE, res.count, late=False)
    return attendance_row(res.key, res.group.window_start, MINUTE, res.group.count, late=True)


flow = build_flow()
