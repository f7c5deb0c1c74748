"""Who may do what, in one place: users, API keys, sessions, logins and the route matrix.

- `auth.permissions` — the session's user, the ONE permission matrix (`ROUTES`, roles,
  permissions) and the checks built on it;
- `auth.middleware` — the gate every request passes (the matrix, enforced before routing;
  cross-site checks from `auth.origin`);
- `auth.login` — checking a login (throttled by `auth.throttle`), logout, a fresh session id,
  the audit trail; its HTTP routes are `api.session`, its page `ui.pages.login_page`;
- `auth.users`, `auth.keys` (stores over `auth.store`), `auth.settings` (sessions, lockouts,
  allowed origins).

Layering (`tests/test_imports.py`): imported by `api/`, `ui/` and `cli/`; imports `live/`
(the activity log), `storage/` (pseudonym key) and `core/` only.
"""
