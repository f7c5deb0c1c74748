"""The verified-token cache (`core.tokens.TokenVerifier`): cached answers are the uncached ones,
and a key rotation forgets everything checked under the old key. Real Ed25519 keys and tokens."""

from __future__ import annotations

import random
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from core.tokens import (
    PRIVATE_NAME,
    PUBLIC_NAME,
    TokenClaims,
    TokenProblem,
    TokenSigner,
    TokenVerifier,
    key_dir,
    load_signer,
    load_verifier,
)
from sim.gates import tamper

EVENT = "cache-2026"
SIGNER = TokenSigner(Ed25519PrivateKey.generate())
OTHER = TokenSigner(Ed25519PrivateKey.generate())


def _tokens(rng: random.Random) -> list[str]:
    """Good, forged, other-key, old-serial, garbage and altered-encoding tokens."""
    good = [SIGNER.mint(EVENT, f"P{i}", rng.randrange(3)) for i in range(20)]
    return [
        *good,
        *(tamper(t, rng) for t in good[:8]),
        *(OTHER.mint(EVENT, f"P{i}") for i in range(5)),
        SIGNER.mint("other-event", "P1"),
        SIGNER.mint(EVENT, "P1", 0),  # an older serial: the state refuses it, not the token
        "TICKET-000000001",
        "",
        "a.b",
        good[0] + "=",  # altered encoding of a good token
        good[1][:-1],
    ]


def test_cached_answers_equal_uncached_ones() -> None:
    rng = random.Random(7)
    tokens = _tokens(rng)
    cached = TokenVerifier(SIGNER.key)
    for rnd in range(3):  # first checks, then hits (in another order each round)
        order = tokens[:]
        rng.shuffle(order)
        for t in order:
            assert cached.check(t) == cached.check_uncached(t), (rnd, t)
    statuses = {type(cached.check(t)).__name__ for t in tokens}
    assert statuses == {"TokenClaims", "TokenProblem"}
    # good and forged tokens are remembered; malformed ones (cheap to refuse) are not
    assert cached.cached() == len(set(tokens[:35]))  # good, forged, other key, event, serial
    assert cached.check(tokens[20]) == TokenProblem("invalid_signature", "forged or altered")
    assert cached.check(OTHER.mint(EVENT, "P1")).status == "invalid_signature"


@settings(max_examples=100, deadline=None)
@given(
    picks=st.lists(st.integers(0, 39), min_size=1, max_size=120),
    size=st.integers(1, 12),
)
def test_a_small_cache_answers_as_no_cache(picks: list[int], size: int) -> None:
    # Any sequence of scans through an LRU of any bound: the same answers, never more held.
    tokens = _tokens(random.Random(size))
    v = TokenVerifier(SIGNER.key)
    v.CACHE_SIZE = size
    for i in picks:
        t = tokens[i % len(tokens)]
        assert v.check(t) == v.check_uncached(t)
        assert v.cached() <= size


def test_rotating_the_key_in_place_forgets_the_old_one() -> None:
    old_token = SIGNER.mint(EVENT, "P9")
    v = TokenVerifier(SIGNER.key)
    assert v.check(old_token) == TokenClaims(EVENT, "P9", 0)
    assert v.cached() == 1
    v.key = OTHER.key  # rotation: the cache belonged to the old key
    assert v.cached() == 0
    assert v.check(old_token) == TokenProblem("invalid_signature", "forged or altered")
    assert v.check(OTHER.mint(EVENT, "P9")) == TokenClaims(EVENT, "P9", 0)


def test_a_rotated_key_file_refuses_tokens_cached_before(tmp_path: Path) -> None:
    # How a deployment rotates: new key files, the flow (and its deciders) restarted, each
    # loading its verifier again. A verifier that had the old token cached does not leak it.
    old = load_signer(tmp_path)
    token = old.mint(EVENT, "P1")
    before = load_verifier(tmp_path)
    assert isinstance(before.check(token), TokenClaims)
    assert before.cached() == 1
    d = key_dir(tmp_path)
    (d / PRIVATE_NAME).unlink()
    (d / PUBLIC_NAME).unlink()
    new = load_signer(tmp_path)  # a new pair
    after = load_verifier(tmp_path)
    assert after.check(token) == TokenProblem("invalid_signature", "forged or altered")
    assert isinstance(after.check(new.mint(EVENT, "P1")), TokenClaims)
    # and the same verifier rotated in place
    before.key = after.key
    assert before.check(token) == TokenProblem("invalid_signature", "forged or altered")
