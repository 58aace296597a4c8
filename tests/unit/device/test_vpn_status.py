"""Full-device mode's status line says the transport, the server, sessions, bytes, DNS answers
and the last error."""

from __future__ import annotations

from elsewhere.config import from_mapping
from elsewhere.device.status import vpn_status_line
from elsewhere.engine import Engine


def engine() -> Engine:
    return Engine(from_mapping({
        "inbounds": [{"type": "dns", "tag": "dns", "port": 0}],
        "outbounds": [{"type": "direct", "tag": "proxy"}],
    }))


def test_a_fresh_engine_is_ready() -> None:
    line = vpn_status_line(engine(), "ss", "192.0.2.1:8388")
    assert line.startswith("vpn ss · ready, server 192.0.2.1:8388 · 0 open")
    assert "0 sessions" in line and "0 DNS answers" in line and "error" not in line


def test_a_failing_server_shows_in_the_line() -> None:
    running = engine()
    running.stats.sessions, running.stats.failed, running.stats.last_failed = 3, 2, True
    running.stats.up = 1500
    line = vpn_status_line(running, "vless", "192.0.2.1:443")
    assert "cannot reach 192.0.2.1:443" in line and "↑ 1.5 KB" in line
    assert "3 sessions" in line and "2 failed" in line and "last error" in line
