"""`ui.socket_packets.FastPacket` answers "does this message carry bytes?" exactly as
python-socketio does, on generated nested data, and NiceGUI's server uses it once installed."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from nicegui import core
from socketio import packet

from ui import socket_packets
from ui.socket_packets import FastPacket

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=5),
    st.binary(max_size=3), st.binary(max_size=3).map(bytearray),
    st.tuples(st.binary(max_size=2)),  # a tuple is not looked into, by either
    st.frozensets(st.integers(), max_size=2),  # not JSON: orjson refuses it, the walk answers
    st.integers(min_value=2**64, max_value=2**70),  # too big for orjson: walked as well
)  # fmt: skip
nested = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.text(max_size=3) | st.integers() | st.binary(max_size=2), inner, max_size=4
        ),
    ),
    max_leaves=30,
)


@settings(max_examples=500, deadline=None)
@given(nested)
def test_the_answer_is_python_socketio_s(data: object) -> None:
    expected = packet.Packet.data_is_binary(data)
    assert FastPacket.data_is_binary(data) == expected
    assert FastPacket._walk(data) == expected  # the fallback alone, on every shape


def test_a_packet_with_bytes_is_still_a_binary_event_and_encodes_alike() -> None:
    data = ["update", {"rows": [{"a": 1}, {"b": [b"\x00\x01"]}]}]
    fast, slow = FastPacket(packet.EVENT, data), packet.Packet(packet.EVENT, data)
    assert fast.packet_type == slow.packet_type == packet.BINARY_EVENT
    assert fast.encode() == slow.encode()
    plain = ["update", {"rows": [{"a": 1, "b": "x"}] * 50}]
    assert FastPacket(packet.EVENT, plain).encode() == packet.Packet(packet.EVENT, plain).encode()


def test_nicegui_builds_its_packets_with_it_once_installed() -> None:
    socket_packets.install()
    assert core.sio.packet_class is FastPacket


def test_a_nicegui_update_is_answered_without_the_walk(monkeypatch) -> None:
    """NiceGUI's updates are keyed by element id (an int): still the orjson path."""
    walked = []
    monkeypatch.setattr(FastPacket, "_walk", staticmethod(lambda d: walked.append(d) or False))
    update = {12: {"id": 12, "props": {"rows": [{"a": 1}] * 3}}, 13: {"id": 13, "text": "x"}}
    assert FastPacket.data_is_binary(["update", update]) is False and walked == []
    assert FastPacket.data_is_binary(["update", {12: {"b": b"x"}}]) is False and walked
