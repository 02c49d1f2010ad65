"""A PNG reader for tests (8-bit RGB / RGBA, not interlaced: what Chromium writes), so that checking a
screenshot's pixels needs no imaging library. Sub and Up rows are unfiltered with numpy, Average and Paeth
row by row in Python (about a second for a full-page screenshot)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import numpy.typing as npt


def read_png(path: Path) -> npt.NDArray[np.uint8]:
    """The image as an (height, width, channels) uint8 array."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    width = height = channels = 0
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and color in (2, 6) and interlace == 0, "only 8-bit RGB(A), not interlaced"
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, width * channels + 1)
    out = np.zeros((height, width * channels), dtype=np.uint8)
    prev = np.zeros(width * channels, dtype=np.uint8)
    for y in range(height):
        ftype, line = raw[y, 0], raw[y, 1:]
        if ftype == 0:
            row = line.copy()
        elif ftype == 1:  # Sub: a running sum per channel
            row = (np.cumsum(line.reshape(width, channels).astype(np.uint32), axis=0) % 256).astype(np.uint8)
            row = row.reshape(-1)
        elif ftype == 2:  # Up
            row = line + prev
        else:
            row = _avg_paeth(int(ftype), line.tolist(), prev.tolist(), channels)
        out[y] = row
        prev = row
    return out.reshape(height, width, channels)


def _avg_paeth(ftype: int, line: list[int], prev: list[int], bpp: int) -> npt.NDArray[np.uint8]:
    row = [0] * len(line)
    for i, x in enumerate(line):
        a = row[i - bpp] if i >= bpp else 0
        b = prev[i]
        if ftype == 3:
            row[i] = (x + (a + b) // 2) & 0xFF
        else:
            c = prev[i - bpp] if i >= bpp else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            row[i] = (x + pred) & 0xFF
    return np.array(row, dtype=np.uint8)
