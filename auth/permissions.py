"""Who may do what: the session's user, ONE permission matrix, and the checks built on it.

Everything that decides access reads the two tables below:
- `PERMISSIONS`: permission → roles holding it (pages call `can(current_user(), perm)` before
  every action, on the server, not only to hide a button);
- `ROUTES`: every HTTP/WebSocket route of the app → what it needs: nothing (public), a
  logged-in user holding a permission, and/or an API key of some kinds. The middleware
  (`auth.middleware`) enforces it for every request before any handler runs; a route that
  is missing from it is refused for everyone (fail closed), and `tests/test_auth_matrix.py`
  fails when a route of the running app is not listed.

Sessions live in NiceGUI's `app.storage.user` (server side, keyed by the signed session
cookie): `{"auth": {"username", "login_at", "seen_at"}}`. The role is NOT kept there: it is
read from the users file at each request, so a role change or a removal applies at once, and
a password change voids older sessions (`UserRecord.sessions_after`).
"""

from __future__ import annotations

import re
import time
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.routing import compile_path

from auth.keys import KEY_KINDS, ApiKey, KeyKind, key_store
from auth.settings import get_auth_settings
from auth.users import ROLES, Role, User, user_store
from core.settings import get_settings
from storage.sql_sandbox import pseudonym_key

__all__ = [
    "PERMISSIONS",
    "ROLES",
    "ROUTES",
    "Role",
    "Rule",
    "User",
    "can",
    "current_user",
    "require",
]

# --- permissions --------------------------------------------------------------------------------

_ALL: frozenset[Role] = frozenset(ROLES)
_ORG: frozenset[Role] = frozenset({"organiser"})
_ORG_OP: frozenset[Role] = frozenset({"organiser", "operator"})
_ORG_AN: frozenset[Role] = frozenset({"organiser", "analyst"})

#: permission → the roles that hold it. The one place roles are decided.
PERMISSIONS: dict[str, frozenset[Role]] = {
    "overview.view": _ALL,  # /  (KPIs, live charts, active alarms)
    "events.view": _ALL,  # /events, GET /api/events
    "attendance.view": _ALL,  # /attendance
    "alarms.view": _ALL,  # /alarms, alarm list and history
    "alarms.ack": _ORG_OP,  # acknowledge an alarm
    "alarms.clear": _ORG,  # clear an alarm by hand
    "analytics.view": _ORG_AN,  # /analytics ready-made queries
    "analytics.sql": _ORG_AN,  # free (read-only) SQL on the lake
    "report.view": _ORG_AN,  # /report and its CSV/HTML downloads
    "logs.view": _ORG_AN,  # GET /logs (activity, incl. logins)
    "cameras.view": _ORG_OP,  # /cameras, live video (WS, MJPEG, snapshots)
    "cameras.control": _ORG_OP,  # start/stop capture
    "rooms.view": _ORG_OP,  # /rooms, /rooms/{id}
    "rooms.manage": _ORG_OP,  # create/rename rooms, choose their cameras
    "gate.scan": _ORG_OP,  # /gate: scan tickets
    "participants.view": _ORG,  # /participants, QR downloads (personal data)
    "participants.manage": _ORG,  # import, revoke, reissue, restore
    "users.manage": _ORG,  # /users: users, roles, passwords, API keys
    "notify.subscribe": _ALL,  # /notifications: one's own subscription, a test to oneself
    "notify.manage": _ORG,  # notification targets' health, tests, every attempt
}

PUBLIC = "public"  #: a Rule.perm: no login needed
LOGIN = "login"  #: a Rule.perm: any logged-in user


def roles_for(permission: str) -> frozenset[Role]:
    if permission == LOGIN:
        return _ALL
    return PERMISSIONS.get(permission, frozenset())


def can(user: User | None, permission: str) -> bool:
    """True when `user` holds `permission`; unknown permissions are refused (fail closed)."""
    if permission == PUBLIC:
        return True
    if user is None:
        return False
    return user.role in roles_for(permission)


