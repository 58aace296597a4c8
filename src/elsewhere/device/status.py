"""The live status line of full-device mode: the transport, the server, sessions, bytes, the
DNS answers given and the last error, redrawn once a second (the proxy mode's line, plus what
only full-device mode has)."""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO

from elsewhere.control.status import status_line
from elsewhere.engine import Engine
from elsewhere.inbounds.dns import DnsInbound


def vpn_status_line(engine: Engine, protocol: str, server: str) -> str:
    stats = engine.stats
    answered = sum(i.answered for i in engine.inbounds if isinstance(i, DnsInbound))
    line = (f"vpn {protocol} · {status_line(engine, server)} · {stats.sessions} sessions"
            f" · {answered} DNS answers")
    if stats.failed:
        line += f" · {stats.failed} failed"
    if stats.last_failed:
        line += " · last error: the server did not answer"
    return line


async def show(engine: Engine, protocol: str, server: str, out: TextIO = sys.stderr) -> None:
    """Redraw the line in place on a terminal; elsewhere print it when its state changes."""
    last_state = None
    tty = out.isatty()
    while True:
        line = vpn_status_line(engine, protocol, server)
        state = line.split(" · ")[1]  # ready / connected to / cannot reach
        if tty:
            out.write("\r\x1b[2K" + line)
            out.flush()
        elif state != last_state:
            out.write(line + "\n")
            out.flush()
        last_state = state
        await asyncio.sleep(1.0)
