"""The client's live status line: is the server reachable, how many connections, bytes each
way. It reads the engine's counters once a second; the data path never waits for it."""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO

from elsewhere.engine import Engine

UNITS = ("B", "KB", "MB", "GB", "TB")


def human_bytes(n: float) -> str:
    for unit in UNITS:
        if n < 1000 or unit == UNITS[-1]:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def status_line(engine: Engine, server: str) -> str:
    s = engine.stats
    up, down = engine.traffic()
    if s.sessions == 0:
        state = f"ready, server {server}"
    elif s.last_failed:
        state = f"cannot reach {server}"
    else:
        state = f"connected to {server}"
    line = f"{state} · {s.active} open · ↑ {human_bytes(up)} ↓ {human_bytes(down)}"
    watch = getattr(engine.outbounds.get("proxy"), "clock_watch", None)
    if watch is not None and watch.suspect:
        line += " · check the system clock: Shadowsocks 2022 needs it within 30 s"
    return line


async def show_status(engine: Engine, server: str, out: TextIO = sys.stderr) -> None:
    """Redraw the line in place on a terminal; elsewhere print a line when it changes."""
    last = ""
    tty = out.isatty()
    while True:
        line = status_line(engine, server)
        if tty:
            out.write("\r\x1b[2K" + line)
            out.flush()
        elif line.split(" · ")[0] != last.split(" · ")[0]:
            out.write(line + "\n")
            out.flush()
        last = line
        await asyncio.sleep(1.0)
