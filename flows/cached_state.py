"""A keyed Bytewax state whose snapshot is pickled only when it changed.

Measured: Bytewax 0.21 asks every key of a stateful operator for its snapshot at every epoch,
and `stateful_map` deep-copies the state each time. With one key per participant (50,000
participants, each a few small objects) that kept the check-in flow 98 % busy while idle and
held its throughput to 700 check-ins/s. Here an unchanged key hands back the bytes it pickled
when it last changed, so an epoch costs a pickle per *changed* key only.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from bytewax.operators import StatefulBatchLogic

S = TypeVar("S")
V = TypeVar("V")
W = TypeVar("W")

Step = Callable[[S | None, V], tuple[S | None, W]]


class CachedStateLogic(StatefulBatchLogic[V, W, bytes], Generic[S, V, W]):
    """Runs `step(state, value) -> (state, out)` for each value; None state discards the key."""

    def __init__(self, step: Step, resume: bytes | None):
        self._step = step
        self._state: S | None = pickle.loads(resume) if resume is not None else None
        self._snap = resume

    def on_batch(self, values: list[V]) -> tuple[Iterable[W], bool]:
        out = []
        for v in values:
            self._state, w = self._step(self._state, v)
            out.append(w)
        self._snap = None
        return out, (self.DISCARD if self._state is None else self.RETAIN)

    def snapshot(self) -> bytes:
        if self._snap is None:
            self._snap = pickle.dumps(self._state, protocol=pickle.HIGHEST_PROTOCOL)
        return self._snap


def cached_state_builder(step: Step) -> Callable[[bytes | None], CachedStateLogic]:
    """The `builder` for `op.stateful_batch`."""
    return lambda resume: CachedStateLogic(step, resume)
