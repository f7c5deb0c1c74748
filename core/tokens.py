"""Participant tokens signed with Ed25519 (pretix's offline model).

A token says "participant P of event E, token serial N" and carries an Ed25519 signature over
exactly that. A gate holding only the public key verifies it offline; only the server, holding
the private key, can mint one. Changing any character breaks the signature. The serial lets the
organiser reissue a token: the old one is then refused as revoked.

Format (ASCII, ~110 characters for typical ids, fits a version-7 QR code at level M):
    base64url(event_id 0x1f participant_id 0x1f serial) "." base64url(signature)

The key pair is created on first use under `DATA_DIR/keys/`: the private key readable by the
owner only (0600), the public key world-readable. Creation is race-free (hard link of a fully
written temp file), so the flow and the dashboard may both start first.
"""

from __future__ import annotations

import binascii
import contextlib
import hashlib
import os
import re
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

PRIVATE_NAME = "token_signing_key.pem"
PUBLIC_NAME = "token_public_key.pem"
_SEP = "\x1f"
_SERIAL = re.compile(r"[0-9]{1,9}")


@dataclass(frozen=True, slots=True)
class TokenClaims:
    event_id: str
    participant_id: str
    serial: int


@dataclass(frozen=True, slots=True)
class TokenProblem:
    """Why a token was refused before looking anyone up: `unknown_token` (not a token of ours
    at all) or `invalid_signature` (our format, but forged or altered)."""

    status: str
    detail: str


#: The answer to a well-formed token whose signature does not verify (shared: it is immutable).
_FORGED = TokenProblem("invalid_signature", "forged or altered")


#: `base64.urlsafe_b64encode` / `urlsafe_b64decode` are these translations around `binascii`
#: behind three Python calls each. Called directly (the same bytes, the same errors: a
#: non-ASCII string raises a ValueError, bad padding binascii.Error), `_split` costs 4.7 → 3.8
#: µs of CPU (20,000 minted tokens, load 10); every decider splits every check-in to route it
#: (`peek`), and each token it verifies once more.
_ENCODE = bytes.maketrans(b"+/", b"-_")
_DECODE = bytes.maketrans(b"-_", b"+/")


def _b64e(b: bytes) -> str:
    return binascii.b2a_base64(b, newline=False).translate(_ENCODE).rstrip(b"=").decode()


def _b64d(s: str) -> bytes:
    return binascii.a2b_base64((s + "=" * (-len(s) % 4)).encode("ascii").translate(_DECODE))


def _payload(event_id: str, participant_id: str, serial: int) -> bytes:
    return f"{event_id}{_SEP}{participant_id}{_SEP}{serial}".encode()


def _split(token: str) -> tuple[bytes, bytes, TokenClaims] | TokenProblem:
    """Parse without verifying. Not ours → unknown_token. (No stripping: callers that read
    from a keyboard wedge strip; here any change to the string must fail.)"""
    head, dot, tail = token.partition(".")
    if not dot or not head or not tail or len(token) > 1024:
        return TokenProblem("unknown_token", "not a Venueflow token")
    try:
        payload, sig = _b64d(head), _b64d(tail)
        parts = payload.decode("utf-8").split(_SEP)
    except (binascii.Error, ValueError):
        return TokenProblem("unknown_token", "not a Venueflow token (bad encoding)")
    if len(parts) != 3 or not parts[0] or not parts[1] or not _SERIAL.fullmatch(parts[2]):
        return TokenProblem("unknown_token", "not a Venueflow token (bad payload)")
    if len(sig) != 64:
        return TokenProblem("invalid_signature", "signature has the wrong length")
    if _b64e(payload) != head or _b64e(sig) != tail:
        # Base64 lets a few strings decode to the same bytes; only the one we mint is valid,
        # so no altered string can ever pass as a ticket.
        return TokenProblem("invalid_signature", "altered encoding")
    return payload, sig, TokenClaims(parts[0], parts[1], int(parts[2]))