def personal_key(user: User | None) -> bytes | None:
    """None (personal columns in clear, `storage.tables.Table.personal`) for roles that may see
    participants' personal data; everyone else gets the deployment's pseudonym key, and reads
    those columns as stable keyed pseudonyms (free SQL, `GET /logs`)."""
    if can(user, "participants.view"):
        return None
    s = get_settings()
    return pseudonym_key(s.data_dir, s.pseudonym_key)


# --- the route matrix ---------------------------------------------------------------------------

_DEVICE: frozenset[KeyKind] = frozenset({"device", "admin"})
_GATE: frozenset[KeyKind] = frozenset({"gate", "admin"})
_ADMIN: frozenset[KeyKind] = frozenset({"admin"})
_NONE: frozenset[KeyKind] = frozenset()


@dataclass(frozen=True)
class Rule:
    """What one route needs. `path` is the route's template exactly as registered (or a prefix
    ending in `*`); `methods` includes `WS` for WebSockets. `perm`: `PUBLIC`, `LOGIN`, a
    permission, or None (API key only). `keys`: API key kinds also accepted (`admin` keys and
    `API_KEYS` grant every kind). `page`: a browser page or download (no login → redirect to
    /login?next=…) rather than an API (no login → 401 JSON)."""

    path: str
    methods: frozenset[str]
    perm: str | None
    keys: frozenset[KeyKind] = _NONE
    page: bool = False
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.path.endswith("*"):
            rx = re.compile(re.escape(self.path[:-1]) + ".*")
        else:
            rx = compile_path(self.path)[0]
        object.__setattr__(self, "regex", rx)
        assert self.perm is None or self.perm in (PUBLIC, LOGIN) or self.perm in PERMISSIONS
        assert self.keys <= set(KEY_KINDS)

    def matches(self, method: str, path: str) -> bool:
        m = "GET" if method == "HEAD" else method
        return ("*" in self.methods or m in self.methods) and bool(self.regex.fullmatch(path))

    @property
    def roles(self) -> frozenset[Role]:
        if self.perm is None or self.perm == PUBLIC:
            return frozenset() if self.perm is None else _ALL
        return roles_for(self.perm)


def _r(
    methods: str, path: str, perm: str | None, keys: frozenset[KeyKind] = _NONE, page: bool = False
) -> Rule:
    return Rule(path, frozenset(methods.split(",")), perm, keys, page)


def _page(path: str, perm: str) -> Rule:
    return _r("GET", path, perm, page=True)


