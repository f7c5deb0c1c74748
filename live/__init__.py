"""The dashboard process's Redis side: live models fed by pub/sub, and the writes it makes.

- `live.redis` — the process's one Redis client, `xadd_json`, the activity log
  (`log_activity`);
- `live.subscriber` — the one subscribe/reconnect/seed/throttle mechanism every live model
  uses (`live.background` runs its tasks);
- the live models: `live.events` (events feed and counts), `live.attendance` (totals, arrivals,
  gate verdicts, and the verdict waits of `POST /api/checkins`), `live.alarms` (open alarms),
  `live.video_hub` (camera frames, rooms) with `live.video_rooms` (rooms, presence, commands).

Why not inside `ui/`: the HTTP routes use the same models (a check-in request waits on the
verdict subscriber, `/video/…` streams from the hub, a login is written to the activity log),
so they sit below both `api/` and `ui/`; they import neither, nor `auth/`
(`tests/test_imports.py`).
"""
