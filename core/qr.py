"""QR codes for participant tokens, as PNG or SVG (segno: pure Python, no image library).

Error correction M: a printed badge survives a crease or a smudge; a ~117-character token
fits a version-7 symbol, which phones and cheap scanners read at arm's length.
"""

from __future__ import annotations

import io

import segno


def qr_png(token: str, scale: int = 8) -> bytes:
    buf = io.BytesIO()
    segno.make(token, error="m", micro=False).save(buf, kind="png", scale=scale, border=4)
    return buf.getvalue()


def qr_svg(token: str, scale: int = 8) -> str:
    buf = io.BytesIO()
    segno.make(token, error="m", micro=False).save(
        buf, kind="svg", scale=scale, border=4, xmldecl=False
    )
    return buf.getvalue().decode()
