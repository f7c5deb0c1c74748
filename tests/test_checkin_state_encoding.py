"""Participant states as the decider commits them (`checkins_logic.dumps`): the compact form
loads back equal with plain `pickle.loads` (what a restarting decider calls), and states an
earlier version pickled still load. States come from the real decision over real tokens."""

from __future__ import annotations

import pickle
from collections import OrderedDict
from datetime import UTC, datetime, timedelta, timezone

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from core.records import CheckIn, Participant
from core.tokens import TokenSigner, TokenVerifier
from core.venue import Venue
from flows import checkins_logic as L

SIGNER = TokenSigner(Ed25519PrivateKey.generate())
VERIFIER = TokenVerifier(SIGNER.key)
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
VENUE = Venue.model_validate(
    {
        "event": {
            "id": "enc-2026",
            "name": "Encoding",
            "start": "2026-01-01T00:00:00+00:00",
            "end": "2030-12-31T23:59:00+00:00",
            "timezone": "Europe/Berlin",
        },
        "gates": [{"id": "g1", "name": "Gate 1"}, {"id": "x1", "name": "Exit 1"}],
        "checkin_rules": {"entry_gates": ["g1"], "exit_gates": ["g1", "x1"]},
    }
)


def _state(scans: list[tuple[int, str, str, bool]], revoked: bool) -> L.ParticipantState:
    """A participant, then scans (seconds after T0, gate, direction, forged?) in input order."""
    st, _ = L.apply_op(
        None,
        L.ParticipantOp(
            op="upsert",
            participant=Participant(id="P1", name="Ada Ü", email="a@b.org", extra={"k": "v"}),
        ),
        "1-0",
        T0,
    )
    if revoked:
        st, _ = L.apply_op(st, L.ParticipantOp(op="revoke", id="P1"), "2-0", T0)
    token = SIGNER.mint("enc-2026", "P1")
    for i, (sec, gate, direction, forged) in enumerate(scans):
        tok = token[:-3] + ("AAA" if token[-3:] != "AAA" else "BBB") if forged else token
        c = CheckIn(gate_id=gate, token=tok, direction=direction, nonce=f"nonce-{i % 7:04d}")
        c = c.model_copy(update={"ts": T0 + timedelta(seconds=sec)})
        eid = f"{int(T0.timestamp() * 1000) + 100_000 + i}-{i}"
        scan = L.Scan(eid, c, L.entry_time(eid), VERIFIER.check(tok))
        st, _ = L.step(st, scan, VENUE)
    assert st is not None
    return st


@settings(max_examples=60, deadline=None)
@given(
    scans=st.lists(
        st.tuples(
            st.integers(0, 5000),
            st.sampled_from(["g1", "x1", "nope"]),
            st.sampled_from(["in", "out"]),
            st.booleans(),
        ),
        max_size=25,
    ),
    revoked=st.booleans(),
)
def test_compact_states_load_back_equal(scans: list, revoked: bool) -> None:
    st_ = _state(scans, revoked)
    raw = L.dumps(st_)
    assert raw.startswith(L._HEAD)  # the compact form was used
    back = pickle.loads(raw)
    assert back == st_
    assert type(back.refused) is OrderedDict and list(back.refused) == list(st_.refused)
    # what an earlier version committed (a plain pickle) still loads
    assert pickle.loads(L._pickle(st_)) == st_
    # a loaded state is written again as it was (marshal's bytes may differ in ref flags)
    assert pickle.loads(L.dumps(back)) == st_


def test_what_the_compact_form_does_not_cover_is_pickled() -> None:
    st_ = _state([(0, "g1", "in", False)], revoked=False)
    st_.revoked_at = datetime(2026, 3, 1, 10, 0, tzinfo=timezone(timedelta(hours=1)))
    raw = L.dumps(st_)
    assert not raw.startswith(L._HEAD)
    assert pickle.loads(raw) == st_