#: Every route of the app, first match wins (literal paths before templates that match them).
ROUTES: tuple[Rule, ...] = (
    # open: login, health, NiceGUI's own machinery, static assets (code, no data)
    _r("GET", "/health", PUBLIC),
    _r("GET", "/api/health", PUBLIC),
    _r("GET", "/login", PUBLIC, page=True),
    _r("POST", "/api/auth/login", PUBLIC),
    _r("POST", "/api/auth/logout", PUBLIC),
    _r("*", "/_nicegui/*", PUBLIC),
    _r("*", "/_nicegui_ws/*", PUBLIC),
    _r("GET", "/vf-static/{path:path}", PUBLIC),
    _r("GET", "/video/player.js", PUBLIC),
    _r("GET", "/favicon.ico", PUBLIC),
    # the session itself, and the route listing the tests read
    _r("GET", "/api/auth/me", LOGIN),
    _r("GET", "/api/auth/routes", "users.manage"),
    # pages
    _page("/", "overview.view"),
    _page("/events", "events.view"),
    _page("/attendance", "attendance.view"),
    _page("/alarms", "alarms.view"),
    _page("/analytics", "analytics.view"),
    _page("/gate", "gate.scan"),
    _page("/participants", "participants.view"),
    _page("/report", "report.view"),
    _page("/cameras", "cameras.view"),
    _page("/rooms", "rooms.view"),
    _page("/rooms/{room_id}", "rooms.view"),
    _page("/users", "users.manage"),
    _page("/notifications", "notify.subscribe"),
    # the pages' downloads (browser links: served like the pages)
    _page("/participants/qr.zip", "participants.view"),
    _page("/participants/{pid}/qr.png", "participants.view"),
    _page("/participants/{pid}/qr.svg", "participants.view"),
    _page("/reports/attendance.csv", "report.view"),
    _page("/reports/attendance.html", "report.view"),
    # free SQL over the lake (analytics page's box, for scripts): login only, no keys
    _r("POST", "/api/analytics/sql", "analytics.sql"),
    # events and activity: devices write, people read
    _r("POST", "/api/events", None, _DEVICE),
    _r("POST", "/api/events/batch", None, _DEVICE),
    _r("GET", "/api/events", "events.view", _ADMIN),
    _r("POST", "/logs", None, _DEVICE),
    _r("GET", "/logs", "logs.view", _ADMIN),
    # gates
    _r("POST", "/api/checkins", None, _GATE),
    _r("POST", "/api/checkins/batch", None, _GATE),
    _r("GET", "/api/checkins/{nonce}", None, _GATE),
    _r("GET", "/api/tokens/public-key", "gate.scan", _GATE),
    # participants and reports (organiser scripts)
    _r("POST", "/api/participants", None, _ADMIN),
    _r("GET", "/api/participants", None, _ADMIN),
    _r("GET", "/api/participants/qr.zip", None, _ADMIN),
    _r("GET", "/api/participants/{pid}", None, _ADMIN),
    _r("GET", "/api/participants/{pid}/qr.png", None, _ADMIN),
    _r("GET", "/api/participants/{pid}/qr.svg", None, _ADMIN),
    _r("POST", "/api/participants/{pid}/revoke", None, _ADMIN),
    _r("POST", "/api/participants/{pid}/reissue", None, _ADMIN),
    _r("POST", "/api/participants/{pid}/restore", None, _ADMIN),
    _r("GET", "/api/reports/attendance.csv", None, _ADMIN),
    _r("GET", "/api/reports/attendance.json", None, _ADMIN),
    # video and cameras
    _r("WS", "/video/ws/{camera_id}", "cameras.view", _ADMIN),
    _r("GET", "/video/{camera_id}.mjpeg", "cameras.view", _ADMIN),
    _r("GET", "/video/{camera_id}.jpg", "cameras.view", _ADMIN),
    _r("GET", "/api/cameras", "cameras.view", _ADMIN),
    _r("GET", "/api/cameras/{camera_id}", "cameras.view", _ADMIN),
    _r("POST", "/api/cameras/{camera_id}/{action}", None, _ADMIN),
    # alarms (api.alarms): people as on /alarms, or an admin key
    _r("GET", "/api/alarms", "alarms.view", _ADMIN),
    _r("GET", "/api/alarms/{alarm_id}", "alarms.view", _ADMIN),
    _r("POST", "/api/alarms/{alarm_id}/ack", "alarms.ack", _ADMIN),
    _r("POST", "/api/alarms/{alarm_id}/clear", "alarms.clear", _ADMIN),
    # the HTTP API's own description (api.docs)
    _r("GET", "/api/openapi.json", LOGIN, _ADMIN),
    _r("GET", "/api/docs", LOGIN, _ADMIN),
)


def rule_for(method: str, path: str) -> Rule | None:
    """The first rule matching a request (`method` is `WS` for a WebSocket), or None."""
    for rule in ROUTES:
        if rule.matches(method, path):
            return rule
    return None


def rule_for_route(route_path: str, method: str) -> Rule | None:
    """The rule listing an app route (by its template) and method: what the tests check."""
    for rule in ROUTES:
        if rule.path == route_path and ("*" in rule.methods or method in rule.methods):
            return rule
        if rule.path.endswith("*") and (route_path + "/").startswith(rule.path[:-1]):
            return rule
    return None


# --- API keys -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Denied:
    """Why a request is refused: HTTP status and a reason for the caller."""

    status: int
    detail: str


