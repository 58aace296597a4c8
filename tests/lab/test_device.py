"""Full-device mode in the lab (issue 12): with `elsewhere vpn` confined to the client
namespace and no proxy setting anywhere, curl, dig and a UDP exchange reach the blocked site
through the server; a capture at the censor holds no DNS query for it and no packet to its
address; the split rule's domestic site goes direct; after kill -9 nothing leaves the client
but toward the server; the next start cleans up what the crash left; `--off` puts routes,
rules and nftables back exactly as they were."""

from __future__ import annotations

import os
import select
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from conftest import CensorStarter
from elsewhere.lab import plan
from elsewhere.lab.capture import Capture
from elsewhere.lab.device import (
    network_state,
    shadowsocks_server,
    start_vpn,
    tls_server,
    vpn_off,
)
from elsewhere.lab.elsewhere_transports import HTTP_PREFIX
from elsewhere.lab.netns import socket_in
from elsewhere.lab.packet import Packet
from elsewhere.lab.sites import PAGE_BYTES, read_access_log
from elsewhere.lab.topology import Lab
from elsewhere.lab.transport import fetch

pytestmark = pytest.mark.lab

BLOCKED = plan.site("instagram.test")
DOMESTIC = plan.site("bank.test")
URL = f"https://{BLOCKED.name}/"
ECHO_PORT = 7777


