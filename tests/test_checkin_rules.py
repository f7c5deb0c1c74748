"""The decision function's rules, and that no forged or altered token is ever accepted.

These call `flows.checkins_logic.decide` — the very function the flow runs — with real
Ed25519 keys; the flow tests (`test_checkins_flow.py`) check the same outcomes end to end.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import keys
from core.records import CheckIn, ParticipantOp
from core.tokens import TokenSigner, TokenVerifier, load_signer
from core.venue import parse_venue
from flows.checkins_logic import ParticipantState, Scan, apply_op, decide
from tests.attendance_helpers import EVENT_ID, venue_yaml

T0 = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)


class Gatekeeper:
    """Feeds scans to `decide` in order, like the flow does for one participant."""

    def __init__(self, signer: TokenSigner, **rules: bool):
        self.venue = parse_venue(venue_yaml(**rules))
        self.signer, self.seq = signer, 0
        self.state: ParticipantState | None = None
        op = ParticipantOp.model_validate(
            {"op": "upsert", "participant": {"id": "P1", "name": "Ada"}}
        )
        self.state, _ = apply_op(None, op, "1-0", T0)

    def scan(self, direction: str, minute: int, gate: str = "main", token: str | None = None):
        self.seq += 1
        c = CheckIn(
            gate_id=gate,
            token=self.signer.mint(EVENT_ID, "P1") if token is None else token,
            direction=direction,  # type: ignore[arg-type]
            nonce=f"nonce-{self.seq:04d}",
            ts=T0 + timedelta(minutes=minute),
        )
        s = Scan(f"{1000 + self.seq}-0", c, T0 + timedelta(hours=1), self.signer.check(c.token))
        self.state, out = decide(self.state, s, self.venue, now=T0)
        return out


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> TokenSigner:
    return load_signer(tmp_path_factory.mktemp("keys"))


# (allow_multiple_entries, allow_entry_after_exit) → statuses of: in, in, out, out, in
RULES = {
    (False, False): [
        "accepted",
        "duplicate",
        "accepted",
        "exit_without_entry",
        "reentry_not_allowed",
    ],
    (False, True): ["accepted", "duplicate", "accepted", "exit_without_entry", "accepted"],
    (True, False): ["accepted", "accepted", "accepted", "exit_without_entry", "accepted"],
    (True, True): ["accepted", "accepted", "accepted", "exit_without_entry", "accepted"],
}


@pytest.mark.parametrize(("multiple", "after_exit"), sorted(RULES))
def test_entry_exit_and_reentry_rules(signer: TokenSigner, multiple: bool, after_exit: bool):
    g = Gatekeeper(signer, allow_multiple_entries=multiple, allow_entry_after_exit=after_exit)
    got = [
        g.scan(d, i, gate="main").verdicts[0]["status"]
        for i, d in enumerate(["in", "in", "out", "out", "in"])
    ]
    assert got == RULES[(multiple, after_exit)]


def test_inside_and_checked_in_follow_the_accepted_scans(signer: TokenSigner) -> None:
    g = Gatekeeper(signer, allow_entry_after_exit=True)
    deltas = [g.scan(d, i).delta for i, d in enumerate(["in", "out", "in"])]
    # (registered, checked in, inside): entering checks in once; inside goes 1, 0, 1.
    assert deltas == [(0, 1, 1), (0, 0, -1), (0, 0, 1)]


def test_a_late_earlier_scan_overturns_the_later_one(signer: TokenSigner) -> None:
    g = Gatekeeper(signer)
    first = g.scan("in", 10, gate="side")
    assert first.verdicts[0]["status"] == "accepted"
    out = g.scan("in", 5, gate="main")  # uploaded later, happened earlier
    by_nonce = {v["nonce"]: v for v in out.verdicts}
    assert by_nonce["nonce-0002"]["status"] == "accepted"
    overturned = by_nonce["nonce-0001"]
    assert (overturned["status"], overturned["revision"], overturned["flagged"]) == (
        "duplicate",
        1,
        True,
    )
    # Counts move: -1 accepted / +1 duplicate for the overturned scan, +1 for the winner.
    assert sorted((c.gate_id, c.status, c.delta) for c in out.counts) == [
        ("main", "accepted", 1),
        ("side", "accepted", -1),
        ("side", "duplicate", 1),
    ]
    assert out.delta == (0, 0, 0)  # still one person inside


def test_revocation_applies_from_its_time(signer: TokenSigner) -> None:
    g = Gatekeeper(signer)
    op = ParticipantOp(op="revoke", id="P1", reason="refunded")
    g.state, _ = apply_op(g.state, op, "2-0", T0 + timedelta(minutes=30))
    assert g.scan("in", 10).verdicts[0]["status"] == "accepted"  # scanned before the revocation
    v = g.scan("in", 45, gate="side").verdicts[0]
    assert (v["status"], "refunded" in v["reason"]) == ("revoked", True)


def test_unchanged_upsert_changes_nothing(signer: TokenSigner) -> None:
    g = Gatekeeper(signer)
    same = ParticipantOp.model_validate(
        {"op": "upsert", "participant": {"id": "P1", "name": "Ada"}}
    )
    _, out = apply_op(g.state, same, "3-0", T0)
    assert out.participant_rows == [] and out.delta == (0, 0, 0)
    changed = ParticipantOp.model_validate(
        {"op": "upsert", "participant": {"id": "P1", "name": "Ada Lovelace"}}
    )
    _, out = apply_op(g.state, changed, "4-0", T0)
    assert [r["name"] for r in out.participant_rows] == ["Ada Lovelace"]


def test_revoking_an_unknown_participant_is_a_dead_letter() -> None:
    state, out = apply_op(None, ParticipantOp(op="revoke", id="nobody"), "5-0", T0)
    assert state is None
    assert out.dead == [
        ("revoke: no participant with id 'nobody'", keys.PARTICIPANTS_IN, "5-0", None)
    ]


# --- forged and altered tokens (property-based) ---------------------------------------------


@st.composite
def altered(draw: st.DrawFn, token: str) -> str:
    kind = draw(st.sampled_from(["replace", "insert", "delete", "swap", "truncate", "append"]))
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.= "
    i = draw(st.integers(0, len(token) - 1))
    if kind == "replace":
        c = draw(st.sampled_from(alphabet).filter(lambda c: c != token[i]))
        return token[:i] + c + token[i + 1 :]
    if kind == "insert":
        return token[:i] + draw(st.sampled_from(alphabet)) + token[i:]
    if kind == "delete":
        return token[:i] + token[i + 1 :]
    if kind == "swap":
        j = draw(st.integers(0, len(token) - 1).filter(lambda j: token[j] != token[i]))
        t = list(token)
        t[i], t[j] = t[j], t[i]
        return "".join(t)
    if kind == "truncate":
        return token[: max(i, 1)]
    return token + draw(st.text(alphabet, min_size=1, max_size=8))


@given(data=st.data())
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_an_altered_token_is_never_accepted(tmp_path_factory, data: st.DataObject) -> None:
    signer = _signer(tmp_path_factory)
    g = Gatekeeper(signer)
    original = signer.mint(EVENT_ID, "P1")
    token = data.draw(altered(original))
    assert token != original
    out = g.scan("in", 1, token=token)
    assert out.verdicts[0]["status"] in {"invalid_signature", "unknown_token"}, token


@given(payload=st.text(min_size=1, max_size=40), sig=st.binary(min_size=64, max_size=64))
@settings(max_examples=200, deadline=None)
def test_a_token_signed_with_another_key_is_never_accepted(
    tmp_path_factory, payload: str, sig: bytes
) -> None:
    # A forger who knows the format but not the key: any payload naming P1, any signature,
    # or a real signature from another key pair.
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    signer = _signer(tmp_path_factory)
    other = TokenSigner(Ed25519PrivateKey.generate())
    g = Gatekeeper(signer)
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()  # noqa: E731
    head = b64(f"{EVENT_ID}\x1fP1\x1f0".encode())
    for token in (
        f"{head}.{b64(sig)}",
        other.mint(EVENT_ID, "P1"),
        f"{b64(payload.encode())}.{b64(sig)}",
    ):
        assert g.scan("in", 1, token=token).verdicts[0]["status"] != "accepted", token
    # The gate-side verifier (public key only) agrees.
    verifier = TokenVerifier.from_pem(signer.public_pem())
    assert not hasattr(verifier.check(other.mint(EVENT_ID, "P1")), "participant_id")


_SIGNERS: dict[Path, TokenSigner] = {}


def _signer(factory: pytest.TempPathFactory) -> TokenSigner:
    base = factory.getbasetemp()
    if base not in _SIGNERS:
        _SIGNERS[base] = load_signer(base / "forgery-keys")
    return _SIGNERS[base]