def check_api_key(rule: Rule, header: str | None, what: str) -> ApiKey | Denied:
    """The key's grant if it may call `rule`'s route, else why not (401 invalid, 403 kind)."""
    s = get_settings()
    store = key_store(s.data_dir)
    key = store.lookup(header, s.api_key_set)
    if key is None:
        detail = "missing or invalid X-API-Key"
        if not s.api_key_set and not store.any_active():
            detail += (
                " (no API keys are configured: API_KEYS is empty and no key was made with "
                "`run.py keys add`, so every key is refused)"
            )
        return Denied(401, detail)
    if not key.kinds & rule.keys:
        kinds = "/".join(sorted(key.kinds))
        return Denied(
            403,
            f"a {kinds} API key may not call {what} "
            f"(needs a key of kind {' or '.join(sorted(rule.keys))})",
        )
    return key


def gate_refusal(key: ApiKey | None, gate_id: str) -> str | None:
    """Why a gate-bound key may not act for `gate_id` (None: it may)."""
    if key is None or key.gate_id is None or key.gate_id == gate_id:
        return None
    return f"this API key is bound to gate {key.gate_id!r}; it cannot act for gate {gate_id!r}"


# --- sessions -----------------------------------------------------------------------------------

SEEN_EVERY_S = 30.0  # `seen_at` is refreshed at most this often (each write hits the disk)


def session_user(
    storage: MutableMapping[str, Any] | None, touch: bool = True, end_void: bool = True
) -> tuple[User | None, str | None]:
    """The user of a session's storage and, when there was a login that is no longer valid,
    why (`expired`, `idle`, `removed`, `password changed`). With `end_void` a void login is
    removed (the middleware does it, so that the redirect to /login can say why)."""
    if storage is None:
        return None, None
    auth = storage.get("auth")
    if not isinstance(auth, dict) or not auth.get("username"):
        return None, None
    st = get_auth_settings()
    now = time.time()
    login_at, seen_at = float(auth.get("login_at", 0)), float(auth.get("seen_at", 0))
    rec = user_store(get_settings().data_dir).get(str(auth["username"]))
    reason = None
    if rec is None:
        reason = "removed"
    elif now - login_at > st.session_max_age_s:
        reason = "expired"
    elif now - seen_at > st.session_idle_s:
        reason = "idle"
    elif datetime.fromtimestamp(login_at, UTC) < rec.sessions_after:
        reason = "password changed"
    if reason is not None or rec is None:
        if end_void:
            storage.pop("auth", None)
        return None, reason
    if touch and now - seen_at > SEEN_EVERY_S:
        storage["auth"] = {**auth, "seen_at": now}
    return rec.public(), None


def start_session(storage: MutableMapping[str, Any], user: User) -> None:
    now = time.time()
    storage["auth"] = {"username": user.username, "login_at": now, "seen_at": now}


def end_session(storage: MutableMapping[str, Any]) -> str | None:
    """Log out; the name that was logged in (for the activity log)."""
    auth = storage.pop("auth", None)
    return auth.get("username") if isinstance(auth, dict) else None


def _user_storage() -> MutableMapping[str, Any] | None:
    from nicegui import app

    try:
        return app.storage.user
    except (RuntimeError, AssertionError, KeyError):
        return None


def current_user() -> User | None:
    """The user logged in to this browser session (in a page, event handler or route), with
    the role the users file gives them now; None when nobody is (or the login has ended)."""
    return session_user(_user_storage(), end_void=False)[0]


class Forbidden(PermissionError):
    """An action the current user may not do; the message says so (pages show it)."""


def require(permission: str) -> User:
    """The current user if they hold `permission`, else `Forbidden` with the reason. Call it at
    the top of every action handler: a page left open after a logout or a role change must
    not keep its powers."""
    user = current_user()
    if user is None:
        raise Forbidden("your login has ended; log in again")
    if not can(user, permission):
        who = ", ".join(sorted(roles_for(permission))) or "nobody"
        raise Forbidden(f"a {user.role} may not do this ({permission}: {who})")
    return user


def permitted(permission: str) -> bool:
    """For page action handlers: True if the current user may do it now; otherwise the page
    says why (a notification) and the handler returns without acting."""
    try:
        require(permission)
    except Forbidden as exc:
        from nicegui import ui

        ui.notify(f"Not allowed: {exc}", type="negative")
        return False
    return True
