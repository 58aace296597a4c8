"""A packet capture on one interface of a lab namespace, like tcpdump: every IPv4 packet that
crosses it, parsed, kept in order. An AF_PACKET socket made inside the namespace and read by a
thread of this process; `stop()` (or the context's exit) ends it and returns what it saw.

    with Capture(lab, "censor", "to-client") as seen:
        ...
    leaks = [p for p in seen.packets if p.src == plan.CLIENT and p.dst != plan.SERVER]
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from types import TracebackType

from elsewhere.lab.netns import socket_in
from elsewhere.lab.packet import Packet, parse
from elsewhere.lab.plan import Role
from elsewhere.lab.topology import Lab

ETH_P_IP = 0x0800
SNAPLEN = 65535


class Capture:
    def __init__(self, lab: Lab, role: Role, interface: str) -> None:
        self.packets: list[Packet] = []
        self._sock = socket_in(lab.ns(role), socket.AF_PACKET, socket.SOCK_DGRAM,
                               socket.htons(ETH_P_IP))
        self._sock.bind((interface, ETH_P_IP))
        self._sock.setblocking(False)
        self._stop_r, self._stop_w = socket.socketpair()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, name=f"capture-{interface}",
                                        daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            ready, _, _ = select.select([self._sock, self._stop_r], [], [])
            if self._stop_r in ready:
                self._drain()
                return
            self._drain()

    def _drain(self) -> None:
        while True:
            try:
                raw = self._sock.recv(SNAPLEN)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            packet = parse(raw)
            if packet is not None:
                with self._lock:
                    self.packets.append(packet)

    def seen(self) -> list[Packet]:
        with self._lock:
            return list(self.packets)

    def stop(self) -> list[Packet]:
        if self._thread.is_alive():
            with contextlib.suppress(OSError):
                self._stop_w.send(b"x")
            self._thread.join()
        for sock in (self._sock, self._stop_r, self._stop_w):
            sock.close()
        return self.seen()

    def __enter__(self) -> Capture:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
