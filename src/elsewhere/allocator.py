"""glibc malloc settings for a relay. uvloop hands over reads of up to 256 KiB as new bytes and
each sealed chunk is as large; above glibc's default 128 KiB mmap threshold (and with the heap
top trimmed back after every free) each of them maps and unmaps fresh pages: the benchmark
counted 78 000 to 410 000 page faults per GB per process. Raising both thresholds keeps these
buffers on the heap: about 300 faults per run and twice the throughput (docs/benchmarks.md)."""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1  # glibc malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 20  # reads and sealed chunks (<= 256 KiB + overhead) stay on the heap
TRIM_THRESHOLD = 8 << 20  # keep up to 8 MiB free at the heap top instead of giving it back


def tune() -> bool:
    """Apply the settings where the C library is glibc; False (and nothing done) elsewhere."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