def fingerprint(token: str) -> str:
    """A short, non-reversible name for a token (the lake and verdicts never hold tokens)."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def peek(token: str) -> TokenClaims | None:
    """The claims a token makes, NOT verified: only for routing it to its participant."""
    parsed = _split(token)
    return None if isinstance(parsed, TokenProblem) else parsed[2]


class TokenVerifier:
    """Verifies tokens with the public key only (what an offline gate holds).

    Results of the signature check are cached: a bounded LRU (`CACHE_SIZE` tokens) of token
    string → its claims, or → the `invalid_signature` problem of a well-formed token whose
    signature fails. A ticket scanned again (exit, re-entry, duplicate, a retry) then skips
    Ed25519, which costs ~125 µs of CPU per verification on the loaded 2-core machine
    (`cryptography`, 2,000 verifications, load 8) and was 18.6 % of the flow's and deciders'
    on-CPU py-spy samples in `bench.checkins`, where half the scans are a ticket's first.
    Sound because the answer depends only on the token's bytes and the public key, both fixed
    for a cache entry: the cache belongs to one key. `load_verifier`
    builds a new verifier (an empty cache) whenever a process loads the key, and setting `key`
    (rotating it in place) empties the cache, so a token cached under a retired key is checked
    again, and refused, under the new one. Everything that changes about a *participant*
    (revocation, a reissued serial) is decided later from the participant's state, never
    here, so caching cannot hide it. Malformed tokens are not cached: `_split` refuses them
    in a few µs, and a flood of garbage must not push real tickets out.

    Bound: 50,000 tokens, about a day's visitors of a large venue per decider shard, ~21 MB:
    ~260 bytes per entry for the claims and the dict slot (tracemalloc over 50,000 minted
    tokens) plus the ~160-byte token string the cache keeps alive. Past it the least recently
    scanned token is forgotten (verified again if it comes back).
    """

    CACHE_SIZE = 50_000

    def __init__(self, public_key: Ed25519PublicKey):
        self._key = public_key
        self._cache: OrderedDict[str, TokenClaims | TokenProblem] = OrderedDict()

    @property
    def key(self) -> Ed25519PublicKey:
        return self._key

    @key.setter
    def key(self, public_key: Ed25519PublicKey) -> None:
        """Rotate to another public key: every cached result belonged to the old one."""
        self._key = public_key
        self._cache.clear()

    @classmethod
    def from_pem(cls, pem: bytes) -> TokenVerifier:
        key = serialization.load_pem_public_key(pem)
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("not an Ed25519 public key")
        return cls(key)

    def check(self, token: str) -> TokenClaims | TokenProblem:
        cache = self._cache
        hit = cache.get(token)
        if hit is not None:
            cache.move_to_end(token)
            return hit
        return self._verify(token)

    def check_uncached(self, token: str) -> TokenClaims | TokenProblem:
        """The same answer as `check`, always from the signature (tests compare the two)."""
        parsed = _split(token)
        if isinstance(parsed, TokenProblem):
            return parsed
        payload, sig, claims = parsed
        try:
            self._key.verify(sig, payload)
        except InvalidSignature:
            return _FORGED
        return claims

    def _verify(self, token: str) -> TokenClaims | TokenProblem:
        result = self.check_uncached(token)
        if result is _FORGED or isinstance(result, TokenClaims):
            cache = self._cache
            cache[token] = result
            if len(cache) > self.CACHE_SIZE:
                cache.popitem(last=False)
        return result

    def cached(self) -> int:
        """Tokens whose check is remembered."""
        return len(self._cache)


class TokenSigner(TokenVerifier):
    """Mints tokens; only the server holds one."""

    def __init__(self, private_key: Ed25519PrivateKey):
        super().__init__(private_key.public_key())
        self._private = private_key

    def mint(self, event_id: str, participant_id: str, serial: int = 0) -> str:
        payload = _payload(event_id, participant_id, serial)
        # Our own ids never contain the separator; refuse rather than mint an ambiguous token.
        if event_id.count(_SEP) or participant_id.count(_SEP):
            raise ValueError("ids may not contain the unit separator")
        return f"{_b64e(payload)}.{_b64e(self._private.sign(payload))}"

    def public_pem(self) -> bytes:
        return self._private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def key_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "keys"


def _publish_once(path: Path, data: bytes, mode: int) -> None:
    """Write `path` atomically unless it exists (first writer wins; never a half file)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        os.unlink(tmp)


def load_signer(data_dir: Path) -> TokenSigner:
    """The server's signing key, created (0600) on first use."""
    d = key_dir(data_dir)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    private = d / PRIVATE_NAME
    if not private.exists():
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _publish_once(private, pem, 0o600)
    key = serialization.load_pem_private_key(private.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{private} is not an Ed25519 private key")
    signer = TokenSigner(key)
    public = d / PUBLIC_NAME
    if not public.exists():
        _publish_once(public, signer.public_pem(), 0o644)
    return signer


def load_verifier(data_dir: Path) -> TokenVerifier:
    """The public key only (creating the pair on first use, so any process may start first)."""
    public = key_dir(data_dir) / PUBLIC_NAME
    if not public.exists():
        load_signer(data_dir)
    return TokenVerifier.from_pem(public.read_bytes())
