"""Organiser actions on one participant, shared by `run.py participants` and the HTTP API.

Nothing here writes state: revoke, reissue and restore are `ParticipantOp`s sent to
`participants:in`; the check-in flow applies them and updates `participants:index`, which is
what we read back to tell the caller whether the change has taken effect yet.
"""

from __future__ import annotations

import time
from typing import Literal

import redis

from core.participants import participant_index, send_ops
from core.records import ParticipantOp
from core.settings import Settings
from core.tokens import load_signer
from core.venue import venue_for

AdminOp = Literal["revoke", "reissue", "restore"]


def op_applied(op: AdminOp, before: dict, now: dict | None) -> bool:
    """Does the index entry `now` show the effect of `op` on the entry `before`?"""
    if now is None:
        return False
    if op == "revoke":
        return bool(now.get("revoked"))
    if op == "restore":
        return not now.get("revoked")
    return int(now.get("serial") or 0) > int(before.get("serial") or 0)


def no_op(op: AdminOp, before: dict) -> bool:
    """Would `op` change nothing (revoking a revoked participant, restoring an active one)?"""
    return (op == "revoke" and bool(before.get("revoked"))) or (
        op == "restore" and not before.get("revoked")
    )


def send_admin_op(r: redis.Redis, op: AdminOp, pid: str, reason: str | None = None) -> None:
    send_ops(r, [ParticipantOp(op=op, id=pid, reason=reason or None)])


def wait_admin_op(
    r: redis.Redis, op: AdminOp, pid: str, before: dict, timeout: float
) -> dict | None:
    """Poll `participants:index` until it shows the change; the new entry, or None on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        now = participant_index(r, pid)
        if op_applied(op, before, now):
            return now
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.1)


def mint_token(settings: Settings, pid: str, entry: dict) -> str:
    """The token the gates accept now for this participant (serial from the index entry)."""
    event_id = venue_for(settings.venue_config).event.id
    return load_signer(settings.data_dir).mint(event_id, pid, int(entry.get("serial") or 0))
