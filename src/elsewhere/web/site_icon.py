"""A decoy site's favicon: one to three sizes of a small mark in random colours, as BMP or PNG
frames of one .ico file."""

from __future__ import annotations

import math
import random
import struct
import zlib
from collections.abc import Callable


def favicon(rng: random.Random) -> bytes:
    sizes = rng.choice(((16,), (32,), (16, 32), (16, 32, 48)))
    fg = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
    bg = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
    shape = _SHAPES[rng.randrange(len(_SHAPES))]
    png = rng.random() < 0.4
    frames = []
    for size in sizes:
        pixels = _draw(size, shape, fg, bg)
        frames.append(_png(size, pixels) if png and size >= 32 else _bmp(size, pixels))
    header = struct.pack("<HHH", 0, 1, len(frames))
    offset = len(header) + 16 * len(frames)
    entries, blobs = b"", b""
    for size, frame in zip(sizes, frames, strict=True):
        entries += struct.pack("<BBBBHHII", size % 256, size % 256, 0, 0, 1, 32, len(frame), offset)
        blobs += frame
        offset += len(frame)
    return header + entries + blobs


Pixel = tuple[int, int, int, int]  # RGBA


def _circle(x: float, y: float) -> bool:
    return (x - 0.5) ** 2 + (y - 0.5) ** 2 <= 0.21


def _rounded(x: float, y: float) -> bool:
    dx, dy = max(0.0, abs(x - 0.5) - 0.3), max(0.0, abs(y - 0.5) - 0.3)
    return dx * dx + dy * dy <= 0.025


def _diamond(x: float, y: float) -> bool:
    return abs(x - 0.5) + abs(y - 0.5) <= 0.48


def _ring(x: float, y: float) -> bool:
    return 0.09 <= (x - 0.5) ** 2 + (y - 0.5) ** 2 <= 0.22


def _leaf(x: float, y: float) -> bool:
    return (x - 0.35) ** 2 + (y - 0.35) ** 2 <= 0.2 and (x - 0.65) ** 2 + (y - 0.65) ** 2 <= 0.2


_SHAPES: tuple[Callable[[float, float], bool], ...] = (_circle, _rounded, _diamond, _ring, _leaf)


def _draw(
    size: int,
    shape: Callable[[float, float], bool],
    fg: tuple[int, int, int],
    bg: tuple[int, int, int],
) -> list[list[Pixel]]:
    """Rows top to bottom; the shape in `fg` on a `bg` square of the same shape, edges
    antialiased by 4x4 supersampling."""
    rows = []
    for j in range(size):
        row = []
        for i in range(size):
            hits = sum(
                shape((i + (a + 0.5) / 4) / size, (j + (b + 0.5) / 4) / size)
                for a in range(4)
                for b in range(4)
            )
            alpha = round(255 * hits / 16)
            inner = _circle((i + 0.5) / size * 1.35 - 0.175, (j + 0.5) / size * 1.35 - 0.175)
            r, g, b = bg if inner and shape is not _ring else fg
            row.append((r, g, b, alpha))
        rows.append(row)
    return rows


def _bmp(size: int, rows: list[list[Pixel]]) -> bytes:
    mask_row = math.ceil(size / 32) * 4
    pixels = b"".join(
        bytes((b, g, r, a)) for row in reversed(rows) for r, g, b, a in row
    )  # BMP rows go bottom up, BGRA
    mask = bytes(mask_row * size)  # the alpha channel decides; the AND mask is all opaque
    header = struct.pack(
        "<IiiHHIIiiII", 40, size, 2 * size, 1, 32, 0, len(pixels) + len(mask), 0, 0, 0, 0
    )
    return header + pixels + mask


def _png(size: int, rows: list[list[Pixel]]) -> bytes:
    raw = b"".join(b"\x00" + bytes(v for px in row for v in px) for row in rows)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )
