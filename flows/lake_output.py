"""Writing a flow's streams into lake tables, the same way in every flow.

Each table gets a `LakeSink` (exactly once; see `connectors/lake_sink.py`) with the settings'
flush rules, plus one empty item per clock beat: Bytewax snapshots a sink partition only in
periods when it received items, so without the beats the last rows before a quiet period would
wait for the next input to reach the lake.
"""

from __future__ import annotations

from collections.abc import Callable

import bytewax.operators as op

from connectors.lake_sink import LakeSink
from core.lake_location import lake_from_settings
from core.settings import Settings

LakeOutput = Callable[[str, op.Stream, str], None]


def lake_output(s: Settings, beats: op.Stream, prefix: str = "") -> LakeOutput:
    """`out(step_id, items, table)` writes `(key, rows)` items into `table`. `prefix` keeps
    this flow's writers apart from another flow's in a table both write."""
    lake = lake_from_settings(s)

    def out(step_id: str, items: op.Stream, table: str) -> None:
        sink = LakeSink(
            lake,
            table,
            flush_rows=s.lake_flush_rows,
            flush_age=s.lake_flush_age_s,
            prefix=prefix,
        )
        ticks = op.flat_map(f"{step_id}_ticks", beats, lambda _t: sink.tick_items())
        op.output(step_id, op.merge(f"{step_id}_in", items, ticks), sink)

    return out
