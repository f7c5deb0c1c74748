"""Dead letters: refused input kept with its reason, where it came from and its original bytes.

Each goes twice: to a capped Redis stream (`events:dead`, `checkins:dead`) for operators
watching live, and to the lake's `dead_letters` table, which keeps them for good.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core import keys
from core.records import reason_of


def dead_letter(
    stream: str, reason: str, origin: str, origin_id: str, data: bytes | None, at: datetime
) -> tuple[tuple, dict[str, Any]]:
    """The Redis command and the lake row for one refused entry."""
    cmd = (
        "XADD", stream, "MAXLEN", "~", keys.DEAD_MAXLEN, "*",
        "reason", reason, "origin", origin, "origin_id", origin_id,
        "data", data if data is not None else b"",
    )  # fmt: skip
    row = {
        "origin": origin,
        "origin_id": origin_id,
        "reason": reason,
        "data": data,
        "received_at": at,
    }
    return cmd, row


def entry_data(data: bytes | None, max_bytes: int | None = None) -> bytes:
    """The entry's `data` field; a ValueError (the dead letter's reason) if it has none or it
    is larger than `max_bytes`."""
    if data is None:
        raise ValueError("stream entry has no 'data' field")
    if max_bytes is not None and len(data) > max_bytes:
        raise ValueError(f"entry is {len(data)} bytes, more than the limit {max_bytes}")
    return data


@dataclass(slots=True, kw_only=True)
class DeadLetters:
    """The refused entries of one input batch: Redis commands (the capped `*:dead` stream) and
    rows for the lake's `dead_letters` table. Each flow's parsed batch extends it."""

    dead: list[tuple] = field(default_factory=list)
    dead_rows: list[dict[str, Any]] = field(default_factory=list)

    def refuse(
        self, stream: str, exc: Exception, origin: str, origin_id: str, data: bytes | None,
        at: datetime,
    ) -> None:  # fmt: skip
        """Keep one refused entry, with the reason `exc` gives (see `dead_letter`)."""
        cmd, row = dead_letter(stream, reason_of(exc), origin, origin_id, data, at)
        self.dead.append(cmd)
        self.dead_rows.append(row)