@contextmanager
def udp_echo(lab: Lab) -> Iterator[None]:
    """A UDP service on the blocked site's address that answers with who asked."""
    sock = socket_in(lab.ns("internet"), socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((BLOCKED.address, ECHO_PORT))
    stop_r, stop_w = socket.socketpair()

    def serve() -> None:
        while True:
            ready, _, _ = select.select([sock, stop_r], [], [])
            if stop_r in ready:
                return
            data, peer = sock.recvfrom(2048)
            sock.sendto(peer[0].encode() + b" " + data, peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop_w.send(b"x")
        thread.join(5)
        for end in (sock, stop_r, stop_w):
            end.close()


def udp_exchange(lab: Lab, payload: bytes, timeout: float = 3.0) -> bytes | None:
    with lab.socket("client", socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(payload, (BLOCKED.address, ECHO_PORT))
        try:
            return sock.recv(2048)
        except TimeoutError:
            return None
        except OSError:
            return None  # refused by the kill switch


def dig(lab: Lab, name: str) -> list[str] | None:
    done = lab.run("client", ["dig", "+short", "+time=2", "+tries=1", name], check=False)
    return done.stdout.split() if done.returncode == 0 else None


def from_client(packets: list[Packet]) -> list[Packet]:
    return [p for p in packets if p.src == plan.CLIENT]


def visitors(lab: Lab, site: str) -> list[object]:
    return [r["client"] for r in read_access_log(lab.workdir) if r["site"] == site]


def test_every_program_goes_through_the_tunnel_and_nothing_leaks_even_after_kill_9(
    lab: Lab, censor: CensorStarter
) -> None:
    running = censor("dns_poison", "sni_block", "ip_block")
    before = network_state(lab)
    assert not fetch(lab, URL, connect_timeout=1, timeout=2).reached  # blocked directly
    assert dig(lab, BLOCKED.name) == [plan.SINKHOLE]  # and its name forged
    with udp_echo(lab), shadowsocks_server(lab) as server:
        vpn = start_vpn(lab, server.link, ["--direct", DOMESTIC.name])
        seen_before = len(running.decisions())
        flows_before = len(running.flows())
        with Capture(lab, "censor", "to-client") as capture:
            page = fetch(lab, URL)
            answer = dig(lab, BLOCKED.name)
            echoed = udp_exchange(lab, b"ping")
            domestic = fetch(lab, f"https://{DOMESTIC.name}/")
        packets = from_client(capture.stop())

        # reached through the server: the site and the echo service see its address
        assert page.reached and page.size == PAGE_BYTES, page
        assert visitors(lab, BLOCKED.name) == [plan.SERVER]
        assert answer == [BLOCKED.address]
        assert echoed == f"{plan.SERVER} ping".encode()
        # the split rule's site went direct, from the client's own address
        assert domestic.reached, domestic
        assert visitors(lab, DOMESTIC.name) == [plan.CLIENT]
        # the censor saw the tunnel, the direct site and its lookup, nothing else
        assert packets
        assert not [p for p in packets if p.dst == BLOCKED.address]
        assert not [p for p in packets if BLOCKED.name.split(".")[0].encode() in p.payload]
        assert {p.dst for p in packets} <= {plan.SERVER, DOMESTIC.address, plan.DNS}
        lookups = [p for p in packets if p.dst == plan.DNS]
        assert lookups and all(DOMESTIC.name.split(".")[0].encode() in p.payload
                               for p in lookups)
        assert running.decisions()[seen_before:] == []
        # and so did the censor's own flow log: the tunnel, the direct site, its lookup
        flows = {str(f["destination"]).rsplit(":", 1)[0] for f in running.flows()[flows_before:]}
        assert BLOCKED.address not in flows
        assert flows <= {plan.SERVER, DOMESTIC.address, plan.DNS}

        # kill -9: the kill switch stays, nothing leaves but toward the server
        os.kill(vpn.pid, signal.SIGKILL)
        vpn.popen.wait(10)
        with Capture(lab, "censor", "to-client") as capture:
            assert not fetch(lab, URL, connect_timeout=1, timeout=2).reached
            assert dig(lab, BLOCKED.name) is None
            assert udp_exchange(lab, b"after", timeout=1.0) is None
            assert not fetch(lab, f"https://{DOMESTIC.name}/", connect_timeout=1,
                             timeout=2).reached
        assert {p.dst for p in from_client(capture.stop())} <= {plan.SERVER}

        # the next start cleans up what the crash left and works again
        vpn = start_vpn(lab, server.link, name="vpn-again")
        assert fetch(lab, URL).reached
        # a clean stop takes the diversion away and keeps the kill switch
        os.kill(vpn.pid, signal.SIGTERM)
        assert vpn.popen.wait(10) == 0
        tables = lab.run("client", ["nft", "list", "tables"]).stdout.split()
        assert "elsewhere_guard" in tables and "elsewhere" not in tables
        assert not fetch(lab, f"https://{DOMESTIC.name}/", connect_timeout=1,
                         timeout=2).reached

    # --off: everything exactly as it was, and the direct route works again
    done = vpn_off(lab)
    assert done.returncode == 0, done.stderr
    assert network_state(lab) == before
    assert fetch(lab, f"https://{DOMESTIC.name}/").reached


# every technique the proxy rows of elsewhere-ss-prefix survive (docs/lab.md), all at once
SURVIVED = ("dns_poison", "sni_block", "sni_throttle", "ip_block", "proto_sig", "fet_gfw",
            "active_probe", "udp_hostile", "fingerprint", "cooldown")


def test_under_every_technique_the_proxy_mode_survives_full_device_mode_does_too(
    lab: Lab, censor: CensorStarter
) -> None:
    running = censor(*SURVIVED)
    with udp_echo(lab), shadowsocks_server(lab, prefix=HTTP_PREFIX) as server:
        start_vpn(lab, server.link)
        for attempt in range(2):
            page = fetch(lab, URL)
            assert page.reached and page.size == PAGE_BYTES, (attempt, page)
        assert dig(lab, BLOCKED.name) == [BLOCKED.address]
        tcp = lab.run("client", ["dig", "+tcp", "+short", "+time=2", "+tries=1", BLOCKED.name])
        assert tcp.stdout.split() == [BLOCKED.address]  # DNS over TCP is answered too
        assert udp_exchange(lab, b"pong") == f"{plan.SERVER} pong".encode()
        # strict DNS: DNS over TLS is refused at once, and never leaves
        with lab.socket("client") as dot:
            dot.settimeout(2)
            with pytest.raises(OSError):
                dot.connect((plan.DNS, 853))
    assert visitors(lab, BLOCKED.name) == [plan.SERVER, plan.SERVER]
    # the censor has nothing to say about the tunnel
    assert not [e for e in running.decisions() if str(e["server"]).startswith(plan.SERVER)]
    assert not [f for f in running.flows() if str(f["destination"]).endswith(":853")]


@pytest.mark.parametrize("protocol", ["vless", "trojan"])
def test_full_device_mode_goes_over_the_tls_transports_too(
    lab: Lab, censor: CensorStarter, protocol: str
) -> None:
    censor("dns_poison", "sni_block", "ip_block", "udp_hostile")
    with udp_echo(lab), tls_server(lab, protocol) as server:
        start_vpn(lab, server.link)
        page = fetch(lab, URL)
        assert page.reached and page.size == PAGE_BYTES, page
        assert dig(lab, BLOCKED.name) == [BLOCKED.address]
        assert udp_exchange(lab, b"hi") == f"{plan.SERVER} hi".encode()  # UDP in the stream
    assert visitors(lab, BLOCKED.name) == [plan.SERVER]
