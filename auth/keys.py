"""API keys for machines (`X-API-Key`): sensors, gates, organiser scripts.

Kinds (what a key may call is decided by the permission matrix in `auth.permissions`):
- `device`: send events and activity (`POST /api/events`, `POST /logs`);
- `gate`: check people in (`POST /api/checkins[/batch]`, `GET /api/checkins/{nonce}`, the
  tokens' public key); optionally bound to one gate id: it may then only check in there;
- `admin`: an organiser's scripts: every API-key route (participants, reports, camera
  commands, the read APIs), like the keys of `API_KEYS`.

Keys in `API_KEYS` (environment) keep working and grant every kind (they are the operator's
own keys, as before this module). Managed keys live in `DATA_DIR/api_keys.json` (mode 0600):
only a SHA-256 digest of each key is stored — keys are 256-bit random strings, so a fast hash
is enough (unlike passwords, they cannot be guessed from a list) and lookups stay O(1) at
thousands of requests per second. A key is shown once, when it is created.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from auth.store import JsonStore

KeyKind = Literal["device", "gate", "admin"]
KEY_KINDS: tuple[KeyKind, ...] = ("device", "gate", "admin")
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")


class ApiKeyError(ValueError):
    """A refused key operation; the message says why."""


class ApiKey(BaseModel, frozen=True):
    """A valid key as routes see it. `kinds`: what it grants; `gate_id`: its one gate, if bound."""

    key_id: str
    name: str
    kinds: frozenset[KeyKind]
    gate_id: str | None = None
    source: Literal["env", "store"] = "store"


class KeyRecord(BaseModel):
    key_id: str
    name: str
    kind: KeyKind
    gate_id: str | None = None
    digest: str  # sha256 hex of the whole key
    created_at: datetime
    created_by: str
    revoked_at: datetime | None = None
    revoked_by: str | None = None

    def public(self) -> ApiKey:
        return ApiKey(
            key_id=self.key_id, name=self.name, kinds=frozenset({self.kind}), gate_id=self.gate_id
        )


class KeysDoc(BaseModel):
    version: int = 1
    keys: dict[str, KeyRecord] = Field(default_factory=dict)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class KeyStore:
    """The managed keys (`DATA_DIR/api_keys.json`) plus the environment's `API_KEYS`."""

    def __init__(self, data_dir: Path):
        self.path = Path(data_dir) / "api_keys.json"
        self._store = JsonStore(self.path, KeysDoc)
        self._index: tuple[KeysDoc, dict[str, KeyRecord]] | None = None

    def all(self) -> list[KeyRecord]:
        return sorted(self._store.read().keys.values(), key=lambda k: k.created_at)

    def create(
        self, name: str, kind: str, created_by: str, gate_id: str | None = None
    ) -> tuple[str, KeyRecord]:
        """A new key: (the key itself — shown once, never stored —, its record)."""
        name = (name or "").strip()
        if not name or len(name) > 100:
            raise ApiKeyError("a key needs a name of 1-100 characters (what or who uses it)")
        if kind not in KEY_KINDS:
            raise ApiKeyError(f"unknown key kind {kind!r}; use one of {', '.join(KEY_KINDS)}")
        gate = (gate_id or "").strip() or None
        if gate is not None and kind != "gate":
            raise ApiKeyError("only a gate key can be bound to a gate")
        if gate is not None and not ID_RE.match(gate):
            raise ApiKeyError(f"invalid gate id {gate!r}")
        key_id = secrets.token_hex(4)
        key = f"vf_{kind}_{key_id}_{secrets.token_urlsafe(32)}"
        rec = KeyRecord(
            key_id=key_id, name=name, kind=kind, gate_id=gate, digest=digest(key),  # type: ignore[arg-type]
            created_at=datetime.now(UTC), created_by=created_by,
        )  # fmt: skip

        def change(doc: KeysDoc) -> None:
            doc.keys[key_id] = rec

        self._store.update(change)
        return key, rec

    def revoke(self, key_id: str, by: str) -> KeyRecord:
        """Revoke (kept in the file, marked, so the list shows who revoked what and when)."""

        def change(doc: KeysDoc) -> KeyRecord:
            rec = doc.keys.get(key_id.strip())
            if rec is None:
                raise ApiKeyError(f"no API key with id {key_id!r}")
            if rec.revoked_at is None:
                rec.revoked_at, rec.revoked_by = datetime.now(UTC), by
            return rec

        return self._store.update(change)

    def _by_digest(self) -> dict[str, KeyRecord]:
        doc = self._store.read()
        if self._index is None or self._index[0] is not doc:
            idx = {k.digest: k for k in doc.keys.values() if k.revoked_at is None}
            self._index = (doc, idx)
        return self._index[1]

    def any_active(self) -> bool:
        return bool(self._by_digest())

    def lookup(self, key: str | None, env_keys: frozenset[str]) -> ApiKey | None:
        """The key's grant, or None if it is not a valid key."""
        if not key:
            return None
        for i, k in enumerate(sorted(env_keys)):
            if hmac.compare_digest(key.encode(), k.encode()):
                return ApiKey(
                    key_id=f"env-{i + 1}", name="API_KEYS", kinds=frozenset(KEY_KINDS),
                    source="env",
                )  # fmt: skip
        rec = self._by_digest().get(digest(key))
        return rec.public() if rec is not None else None


@lru_cache(maxsize=8)
def key_store(data_dir: Path) -> KeyStore:
    return KeyStore(Path(data_dir))
