"""The test camera's picture: a moving ball, a clock, and the send time written into pixels.

Why pixels: the frame is the only thing that survives H.264 → RTSP → OpenCV → JPEG → browser
unchanged in meaning, so a time *drawn into* it lets any reader (a test, the benchmark) measure
true glass-to-viewer latency without trusting any component's own timestamps. The stamp is a
row of big black/white blocks (robust to H.264, JPEG and downscaling), with a checksum so a
frame whose blocks were damaged reads as "no stamp" instead of a wrong time.

Only numpy: this module is imported both by `sim/rtsp_server.py` under Debian's
`/usr/bin/python3` (numpy 1.24) and by the project's venv (tests, bench).
"""

from __future__ import annotations

import time

import numpy as np

STAMP_BITS = 48  # milliseconds since the epoch (good until the year 10889)
CHECK_BITS = 8
BITS_PER_ROW = 28
_TOTAL = STAMP_BITS + CHECK_BITS  # two rows of 28 blocks

# A 5x7 bitmap font for the clock: digits, ':', '.', ' ' and '#'.
_FONT = {
    "0": ["01110", "10001", "10011", "10101", "11001", "10001", "01110"],
    "1": ["00100", "01100", "00100", "00100", "00100", "00100", "01110"],
    "2": ["01110", "10001", "00001", "00010", "00100", "01000", "11111"],
    "3": ["11110", "00001", "00001", "01110", "00001", "00001", "11110"],
    "4": ["00010", "00110", "01010", "10010", "11111", "00010", "00010"],
    "5": ["11111", "10000", "11110", "00001", "00001", "10001", "01110"],
    "6": ["00110", "01000", "10000", "11110", "10001", "10001", "01110"],
    "7": ["11111", "00001", "00010", "00100", "01000", "01000", "01000"],
    "8": ["01110", "10001", "10001", "01110", "10001", "10001", "01110"],
    "9": ["01110", "10001", "10001", "01111", "00001", "00010", "01100"],
    ":": ["00000", "01100", "01100", "00000", "01100", "01100", "00000"],
    ".": ["00000", "00000", "00000", "00000", "00000", "01100", "01100"],
    " ": ["00000"] * 7,
    "#": ["01010", "01010", "11111", "01010", "11111", "01010", "01010"],
}
_GLYPHS = {ch: np.array([[c == "1" for c in row] for row in rows]) for ch, rows in _FONT.items()}


def block_size(width: int) -> float:
    """Side of one stamp block for a frame this wide: a fixed fraction of the width, so the
    blocks sit at the same relative places after any scaling."""
    return width / 48


def _cell(i: int, b: float) -> tuple[int, int, int, int]:
    """Pixel bounds (y0, y1, x0, x1) of stamp block `i` for block side `b`."""
    row, col = divmod(i, BITS_PER_ROW)
    y, x = b + row * b, b + col * b
    return round(y), round(y + b), round(x), round(x + b)


def _checksum(ms: int) -> int:
    return sum((ms >> s) & 0xFF for s in range(0, STAMP_BITS, 8)) & 0xFF


def _bits(ms: int) -> list[int]:
    value = (ms << CHECK_BITS) | _checksum(ms)
    return [(value >> (_TOTAL - 1 - i)) & 1 for i in range(_TOTAL)]


def draw_stamp(frame: np.ndarray, ms: int) -> None:
    """Write `ms` into the top-left corner of a BGR frame (in place)."""
    b = block_size(frame.shape[1])
    for i, bit in enumerate(_bits(ms)):
        y0, y1, x0, x1 = _cell(i, b)
        frame[y0:y1, x0:x1] = 255 if bit else 0


def read_stamp(frame: np.ndarray) -> int | None:
    """The milliseconds written by `draw_stamp`, or None if absent or damaged.

    Works on the frame at any size it was scaled to (block positions are relative to width),
    BGR or grayscale.
    """
    if frame is None or frame.ndim < 2 or frame.shape[1] < 48 * 5:
        return None
    gray = frame if frame.ndim == 2 else frame[:, :, 1]
    b = block_size(frame.shape[1])
    q = max(1, round(b / 4))
    value = 0
    for i in range(_TOTAL):
        y0, y1, x0, x1 = _cell(i, b)
        cell = gray[y0 + q : y1 - q, x0 + q : x1 - q]
        if cell.size == 0:
            return None
        value = (value << 1) | int(cell.mean() > 127)
    ms, check = value >> CHECK_BITS, value & 0xFF
    return ms if ms and _checksum(ms) == check else None


def _draw_text(frame: np.ndarray, text: str, x: int, y: int, scale: int) -> None:
    for i, ch in enumerate(text):
        glyph = _GLYPHS.get(ch, _GLYPHS[" "])
        big = np.kron(glyph, np.ones((scale, scale), dtype=bool))
        gx = x + i * 6 * scale
        region = frame[y : y + big.shape[0], gx : gx + big.shape[1]]
        if region.shape[:2] != big.shape:
            return
        region[big] = 255


class Painter:
    """Paints frames of one test camera; `index` varies the colours so cameras differ."""

    def __init__(self, width: int, height: int, fps: float, index: int = 0):
        self.w, self.h, self.fps = width, height, fps
        self.n = 0
        bars = np.array(
            [[192, 192, 192], [0, 192, 192], [192, 192, 0], [0, 192, 0],
             [192, 0, 192], [0, 0, 192], [192, 0, 0]],
            dtype=np.uint8,
        )  # fmt: skip
        bars = np.roll(bars, index, axis=0)
        cols = (np.arange(width) * len(bars) // width).clip(0, len(bars) - 1)
        bg = np.empty((height, width, 3), dtype=np.uint8)
        bg[:, :] = bars[cols]
        ramp = np.linspace(0, 255, width, dtype=np.uint8)
        bg[height * 3 // 4 :, :, :] = ramp[None, :, None]
        self.bg = bg
        self.r = max(8, height // 10)
        yy, xx = np.mgrid[-self.r : self.r, -self.r : self.r]
        self.mask = xx * xx + yy * yy < self.r * self.r
        self.ball = np.array([[255, 255, 255], [0, 255, 255], [255, 0, 255]][index % 3], np.uint8)
        self.scale = max(2, width // 160)

    def paint(self, now: float | None = None) -> np.ndarray:
        """The next frame: background, ball where time puts it, clock text, stamp of `now`."""
        now = time.time() if now is None else now
        f = self.bg.copy()
        t = self.n / self.fps
        span_x, span_y = self.w - 2 * self.r, self.h - 2 * self.r
        px = int(abs((t * span_x / 3.0) % (2 * span_x) - span_x))
        py = int(abs((t * span_y / 2.0) % (2 * span_y) - span_y))
        f[py : py + 2 * self.r, px : px + 2 * self.r][self.mask] = self.ball
        s = self.scale
        clock = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now * 1000) % 1000:03d}"
        y0 = round(block_size(self.w) * 4)
        f[y0 - s : y0 + 8 * s, 0 : (len(clock) + 1) * 6 * s] = 0
        _draw_text(f, clock, s * 2, y0, s)
        counter = f"#{self.n:06d}"
        f[y0 + 9 * s : y0 + 18 * s, 0 : (len(counter) + 1) * 6 * s] = 0
        _draw_text(f, counter, s * 2, y0 + 10 * s, s)
        draw_stamp(f, int(now * 1000))
        self.n += 1
        return f
