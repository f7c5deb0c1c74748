"""The HTTP API for machines (gates, sensors, cameras, scripts): one router per resource.

- `api.registry` — the ONE list of routers and `register(app)`, which mounts them and the
  permission middleware; `ui.main` calls it.
- `api.http` — what every router shares: `require_api_key`, `read_body`/`limited` (bounded
  bodies, 413), `Refusal`, the Redis client and `redis_reason`.
- one module per resource, each with `router = Router(...)` (`api.http`) and decorated handlers:
  `health`, `events`, `checkins`, `participants`, `reports`, `video`, `logs`, `session`
  (login/logout over HTTP), `alarms`, `analytics` (free SQL), `docs` (/api/docs, OpenAPI);
  `models` holds the response models the OpenAPI description is read from.

Layering (checked by `tests/test_imports.py`): `api/` is imported by `ui/` (pages call the same
functions as the routes, e.g. `api.checkins.submit_checkin`) and imports `auth/`, `live/`,
`storage/`, `ops/`, `core/` — never `ui/`.
"""
