"""QR codes of access keys for a terminal (ISO/IEC 18004 via the `qrcode` library), drawn with
half-block characters so that one text line holds two module rows and the code stays square."""

from __future__ import annotations

import qrcode
from qrcode.constants import ERROR_CORRECT_M

QUIET_ZONE = 4  # ISO/IEC 18004: four light modules around the symbol, or scanners miss it
# M (15 %) survives a glare or a moiré on a photographed screen; an ss:// link still fits
# in an 80-column terminal.
ERROR_CORRECTION = ERROR_CORRECT_M

# (upper module inked, lower module inked) -> character
_BLOCKS = {
    (False, False): " ",
    (True, False): "▀",
    (False, True): "▄",
    (True, True): "█",
}


def qr_matrix(data: str) -> list[list[bool]]:
    """The QR modules of `data` with the quiet zone, True for dark, row by row."""
    code = qrcode.QRCode(error_correction=ERROR_CORRECTION, border=QUIET_ZONE)
    code.add_data(data)
    code.make(fit=True)
    return [list(row) for row in code.get_matrix()]


def qr_text(data: str, *, dark_background: bool = True) -> str:
    """`data` as a QR code in text, lines joined by newlines (no trailing newline).

    A terminal can only draw its foreground colour, so the characters ink one colour of
    module: on a dark background (the default) they ink the light modules and the
    terminal's own darkness shows through as the dark ones; pass dark_background=False on a
    light terminal to ink the dark modules instead. Either way the scanner sees dark modules on
    a light quiet zone, which is what it needs."""
    matrix = qr_matrix(data)
    ink = [[module != dark_background for module in row] for row in matrix]
    if len(ink) % 2:
        # The half row below the symbol is quiet zone too.
        ink.append([dark_background] * len(ink[0]))
    lines = [
        "".join(_BLOCKS[pair] for pair in zip(upper, lower, strict=True))
        for upper, lower in zip(ink[::2], ink[1::2], strict=True)
    ]
    return "\n".join(lines)
