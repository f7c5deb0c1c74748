"""What each alarm rule kind decides for one series (rule, source), as plain functions.

Each `*_decide`/`*_observe` function owns one decision and returns its outcome by name, so the
tests can state the semantics directly (no Bytewax, no Redis). They only move a series between
"not firing" and "firing"; what that means for an alarm (raise, repeat, clear, the anti-flap
latch after a person's clear) is `flows.alarms_lifecycle`'s business.

Time: durations (pending period, hysteresis, windows) are measured in **event time** (`ts`);
absence is measured on the arrival clock (see `flows.alarms_clock`). Out-of-order data is
handled deliberately, never dropped silently: within the rule's `lateness_s` it still counts
(it can break a running pending or clearing period; it is counted in its still-open window);
beyond it the outcome is `too_late` and the caller records it in `late_records`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from core.alarms import ThresholdRule

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# --- threshold: pending period + hysteresis ----------------------------------------------------

Phase = Literal["ok", "pending", "firing", "clearing"]
ThresholdOutcome = Literal[
    "too_late",  # older than the newest reading by more than lateness_s: not evaluated
    "pending",  # first breaching reading: the pending period starts
    "pending_reset",  # a reading inside the pending period was not breaching: back to ok
    "fired",  # breaching for at least for_s (or for_s == 0): the alarm condition holds
    "held",  # breaching while firing: a repeat of the same alarm
    "clearing",  # firing, and a reading is back past clear_at: the clear period starts
    "clearing_reset",  # a reading inside the clear period is beyond clear_at again: firing
    "resolved",  # past clear_at for at least clear_for_s: the condition is over
    "unchanged",  # nothing to decide (ok and fine, pending and not yet long enough, ...)
]


@dataclass(slots=True)
class ThresholdSeries:
    phase: Phase = "ok"
    since: datetime | None = None  # start of the pending or clearing period
    newest: datetime | None = None  # newest reading's event time


def threshold_decide(
    rule: ThresholdRule, s: ThresholdSeries, value: float, ts: datetime
) -> ThresholdOutcome:
    """The one function that decides a threshold rule's next phase for one reading."""
    lateness = timedelta(seconds=rule.lateness_s)
    if s.newest is not None and ts < s.newest:
        return _threshold_late(rule, s, value, ts, lateness)
    s.newest = ts
    breach = rule.breaches(value)
    if s.phase == "ok":
        if not breach:
            return "unchanged"
        s.phase, s.since = "pending", ts
        if rule.for_s <= 0:
            s.phase, s.since = "firing", None
            return "fired"
        return "pending"
    if s.phase == "pending":
        if not breach:
            s.phase, s.since = "ok", None
            return "pending_reset"
        if (ts - s.since).total_seconds() >= rule.for_s:  # type: ignore[operator]
            s.phase, s.since = "firing", None
            return "fired"
        return "unchanged"
    if s.phase == "firing":
        if rule.cleared(value):
            s.phase, s.since = "clearing", ts
            if rule.clear_for_s <= 0:
                s.phase, s.since = "ok", None
                return "resolved"
            return "clearing"
        return "held" if breach else "unchanged"
    # clearing
    if not rule.cleared(value):
        s.phase, s.since = "firing", None
        return "held" if breach else "clearing_reset"
    if (ts - s.since).total_seconds() >= rule.clear_for_s:  # type: ignore[operator]
        s.phase, s.since = "ok", None
        return "resolved"
    return "unchanged"


def _threshold_late(
    rule: ThresholdRule, s: ThresholdSeries, value: float, ts: datetime, lateness: timedelta
) -> ThresholdOutcome:
    """An out-of-order reading cannot rewrite the past, but within the lateness it is evidence
    that a running period did not hold continuously."""
    if ts < s.newest - lateness:  # type: ignore[operator]
        return "too_late"
    breach = rule.breaches(value)
    in_period = s.since is not None and ts >= s.since
    if s.phase == "pending" and not breach and in_period:
        s.phase, s.since = "ok", None
        return "pending_reset"
    if s.phase == "clearing" and not rule.cleared(value) and in_period:
        s.phase, s.since = "firing", None
        return "held" if breach else "clearing_reset"
    if s.phase == "firing" and breach:
        return "held"
    return "unchanged"


# --- windowed counts: rate, gate congestion, refused bursts --------------------------------------

WindowOutcome = Literal[
    "too_late",  # its window has closed (watermark passed): not counted; reported as late
    "duplicate",  # the same check-in/verdict again (at-least-once input): counted once
    "counted",  # counted; no change of phase
    "fired",  # this count put `for_n` windows in a row above the limit
    "held",  # counted in a window above the limit while firing: a repeat
]


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """A windowed rule for one series: fire when `for_n` windows in a row hold more than
    `limit`; resolve after `clear_n` closed windows in a row hold at most `clear_limit`."""

    length: timedelta
    limit: float
    clear_limit: float
    for_n: int = 1
    clear_n: int = 1


