"""CSV cells a spreadsheet shows as text, never runs as a formula (OWASP's CSV-injection advice).

A slide, patient or region name comes from the user's files; written into a CSV as it is, a name
such as ``=HYPERLINK("http://…")`` or ``+cmd|' /C calc'!A0`` is run by Excel or LibreOffice when the
file is opened. So every text cell the package writes into a CSV goes through :func:`text_cell`:
one that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading single
quote, and cells are quoted as RFC 4180 says (``"…"``, inner quotes doubled) where needed.
Numbers are written as numbers (a negative probability difference stays ``-0.5``). Readers of the
package's own CSVs undo the quote with :func:`read_cell`, so names round-trip.
"""

from __future__ import annotations

#: Cells starting with one of these are taken as formulas by spreadsheets.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(text: str) -> str:
    """``text`` with a leading ``'`` if a spreadsheet would run it (or it already starts with
    quotes before such a character, so :func:`read_cell` gives back exactly ``text``)."""
    return "'" + text if text.lstrip("'").startswith(FORMULA_STARTS) else text


def read_cell(text: str) -> str:
    """Undo :func:`neutralise`."""
    if text.startswith("'") and text[1:].lstrip("'").startswith(FORMULA_STARTS):
        return text[1:]
    return text


def quote(text: str) -> str:
    """One CSV field (RFC 4180): quoted, inner quotes doubled, when it holds , " or a line break."""
    if any(c in text for c in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def text_cell(text: str) -> str:
    """A text cell, safe for spreadsheets and quoted as needed."""
    return quote(neutralise(text))
