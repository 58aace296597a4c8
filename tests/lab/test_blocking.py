"""With dns_poison + sni_block + ip_block on, the blocked site is unreachable directly and the
domestic one is not; each technique bites on its own; the censor reads a ClientHello that arrives
in two TCP segments."""

from __future__ import annotations

import socket
import struct

import pytest
from lab_doubles import CensorStarter

from elsewhere.lab import dns, plan
from elsewhere.lab.clienthello import python_default_hello
from elsewhere.lab.sites import read_access_log
from elsewhere.lab.topology import Lab
from elsewhere.lab.transport import fetch
from elsewhere.lab.wait import wait_until

pytestmark = pytest.mark.lab

TCP_INFO_UNACKED = 24  # offset of tcpi_unacked in struct tcp_info (linux/tcp.h)


def test_instagram_is_unreachable_directly_while_bank_is_reachable(
    lab: Lab, censor: CensorStarter
) -> None:
    running = censor("dns_poison", "sni_block", "ip_block")
    assert not fetch(lab, "https://instagram.test/", connect_timeout=1, timeout=2).reached
    assert not fetch(lab, "https://facebook.test/", connect_timeout=1, timeout=2).reached
    assert fetch(lab, "https://bank.test/").reached
    assert {e["technique"] for e in running.decisions()} >= {"dns_poison"}
    assert not [r for r in read_access_log(lab.workdir) if r["site"] == "instagram.test"]


def test_dns_poison_answers_a_blocked_name_with_the_sinkhole(
    lab: Lab, censor: CensorStarter
) -> None:
    censor("dns_poison")
    with lab.socket("client", socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        for name, expected in (("instagram.test", plan.SINKHOLE),
                               ("bank.test", plan.site("bank.test").address)):
            sock.sendto(dns.encode_query(7, name), (plan.DNS, 53))
            assert dns.answer_addresses(sock.recv(512)) == (expected,)


def test_sni_block_resets_a_blocked_name_even_on_a_domestic_address(
    lab: Lab, censor: CensorStarter
) -> None:
    running = censor("sni_block")
    bank = plan.site("bank.test").address
    page = fetch(lab, "https://instagram.test/", timeout=2)
    assert not page.reached and "reset" in page.error.lower()
    # Same address, harmless name: the block is about the name alone.
    with lab.connect("client", bank, 443) as sock:
        sock.sendall(python_default_hello("bank.test"))
        assert sock.recv(5)[:1] == b"\x16"  # a ServerHello record
    assert [e["reason"] for e in running.decisions("sni_block")] == ["SNI instagram.test"]


def test_sni_block_reads_a_client_hello_split_over_two_segments(
    lab: Lab, censor: CensorStarter
) -> None:
    running = censor("sni_block")
    hello = python_default_hello("instagram.test")
    with lab.connect("client", plan.site("bank.test").address, 443) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(hello[:30])  # the record header and the start of the hello, no SNI yet

        def first_segment_acked() -> bool:
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
            return struct.unpack_from("I", info, TCP_INFO_UNACKED)[0] == 0

        wait_until(first_segment_acked, 2, "the first segment to be acknowledged")
        assert not running.decisions()  # half a ClientHello decides nothing
        sock.sendall(hello[30:])
        with pytest.raises(ConnectionResetError):
            sock.recv(5)
    assert running.decisions("sni_block")


def test_ip_block_drops_connections_to_the_blocked_address(
    lab: Lab, censor: CensorStarter
) -> None:
    censor("ip_block")
    with pytest.raises(OSError):
        lab.connect("client", plan.site("instagram.test").address, 443, timeout=1).close()
    lab.connect("client", plan.site("bank.test").address, 443, timeout=1).close()


def test_fingerprint_resets_pythons_default_tls_but_not_curl(
    lab: Lab, censor: CensorStarter
) -> None:
    import ssl

    running = censor("fingerprint")
    context = ssl.create_default_context(cafile=str(lab.ca_cert))
    with lab.connect("client", plan.site("bank.test").address, 443) as sock, \
            pytest.raises(ConnectionResetError):
        context.wrap_socket(sock, server_hostname="bank.test")
    assert fetch(lab, "https://bank.test/").reached  # curl's ClientHello is a different one
    assert [e["technique"] for e in running.decisions()] == ["fingerprint"]
