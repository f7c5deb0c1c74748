"""Graceful stop for flow processes.

Bytewax has no stop API, and a KeyboardInterrupt raised inside a source's Python code makes
its Rust runtime panic. So a flow process turns SIGINT/SIGTERM into a flag; every Venueflow
source checks it and ends its input (StopIteration), the dataflow drains, sinks flush and close,
and the process exits 0. Recovery makes this safe at any point: what was not snapshotted is
discarded and replayed on the next start.
"""

from __future__ import annotations

import signal
import threading

_stop = threading.Event()
_installed = False


def install_stop_handlers() -> None:
    global _installed
    if _installed or threading.current_thread() is not threading.main_thread():
        return

    def _handler(signum: int, frame: object) -> None:
        _stop.set()

    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)
    _installed = True


def stop_requested() -> bool:
    return _stop.is_set()


def request_stop() -> None:
    """Stop flows running in this process (tests running a flow in a thread use this)."""
    _stop.set()