@dataclass(slots=True)
class WindowSeries:
    open: dict[datetime, int] = field(default_factory=dict)
    seen: dict[datetime, set[str]] = field(default_factory=dict)
    closed: dict[datetime, int] = field(default_factory=dict)  # the last few closed windows
    closed_until: datetime | None = None  # every window starting before this has closed
    firing: bool = False
    fired_in: datetime | None = None  # the window that made it fire (earlier ones can't clear)
    below_run: int = 0


def window_start(ts: datetime, length: timedelta) -> datetime:
    return EPOCH + ((ts - EPOCH) // length) * length


def _count(s: WindowSeries, ws: datetime) -> int:
    return s.open.get(ws, s.closed.get(ws, 0))


def _above_run(spec: WindowSpec, s: WindowSeries, last: datetime) -> bool:
    return all(_count(s, last - k * spec.length) > spec.limit for k in range(spec.for_n))


def window_observe(
    spec: WindowSpec,
    s: WindowSeries,
    ts: datetime,
    watermark: datetime | None,
    dedupe: str | None = None,
) -> WindowOutcome:
    """The one function that counts one matching record and decides whether it fires."""
    ws = window_start(ts, spec.length)
    if (s.closed_until is not None and ws < s.closed_until) or (
        watermark is not None and ws + spec.length <= watermark
    ):
        return "too_late"
    if dedupe is not None:
        ids = s.seen.setdefault(ws, set())
        if dedupe in ids:
            return "duplicate"
        ids.add(dedupe)
    n = s.open[ws] = s.open.get(ws, 0) + 1
    if s.firing:
        return "held" if n > spec.limit else "counted"
    # A late record may complete a run ending in a later (still open) window too.
    for w in sorted({ws, max(s.open)}):
        if _above_run(spec, s, w):
            s.firing, s.fired_in, s.below_run = True, w, 0
            return "fired"
    return "counted"


def window_close(spec: WindowSpec, s: WindowSeries, watermark: datetime | None) -> list[datetime]:
    """Close every window the watermark has passed (while firing, an empty window counts as
    0 towards clearing); return the end of each window after which the series resolved."""
    if watermark is None:
        return []
    resolved: list[datetime] = []
    limit = window_start(watermark, spec.length)  # windows starting before this have ended
    w = s.closed_until
    while True:
        due = [k for k in s.open if k < limit]
        if due and (w is None or (not s.firing and min(due) > w)):
            w = min(due)  # not firing: empty windows in between decide nothing
        if w is None or w >= limit or (not s.firing and not due):
            break
        n = s.open.pop(w, 0)
        s.seen.pop(w, None)
        s.closed[w] = n
        if s.firing and w >= s.fired_in:  # type: ignore[operator]
            s.below_run = s.below_run + 1 if n <= spec.clear_limit else 0
            if s.below_run >= spec.clear_n:
                s.firing, s.below_run = False, 0
                resolved.append(w + spec.length)
        w += spec.length
    s.closed_until = limit if s.closed_until is None else max(s.closed_until, limit)
    for k in sorted(s.closed)[: -max(spec.for_n, 2)]:
        del s.closed[k]
    return resolved


# --- absence: no data for after_s --------------------------------------------------------------

AbsenceOutcome = Literal["silent", "back", "seen", "ok", "still_silent"]


@dataclass(slots=True)
class AbsenceSeries:
    last: datetime  # arrival time of the newest data from the source (or when watching began)
    silent: bool = False


def absence_seen(s: AbsenceSeries, arrival: datetime) -> AbsenceOutcome:
    """Data arrived: a silent source is back (`back` resolves the alarm)."""
    if arrival > s.last:
        s.last = arrival
    if s.silent:
        s.silent = False
        return "back"
    return "seen"


def absence_check(after_s: float, s: AbsenceSeries, now: datetime) -> AbsenceOutcome:
    """The one function that decides whether a source has been silent for too long."""
    if s.silent:
        return "still_silent"
    if (now - s.last).total_seconds() > after_s:
        s.silent = True
        return "silent"
    return "ok"


# --- raise on one event, clear on another ------------------------------------------------------

RaiseClearOutcome = Literal[
    "fired", "held", "rearmed", "resolved", "too_late", "unchanged"
]  # fmt: skip


@dataclass(slots=True)
class RaiseClearSeries:
    active: bool = False
    newest: datetime | None = None
    last_raise: datetime | None = None


def raise_clear_decide(
    s: RaiseClearSeries, raises: bool, ts: datetime, latched: bool = False, rearm_s: float = 60
) -> RaiseClearOutcome:
    """An event older than the newest one seen for the series cannot undo it (a stale
    `camera.error` must not re-raise after `camera.recovered`): it is `too_late`. While a
    person's clear holds (`latched`), a raise event after a quiet gap of `rearm_s` is a new
    occurrence (`rearmed`): the source may have recovered unseen (its recovery event lost)."""
    if s.newest is not None and ts < s.newest:
        return "too_late"
    s.newest = ts
    if raises:
        previous, s.last_raise = s.last_raise, ts
        if not s.active:
            s.active = True
            return "fired"
        if latched and previous is not None and (ts - previous).total_seconds() >= rearm_s:
            return "rearmed"
        return "held"
    if s.active:
        s.active = False
        return "resolved"
    return "unchanged"
