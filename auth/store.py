"""A small JSON document on disk, shared by the dashboard and `run.py` (users, API keys).

Why a file and not Redis: logging in must work while Redis is down, and `run.py users add`
must work before anything runs. The file is written whole to a temporary file in the same
folder and renamed over the old one (readers never see half a file), with mode 0600 from the
start, under an exclusive `flock` on a side lock file (two writers never lose each other's
change). Readers keep the parsed document until the file's (inode, mtime, size) changes, so a
change made by `run.py` is seen by the running dashboard at its next request.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

Doc = TypeVar("Doc", bound=BaseModel)


class StoreError(RuntimeError):
    """The file exists but cannot be read or parsed; the message names the file."""


class JsonStore(Generic[Doc]):
    """One pydantic document kept in one file (mode 0600), read cached, written atomically."""

    def __init__(self, path: Path, model: type[Doc]):
        self.path, self.model = Path(path), model
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._cache: tuple[tuple[int, int, int], Doc] | None = None
        self._mutex = threading.Lock()

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def read(self) -> Doc:
        """The current document (an empty one when the file does not exist yet)."""
        stamp = self._stamp()
        if stamp is None:
            return self.model()
        cached = self._cache
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            raw = self.path.read_bytes()
            doc = self.model.model_validate_json(raw)
        except FileNotFoundError:
            return self.model()
        except (OSError, ValueError) as exc:
            raise StoreError(f"{self.path} cannot be read: {exc}") from exc
        self._cache = (stamp, doc)
        return doc

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._mutex:
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # releases the flock

    def update(self, change: Callable[[Doc], Any]) -> Any:
        """Read the newest document under the lock, let `change` edit it, write it atomically.

        `change` may raise to abort (nothing is written); its return value is returned."""
        with self._locked():
            self._cache = None  # another process may have written since our last read
            doc = self.read().model_copy(deep=True)
            result = change(doc)
            self._write(doc)
            return result

    def _write(self, doc: Doc) -> None:
        data = json.dumps(doc.model_dump(mode="json"), indent=2, sort_keys=True).encode()
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data + b"\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        with contextlib.suppress(OSError):  # make the rename itself durable
            dfd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        self._cache = None
