"""Brakes on password guessing: progressive lockout per (name, address), and a per-address cap.

- (name, address): after `max_failures` wrong passwords in a row, that pair is locked for
  `lockout_s`; each further lockout doubles it up to `lockout_max_s`. A success resets it.
  Keyed by the pair (not the name alone) so a stranger cannot lock the organiser out from
  elsewhere by typing wrong passwords for their name.
- address: more than `ip_max_failures` failures (any names) within `ip_window_s` and the
  address is refused until the oldest of them leaves the window (stops sweeping many names).

A locked attempt is refused before the password is checked, so guessing on stays useless.
State is in the dashboard's memory: one dashboard process serves the venue, and a restart
forgetting it only gives an attacker one more round of `max_failures` guesses.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_TRACKED = 50_000  # pairs/addresses remembered; older idle entries are dropped beyond this


@dataclass
class _Pair:
    failures: int = 0
    lockouts: int = 0
    locked_until: float = 0.0
    touched: float = 0.0


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

    def retry_after(self, username: str, ip: str) -> float:
        """Seconds until this name may try again from this address (0: it may now)."""
        now = self.clock()
        wait = 0.0
        pair = self._pairs.get((username, ip))
        if pair is not None and pair.locked_until > now:
            wait = pair.locked_until - now
        fails = self._ips.get(ip)
        if fails is not None:
            while fails and fails[0] <= now - self.ip_window_s:
                fails.popleft()
            if len(fails) >= self.ip_max_failures:
                wait = max(wait, fails[0] + self.ip_window_s - now)
        return wait

    def failure(self, username: str, ip: str) -> float:
        """Record a wrong password; the lockout it started (0 if none)."""
        now = self.clock()
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
        self._pairs.pop((username, ip), None)

    def _prune(self) -> None:
        if len(self._pairs) > MAX_TRACKED:
            now = self.clock()
            for k in [k for k, p in self._pairs.items() if p.locked_until < now]:
                del self._pairs[k]
        if len(self._ips) > MAX_TRACKED:
            cutoff = self.clock() - self.ip_window_s
            for k in [k for k, d in self._ips.items() if not d or d[-1] < cutoff]:
                del self._ips[k]
