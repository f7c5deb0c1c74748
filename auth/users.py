"""Dashboard users: names, roles and Argon2id password hashes in `DATA_DIR/users.json`.

Why a file (see `auth.store`): login works while Redis is down, and the first organiser
is created by `run.py users add` before anything runs. Passwords are hashed with argon2-cffi's
`PasswordHasher` (Argon2id, RFC 9106 low-memory profile, a random salt per hash) and never
stored or logged in clear; hashes made with older parameters are upgraded at the next login.

There is no default user and no default password: with no user, the login page says how to
create the first organiser.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from pydantic import BaseModel, Field

from auth.store import JsonStore

Role = Literal["organiser", "operator", "analyst"]
ROLES: tuple[Role, ...] = ("organiser", "operator", "analyst")

USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,63}$")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024  # Argon2 takes any length; this only bounds the work a request can ask for

_hasher = PasswordHasher()
#: Verified against when the user does not exist, so a wrong name costs as long as a wrong
#: password (the answer's timing does not tell which names exist).
_DUMMY_HASH = _hasher.hash("venueflow-no-such-user")


class UserError(ValueError):
    """A refused user operation; the message says why (shown as is by CLI and pages)."""


class User(BaseModel, frozen=True):
    """A person as pages and checks see them: never carries the password hash."""

    username: str
    role: Role


class UserRecord(BaseModel):
    """A stored user. `sessions_after`: sessions started before it are void (set when the
    password changes, so a reset logs out every browser of that user)."""

    username: str
    role: Role
    password_hash: str
    created_at: datetime
    updated_at: datetime
    sessions_after: datetime

    def public(self) -> User:
        return User(username=self.username, role=self.role)


class UsersDoc(BaseModel):
    version: int = 1
    users: dict[str, UserRecord] = Field(default_factory=dict)


def normalize_username(name: str) -> str:
    """Lower-cased and checked: letters, digits, `.`, `_`, `@`, `-`, at most 64."""
    n = (name or "").strip().lower()
    if not USERNAME_RE.match(n):
        raise UserError(
            f"invalid user name {name!r}: use 1-64 letters, digits, '.', '_', '@' or '-', "
            "starting with a letter or digit"
        )
    return n


def check_role(role: str) -> Role:
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
    return role  # type: ignore[return-value]


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"the password must have at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise UserError(f"the password must have at most {MAX_PASSWORD} characters")
    return password


def hash_password(password: str) -> str:
    return _hasher.hash(check_password(password))


def _now() -> datetime:
    return datetime.now(UTC)


class UserStore:
    """The users file. Every method re-reads it (cached by mtime), so `run.py` changes apply
    to a running dashboard at once."""

    def __init__(self, data_dir: Path):
        self.path = Path(data_dir) / "users.json"
        self._store = JsonStore(self.path, UsersDoc)

    def all(self) -> list[UserRecord]:
        return sorted(self._store.read().users.values(), key=lambda u: u.username)

    def get(self, username: str) -> UserRecord | None:
        try:
            return self._store.read().users.get(normalize_username(username))
        except UserError:
            return None

    def empty(self) -> bool:
        return not self._store.read().users

    def add(self, username: str, role: str, password: str) -> User:
        name, role_ = normalize_username(username), check_role(role)
        pw_hash = hash_password(password)  # outside the lock: hashing takes ~50 ms

        def change(doc: UsersDoc) -> UserRecord:
            if name in doc.users:
                raise UserError(f"user {name!r} exists already")
            now = _now()
            rec = UserRecord(
                username=name, role=role_, password_hash=pw_hash, created_at=now,
                updated_at=now, sessions_after=now,
            )  # fmt: skip
            doc.users[name] = rec
            return rec

        return self._store.update(change).public()

    def _existing(self, doc: UsersDoc, name: str) -> UserRecord:
        rec = doc.users.get(name)
        if rec is None:
            raise UserError(f"no user {name!r}")
        return rec

    @staticmethod
    def _organisers(doc: UsersDoc) -> int:
        return sum(1 for u in doc.users.values() if u.role == "organiser")

    def remove(self, username: str) -> None:
        """Remove a user (their sessions end at their next request). The last organiser
        cannot be removed: nobody could manage users afterwards."""
        name = normalize_username(username)

        def change(doc: UsersDoc) -> None:
            rec = self._existing(doc, name)
            if rec.role == "organiser" and self._organisers(doc) == 1:
                raise UserError(f"{name!r} is the last organiser; add another organiser first")
            del doc.users[name]

        self._store.update(change)

    def set_role(self, username: str, role: str) -> User:
        name, role_ = normalize_username(username), check_role(role)

        def change(doc: UsersDoc) -> UserRecord:
            rec = self._existing(doc, name)
            if rec.role == "organiser" and role_ != "organiser" and self._organisers(doc) == 1:
                raise UserError(f"{name!r} is the last organiser; add another organiser first")
            rec.role, rec.updated_at = role_, _now()
            return rec

        return self._store.update(change).public()

    def set_password(self, username: str, password: str) -> None:
        """New password; every existing session of the user ends."""
        name = normalize_username(username)
        pw_hash = hash_password(password)

        def change(doc: UsersDoc) -> None:
            rec = self._existing(doc, name)
            now = _now()
            rec.password_hash, rec.updated_at, rec.sessions_after = pw_hash, now, now

        self._store.update(change)

    def verify(self, username: str, password: str) -> User | None:
        """The user if the password is theirs, else None (same cost either way). Blocking
        (~50 ms of Argon2): call it from a worker thread in the dashboard."""
        rec = self.get(username)
        if len(password) > MAX_PASSWORD:
            return None
        try:
            _hasher.verify(rec.password_hash if rec else _DUMMY_HASH, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if rec is None:
            return None
        if _hasher.check_needs_rehash(rec.password_hash):
            new_hash = _hasher.hash(password)

            def change(doc: UsersDoc) -> None:
                if (cur := doc.users.get(rec.username)) and cur.password_hash == rec.password_hash:
                    cur.password_hash = new_hash

            self._store.update(change)
        return rec.public()


@lru_cache(maxsize=8)
def user_store(data_dir: Path) -> UserStore:
    """One store object per data folder in a process (it holds the read cache)."""
    return UserStore(Path(data_dir))
