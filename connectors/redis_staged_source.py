"""A resumable source over a Redis stream that a background *stage* of this process fills.

Some work must not wait for Bytewax's epoch boundaries (at each one, no input is read until
every snapshot is written — see `flows/checkins_decider.py` for the measured pause). Such a
stage runs beside the dataflow (today a child process of the flow: `ops.processes.ChildStage`),
commits its results to a Redis stream atomically with its own state and offsets, and the
dataflow reads that stream like any other resumable stream (`redis_streams`): the snapshot is
the last entry id emitted.

Each stream is one partition with its own stage, so exactly one stage per stream runs in a
cluster, on the worker that owns the partition; it starts when the partition is built and
stops when it closes. A stage that dies makes `next_batch` raise, so the flow crashes and its
supervisor restarts it with its stages. Stages are not hidden: each flow that has them lists
them as parts in `ops.processes.FLOW_SPECS`, and the supervisor reports them by name.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Protocol

from bytewax.inputs import FixedPartitionedSource

from connectors.redis_streams import StreamBatch, StreamPartition
from core.shutdown import stop_requested


class Stage(Protocol):
    error: BaseException | None

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def alive(self) -> bool: ...


class _StagedPartition(StreamPartition):
    def __init__(self, stage: Stage, *args: object):
        super().__init__(*args)  # type: ignore[arg-type]
        self._stage = stage
        stage.start()

    def next_batch(self) -> list[StreamBatch]:
        if stop_requested():
            raise StopIteration
        if self._stage.error is not None:
            raise RuntimeError(f"stage failed: {self._stage.error!r}") from self._stage.error
        if not self._stage.alive():
            raise RuntimeError("stage stopped unexpectedly")
        return super().next_batch()

    def close(self) -> None:
        self._stage.stop()
        super().close()


class StagedStreamSource(FixedPartitionedSource[StreamBatch, str]):
    """One partition per stream in `keys`: each starts `stage_factory(key)` and reads the
    stream that stage writes, from the snapshot on."""

    def __init__(
        self,
        url: str,
        keys: list[str],
        stage_factory: Callable[[str], Stage],
        count: int = 100,
        idle: timedelta = timedelta(milliseconds=10),
        retention: float = 3600.0,
    ):
        if not keys:
            raise ValueError("StagedStreamSource needs at least one stream key")
        self.url, self.keys, self.stage_factory = url, keys, stage_factory
        self.count, self.idle, self.retention = count, idle, retention

    def list_parts(self) -> list[str]:
        return list(self.keys)

    def build_part(self, step_id: str, for_part: str, resume_state: str | None) -> _StagedPartition:
        return _StagedPartition(
            self.stage_factory(for_part),
            self.url,
            for_part,
            resume_state or "0-0",
            self.count,
            self.idle,
            self.retention,
        )
