"""What a person does to an alarm on the dashboard: acknowledge or clear it.

Actions go through the `alarms:commands` stream (the flow applies each exactly once, by
`command_id`). The permission is checked HERE, on the server, whatever the page showed: a
hidden button is a convenience, the refusal is the rule. The open alarms are
`live.alarms.model`.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import RedisError

from auth.permissions import can
from core import keys
from core.alarms import AlarmCommand
from live import alarms
from live.redis import redis_client

log = logging.getLogger(__name__)


class ActionRefused(Exception):
    """The action is not sent; the message says why (permission, state, Redis)."""


def check_action(user: Any, action: str, alarm_id: str) -> dict[str, Any]:
    """The alarm if `user` may `action` it now; else ActionRefused with the reason."""
    if action not in alarms.PERMISSION:
        raise ActionRefused(f"unknown action {action!r}")
    if user is None:
        raise ActionRefused("log in first")
    if not can(user, alarms.PERMISSION[action]):
        raise ActionRefused(f"the role {user.role!r} may not {action} alarms")
    alarm = alarms.model.open.get(alarm_id)
    if alarm is None:
        raise ActionRefused(f"no open alarm {alarm_id!r} (already cleared and acknowledged?)")
    if action == "ack" and not alarms.is_unacked(alarm):
        raise ActionRefused(f"{alarm_id} is already acknowledged")
    if action == "clear" and not alarms.is_active(alarm):
        raise ActionRefused(f"{alarm_id} is already cleared")
    return alarm


def command(user: Any, action: alarms.Action, alarm_id: str, comment: str | None) -> AlarmCommand:
    """The `alarms:commands` entry (validated by the same model the flow reads it with)."""
    return AlarmCommand(
        command_id=str(uuid.uuid4()),
        action=action,
        alarm_id=alarm_id,
        by=user.username,
        role=user.role,
        comment=(comment or "").strip()[:2000] or None,
        at=datetime.now(UTC),
    )


async def send_action(user: Any, action: str, alarm_id: str, comment: str | None = None) -> str:
    """Check, then XADD the command; the stream entry id. ActionRefused with the reason."""
    check_action(user, action, alarm_id)
    cmd = command(user, action, alarm_id, comment)  # type: ignore[arg-type]
    try:
        entry = await redis_client().xadd(
            keys.ALARMS_COMMANDS, {"data": cmd.model_dump_json(exclude_none=True)}
        )
    except (RedisError, OSError, TimeoutError) as exc:
        raise ActionRefused(f"not sent, Redis unavailable: {exc}") from exc
    log.info("alarms: %s %s by %s (%s)", action, alarm_id, user.username, user.role)
    return entry.decode() if isinstance(entry, bytes) else str(entry)
