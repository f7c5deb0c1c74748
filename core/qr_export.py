"""Each participant's token and QR code, one at a time or all at once (a folder or a zip).

The token's serial comes from `participants:index` (what the check-in flow holds), so a code
exported here is the one the gates accept now; revoked participants are skipped. Rendering a
QR code costs ~9 ms of pure Python (segno picks the best of 8 masks), so a bulk export renders
in worker processes, one per CPU, and writes the files in participant-id order as they come.

`run.py participants qr` writes a folder or a zip; the dashboard streams the zip by running
that very command (`--zip -`) as a child process, so the app's event loop never renders.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import multiprocessing
import os
import re
import signal
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

import redis

from core import csv_safe, keys
from core.qr import qr_png, qr_svg
from core.settings import Settings
from core.tokens import load_signer
from core.venue import venue_for

Format = Literal["png", "svg"]
FORMATS: dict[str, tuple[Format, ...]] = {"png": ("png",), "svg": ("svg",), "both": ("png", "svg")}
INDEX_COLUMNS = ("id", "name", "token", "file")
BATCH = 250  # badges per worker task
_UNSAFE = re.compile(r"[^A-Za-z0-9_.@-]")


@dataclass(frozen=True, slots=True)
class Badge:
    id: str
    name: str
    serial: int
    token: str


@dataclass
class ExportResult:
    written: int = 0
    skipped_revoked: int = 0
    files: list[str] = field(default_factory=list)


def index_entries(r: redis.Redis) -> dict[str, dict]:
    """All of `participants:index` (id → {digest, serial, revoked, name})."""
    out: dict[str, dict] = {}
    for pid, raw in r.hscan_iter(keys.PARTICIPANTS_INDEX, count=5_000):
        out[pid.decode() if isinstance(pid, bytes) else pid] = json.loads(raw)
    return out


def badges(r: redis.Redis, settings: Settings) -> tuple[list[Badge], int]:
    """Every participant that may enter (sorted by id) with a fresh token; and how many were
    skipped because they are revoked."""
    signer = load_signer(settings.data_dir)
    event_id = venue_for(settings.venue_config).event.id
    entries = index_entries(r)
    out, revoked = [], 0
    for pid in sorted(entries):
        e = entries[pid]
        if e.get("revoked"):
            revoked += 1
            continue
        serial = int(e.get("serial") or 0)
        name = str(e.get("name") or "")
        out.append(Badge(pid, name, serial, signer.mint(event_id, pid, serial)))
    return out, revoked


def file_stem(pid: str, used: set[str]) -> str:
    """A file name for an id that is safe everywhere (no ':' or leading dot), unique."""
    stem = _UNSAFE.sub("_", pid)
    if stem.startswith("."):
        stem = "_" + stem[1:]
    base, n = stem, 1
    while stem in used:
        n += 1
        stem = f"{base}~{n}"
    used.add(stem)
    return stem


def _die_with_parent() -> None:
    """Pool workers end with the exporting process, even when it is killed with SIGKILL."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def _render(tokens: list[str], formats: tuple[Format, ...]) -> list[dict[str, bytes]]:
    """Worker: the images of a batch of tokens."""
    out = []
    for t in tokens:
        imgs: dict[str, bytes] = {}
        if "png" in formats:
            imgs["png"] = qr_png(t)
        if "svg" in formats:
            imgs["svg"] = qr_svg(t).encode()
        out.append(imgs)
    return out


def rendered(
    items: list[Badge], formats: tuple[Format, ...], workers: int | None = None
) -> Iterator[tuple[Badge, dict[str, bytes]]]:
    """(badge, {format: bytes}) in the order of `items`, rendered on all CPUs."""
    batches = [items[i : i + BATCH] for i in range(0, len(items), BATCH)]
    workers = workers or os.cpu_count() or 1
    if workers <= 1 or len(batches) <= 1:
        for b in batches:
            yield from zip(b, _render([x.token for x in b], formats), strict=True)
        return
    ctx = multiprocessing.get_context("fork")  # the CLI holds no threads or DuckDB: fork is safe
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_die_with_parent) as pool:
        futures = [pool.submit(_render, [x.token for x in b], formats) for b in batches]
        for b, fut in zip(batches, futures, strict=True):
            yield from zip(b, fut.result(), strict=True)


Progress = Callable[[int, int], None]


def _index_csv(rows: list[tuple[str, str, str, str]]) -> bytes:
    buf = io.StringIO()
    w = csv_safe.writer(buf)  # a name like `=HYPERLINK(...)` stays text
    w.writerow(INDEX_COLUMNS)
    w.writerows(rows)
    return buf.getvalue().encode()


def export_dir(
    items: list[Badge], out: Path, formats: tuple[Format, ...], progress: Progress | None = None
) -> ExportResult:
    """Write `<id>.png`/`<id>.svg` per badge and `index.csv` (id,name,token,file) into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    res, used, rows = ExportResult(), set(), []
    for i, (b, imgs) in enumerate(rendered(items, formats), 1):
        stem = file_stem(b.id, used)
        names = [f"{stem}.{fmt}" for fmt in formats]
        for fmt, name in zip(formats, names, strict=True):
            (out / name).write_bytes(imgs[fmt])
        rows.append((b.id, b.name, b.token, names[0]))
        res.written += 1
        res.files.extend(names)
        if progress and (i % BATCH == 0 or i == len(items)):
            progress(i, len(items))
    (out / "index.csv").write_bytes(_index_csv(rows))
    return res


def export_zip(
    items: list[Badge],
    stream: BinaryIO,
    formats: tuple[Format, ...],
    progress: Progress | None = None,
) -> ExportResult:
    """The same files as `export_dir`, as a zip written to `stream` (which may be a pipe:
    nothing is seeked, so the zip can be streamed while it is made)."""
    res, used, rows = ExportResult(), set(), []
    with zipfile.ZipFile(stream, "w", zipfile.ZIP_STORED) as zf:
        for i, (b, imgs) in enumerate(rendered(items, formats), 1):
            stem = file_stem(b.id, used)
            names = [f"{stem}.{fmt}" for fmt in formats]
            for fmt, name in zip(formats, names, strict=True):
                # PNG is compressed already; SVG text shrinks ~10x.
                kind = zipfile.ZIP_DEFLATED if fmt == "svg" else zipfile.ZIP_STORED
                zf.writestr(name, imgs[fmt], compress_type=kind)
            rows.append((b.id, b.name, b.token, names[0]))
            res.written += 1
            res.files.extend(names)
            if i % BATCH == 0:
                stream.flush()
                if progress:
                    progress(i, len(items))
        zf.writestr("index.csv", _index_csv(rows), compress_type=zipfile.ZIP_DEFLATED)
    if progress:
        progress(len(items), len(items))
    return res
