"""Dead letters: refused input kept with its reason, where it came from and its original bytes.

Each goes twice: to a capped Redis stream (`events:dead`, `checkins:dead`) for operators
watching live, and to the lake's `dead_letters` table, which keeps them for good.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from core import keys


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
