"""Brakes on password guessing: progressive lockout per (name, address), and a per-address cap.

- (name, address): after `max_failures` wrong passwords in a row, that pair is locked for
  `lockout_s`; each further lockout doubles it up to `lockout_max_s`. A success resets it.
  Keyed by the pair (not the name alone) so a stranger cannot lock the organiser out from
  elsewhere by typing wrong passwords for their name.
- address: more than `ip_max_failures` failures (any names) within `ip_window_s` and the
  address is refused until the oldest of them leaves the window (stops sweeping many names).

A locked attempt is refused before the password is checked, so guessing on stays useless.
An attempt is counted when it BEGINS (`begin`), not when its ~100 ms Argon2 check ends: while
attempts are being checked they occupy places in both budgets, so parallel requests cannot
all slip past the limit before the first failure is recorded (measured before this: 60
concurrent wrong passwords for one name were all verified, none refused). `failure`,
`success` or `abandon` ends each begun attempt.
State is in the dashboard's memory: one dashboard process serves the venue, and a restart
forgetting it only gives an attacker one more round of `max_failures` guesses.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

PENDING_RETRY_S = 1.0  # Retry-After when only attempts still being checked fill the budget
MAX_TRACKED = 50_000  # pairs/addresses remembered; older idle entries are dropped beyond this


@dataclass
class _Pair:
    failures: int = 0
    lockouts: int = 0
    locked_until: float = 0.0
    touched: float = 0.0
    pending: int = 0  # attempts begun and not yet decided


@dataclass
class LoginThrottle:
    max_failures: int = 5
    lockout_s: float = 60.0
    lockout_max_s: float = 900.0
    ip_max_failures: int = 20
    ip_window_s: float = 600.0
    clock: Callable[[], float] = time.monotonic
    _pairs: dict[tuple[str, str], _Pair] = field(default_factory=dict)
    _ips: dict[str, deque[float]] = field(default_factory=dict)
    _ip_pending: dict[str, int] = field(default_factory=dict)

    def retry_after(self, username: str, ip: str) -> float:
        """Seconds until this name may try again from this address (0: it may now).
        Attempts still being checked count as failures here (`PENDING_RETRY_S` if only they
        stand in the way: they are decided within a fraction of a second)."""
        now = self.clock()
        wait = 0.0
        pair = self._pairs.get((username, ip))
        if pair is not None and pair.locked_until > now:
            wait = pair.locked_until - now
        elif pair is not None and pair.pending + pair.failures >= self.max_failures:
            wait = PENDING_RETRY_S  # only attempts still being checked fill the budget
        fails = self._ips.get(ip)
        pending = self._ip_pending.get(ip, 0)
        if fails is not None:
            while fails and fails[0] <= now - self.ip_window_s:
                fails.popleft()
            if len(fails) >= self.ip_max_failures:
                wait = max(wait, fails[0] + self.ip_window_s - now)
        if pending and len(fails or ()) + pending >= self.ip_max_failures:
            wait = max(wait, PENDING_RETRY_S)
        return wait

    def begin(self, username: str, ip: str) -> float:
        """Start an attempt: 0 and its place is taken (end it with `failure`, `success` or
        `abandon`), or the seconds to wait and nothing is taken."""
        wait = self.retry_after(username, ip)
        if wait > 0:
            return wait
        self._prune()
        pair = self._pairs.setdefault((username, ip), _Pair())
        pair.pending += 1
        pair.touched = self.clock()
        self._ip_pending[ip] = self._ip_pending.get(ip, 0) + 1
        return 0.0

    def abandon(self, username: str, ip: str) -> None:
        """A begun attempt that was never decided (the check raised)."""
        self._end(username, ip)

    def _end(self, username: str, ip: str) -> _Pair | None:
        pair = self._pairs.get((username, ip))
        if pair is not None and pair.pending > 0:
            pair.pending -= 1
        left = self._ip_pending.get(ip, 0) - 1
        if left > 0:
            self._ip_pending[ip] = left
        else:
            self._ip_pending.pop(ip, None)
        return pair

    def failure(self, username: str, ip: str) -> float:
        """Record a wrong password (ending the attempt begun for it); the lockout it started
        (0 if none)."""
        now = self.clock()
        self._end(username, ip)
        self._prune()
        pair = self._pairs.setdefault((username, ip), _Pair())
        pair.touched = now
        pair.failures += 1
        self._ips.setdefault(ip, deque()).append(now)
        if pair.failures < self.max_failures:
            return 0.0
        lock = min(self.lockout_max_s, self.lockout_s * (2**pair.lockouts))
        pair.failures, pair.lockouts, pair.locked_until = 0, pair.lockouts + 1, now + lock
        return lock

    def success(self, username: str, ip: str) -> None:
        """The right password (ending the attempt begun for it): the pair starts afresh, but
        other attempts of the pair still being checked keep their places."""
        pair = self._end(username, ip)
        if pair is not None and pair.pending:
            pair.failures, pair.lockouts, pair.locked_until = 0, 0, 0.0
        else:
            self._pairs.pop((username, ip), None)

    def _prune(self) -> None:
        if len(self._pairs) > MAX_TRACKED:
            now = self.clock()
            for k in [k for k, p in self._pairs.items() if p.locked_until < now and not p.pending]:
                del self._pairs[k]
        if len(self._ips) > MAX_TRACKED:
            cutoff = self.clock() - self.ip_window_s
            for k in [k for k, d in self._ips.items() if not d or d[-1] < cutoff]:
                del self._ips[k]
