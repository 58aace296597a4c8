"""The client's status line says what a person needs: reachable or not, traffic, clock."""

from __future__ import annotations

from elsewhere.config import from_mapping
from elsewhere.control.status import human_bytes, status_line
from elsewhere.engine import Engine


def client(method: str = "aes-256-gcm", password: str = "pw") -> Engine:
    return Engine(
        from_mapping(
            {
                "inbounds": [{"type": "mixed", "port": 0}],
                "outbounds": [
                    {
                        "type": "ss2022" if method.startswith("2022") else "shadowsocks",
                        "tag": "proxy",
                        "server": "127.0.0.1",
                        "port": 1,
                        "method": method,
                        "password": password,
                    }
                ],
            }
        )
    )


def test_human_bytes() -> None:
    assert human_bytes(999) == "999 B"
    assert human_bytes(1500) == "1.5 KB"
    assert human_bytes(2_500_000_000) == "2.5 GB"


def test_line_follows_the_last_connection() -> None:
    engine = client()
    assert status_line(engine, "s:1").startswith("ready, server s:1")
    engine.stats.sessions, engine.stats.last_failed = 1, True
    assert status_line(engine, "s:1").startswith("cannot reach s:1")
    engine.stats.last_failed = False
    engine.stats.up, engine.stats.down = 2000, 3_000_000
    assert status_line(engine, "s:1") == "connected to s:1 · 0 open · ↑ 2.0 KB ↓ 3.0 MB"


def test_clock_suspicion_reaches_the_status_line() -> None:
    from elsewhere.codecs.ss2022 import generate_psk

    method = "2022-blake3-aes-128-gcm"
    engine = client(method, generate_psk(method))
    assert "system clock" not in status_line(engine, "s:1")
    engine.outbounds["proxy"].clock_watch.suspect = True  # type: ignore[attr-defined]
    assert "check the system clock" in status_line(engine, "s:1")


def test_first_run_ports_are_free_for_tcp_and_udp() -> None:
    import socket
    from pathlib import Path

    from elsewhere.protocols.base import random_port

    # below the ephemeral range, where this machine's outgoing connections take their ports
    ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(20):
        port = random_port()
        assert 10000 <= port < min(20000, ephemeral)
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            with socket.socket(socket.AF_INET, kind) as probe:
                probe.bind(("", port))
