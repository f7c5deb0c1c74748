"""`WS_COMPRESSION`: whether the dashboard's WebSockets (pages and video) are deflated.

Checked on the handshake a real client sees: `websockets` offers permessage-deflate as every
browser does, and the server's `Sec-WebSocket-Extensions` answer says whether it is used. Off
by default (video frames are JPEG, which deflate only costs CPU for; docs/operating.md)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ui_fixtures import AuthStack, negotiated


@pytest.fixture(scope="module")
def compressing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthStack]:
    s = AuthStack(tmp_path_factory.mktemp("ws-compression"), WS_COMPRESSION="true")
    yield s
    s.close()


def test_ws_compression_on_deflates_the_sockets(compressing: AuthStack) -> None:
    accepted = negotiated(compressing.base_url)
    assert accepted is not None and accepted.startswith("permessage-deflate")
