"""Terminal QR codes: what is drawn is exactly qrcode's matrix, square, with its quiet zone."""

from __future__ import annotations

import math

import pytest
import qrcode

from elsewhere.control.qr import ERROR_CORRECTION, QUIET_ZONE, qr_text

LINK = "ss://Y2hhY2hhMjAtaWV0Zi1wb2x5MTMwNTpPeTVtQnVBSXp6U044Wlo5@203.0.113.7:443/?outline=1"
INK = {" ": (False, False), "▀": (True, False), "▄": (False, True), "█": (True, True)}


def reference_matrix(data: str) -> list[list[bool]]:
    code = qrcode.QRCode(error_correction=ERROR_CORRECTION, border=QUIET_ZONE)
    code.add_data(data)
    code.make(fit=True)
    return code.get_matrix()


def unrender(text: str) -> list[list[bool]]:
    """The inked module rows a text QR code shows, two per line."""
    rows: list[list[bool]] = []
    for line in text.split("\n"):
        pairs = [INK[ch] for ch in line]
        rows.append([upper for upper, _ in pairs])
        rows.append([lower for _, lower in pairs])
    return rows


@pytest.mark.parametrize("dark_background", [True, False])
def test_rendered_blocks_are_qrcodes_matrix(dark_background: bool) -> None:
    matrix = reference_matrix(LINK)
    drawn = unrender(qr_text(LINK, dark_background=dark_background))
    # Ink is the light modules on a dark terminal, the dark modules on a light one.
    expected = [[dark != dark_background for dark in row] for row in matrix]
    assert drawn[: len(matrix)] == expected
    # An odd module count leaves half a line below the symbol: quiet zone, never dark.
    assert all(ink == dark_background for row in drawn[len(matrix) :] for ink in row)


def test_code_is_square_in_a_terminal() -> None:
    lines = qr_text(LINK).split("\n")
    size = len(reference_matrix(LINK))
    assert all(len(line) == size for line in lines)
    assert len(lines) == math.ceil(size / 2)  # terminal cells are about twice as tall as wide


@pytest.mark.parametrize(("dark_background", "light"), [(True, "█"), (False, " ")])
def test_quiet_zone_of_four_light_modules_surrounds_the_code(
    dark_background: bool, light: str
) -> None:
    lines = qr_text(LINK, dark_background=dark_background).split("\n")
    assert QUIET_ZONE == 4
    assert lines[0] == lines[1] == light * len(lines[0])  # 2 lines = 4 module rows
    assert all(line[:4] == line[-4:] == light * 4 for line in lines)
    # The finder pattern's dark edge starts right after the quiet zone.
    assert lines[2][4] != light


def test_different_data_draws_a_different_code() -> None:
    assert qr_text(LINK) != qr_text(LINK.replace("443", "444"))


def test_only_half_blocks_and_spaces_are_used() -> None:
    assert set(qr_text(LINK)) <= {" ", "▀", "▄", "█", "\n"}
