"""The censor's decisions, fed raw packets without any network: each technique's rule, TCP
reassembly, the server block list, and the kernel rules it asks for."""

from __future__ import annotations

import os
import random
import re
import struct
from dataclasses import replace

import pytest
from lab_doubles import encrypted_looking

from elsewhere.codecs import client_hellos
from elsewhere.codecs.tls13_client import Tls13Client
from elsewhere.codecs.tls13_trust import AnyCertificate
from elsewhere.lab import dns, fingerprints, plan
from elsewhere.lab.censor import CensorEngine, Verdict, ruleset
from elsewhere.lab.clienthello import (
    ja3,
    ja4,
    parse_client_hello,
    python_default_hello,
)
from elsewhere.lab.packet import TCP_ACK, TCP_PSH, TCP_SYN, build_tcp, build_udp, parse
from elsewhere.lab.policy import CensorConfig
from elsewhere.lab.techniques import MARK_BLOCK, MARK_EXEMPT, MARK_RESET, MARK_THROTTLE
from elsewhere.lab.techniques.fet_gfw import exemption
from elsewhere.lab.techniques.proto_sig import http_host, openvpn, socks5, wireguard

pytestmark = pytest.mark.lab

CLIENT = plan.CLIENT
ISN = 1000


def engine(*techniques: str, **settings: object) -> CensorEngine:
    return CensorEngine(CensorConfig(techniques=techniques, seed=1, **settings))  # type: ignore[arg-type]


def tcp_open(e: CensorEngine, dst: str, dport: int, sport: int = 40000, now: float = 0) -> Verdict:
    return e.judge(build_tcp(CLIENT, sport, dst, dport, b"", seq=ISN, flags=TCP_SYN), now)


def tcp_data(e: CensorEngine, dst: str, dport: int, data: bytes, offset: int = 0,
             sport: int = 40000, now: float = 0) -> Verdict:
    raw = build_tcp(CLIENT, sport, dst, dport, data, seq=ISN + 1 + offset, flags=TCP_ACK | TCP_PSH)
    return e.judge(raw, now)


def blocks(verdict: Verdict) -> bool:
    return verdict.kind == "mark" and bool(verdict.mark & (MARK_BLOCK | MARK_RESET))


# -- DNS, SNI, IP --------------------------------------------------------------------------


def test_dns_poison_answers_for_the_resolver_with_the_sinkhole_and_drops_the_query() -> None:
    e = engine("dns_poison")
    query = dns.encode_query(0x1234, "www.instagram.test")
    verdict = e.judge(build_udp(CLIENT, 5353, plan.DNS, 53, query), 0)
    assert verdict.kind == "drop" and len(verdict.inject) == 1
    forged = parse(verdict.inject[0])
    assert forged is not None
    assert (forged.src, forged.sport, forged.dst, forged.dport) == (plan.DNS, 53, CLIENT, 5353)
    assert dns.answer_addresses(forged.payload) == (plan.SINKHOLE,)
    assert struct.unpack_from("!H", forged.payload)[0] == 0x1234


def test_dns_poison_lets_other_names_and_other_record_types_pass() -> None:
    e = engine("dns_poison")
    for name, qtype in (("bank.test", dns.TYPE_A), ("instagram.test", dns.TYPE_AAAA)):
        query = dns.encode_query(1, name, qtype)
        assert e.judge(build_udp(CLIENT, 5353, plan.DNS, 53, query), 0).kind == "accept"


def test_sni_block_reads_a_client_hello_that_arrives_in_two_segments_out_of_order() -> None:
    e = engine("sni_block")
    hello = python_default_hello("instagram.test")
    tcp_open(e, "10.77.200.10", 443)
    assert tcp_data(e, "10.77.200.10", 443, hello[40:], offset=40).kind == "accept"
    verdict = tcp_data(e, "10.77.200.10", 443, hello[:40])
    assert verdict.mark & MARK_RESET


def test_sni_block_spares_other_names_and_sni_throttle_marks_instead_of_blocking() -> None:
    tcp = engine("sni_block")
    tcp_open(tcp, "10.77.200.10", 443)
    assert tcp_data(tcp, "10.77.200.10", 443, python_default_hello("bank.test")).kind == "accept"
    slow = engine("sni_throttle")
    tcp_open(slow, "10.77.100.10", 443)
    verdict = tcp_data(slow, "10.77.100.10", 443, python_default_hello("instagram.test"))
    assert verdict.mark & MARK_THROTTLE and not blocks(verdict)


def test_ip_block_drops_the_syn_to_a_blocked_address() -> None:
    e = engine("ip_block")
    assert blocks(tcp_open(e, plan.site("instagram.test").address, 443))
    assert tcp_open(e, plan.site("bank.test").address, 443).kind == "accept"


# -- protocol signatures ---------------------------------------------------------------------


def test_proto_sig_knows_wireguard_by_type_and_exact_size() -> None:
    assert wireguard(b"\x01\0\0\0" + bytes(144))
    assert wireguard(b"\x02\0\0\0" + bytes(88))
    assert wireguard(b"\x03\0\0\0" + bytes(60))
    assert wireguard(b"\x01\0\0\0" + bytes(145)) is None  # wrong size for an initiation
    assert wireguard(b"\x01\0\x01\0" + bytes(144)) is None  # reserved bytes must be zero


def test_proto_sig_knows_openvpn_hard_resets_over_udp_and_tcp() -> None:
    reset = bytes([7 << 3]) + bytes(13)
    assert openvpn(reset, over_tcp=False)
    assert openvpn(len(reset).to_bytes(2, "big") + reset, over_tcp=True)
    assert openvpn(bytes([7 << 3 | 1]) + bytes(13), over_tcp=False) is None  # key id 1
    assert openvpn(bytes([4 << 3]) + bytes(13), over_tcp=False) is None  # P_CONTROL_V1


def test_proto_sig_knows_socks5_and_plain_http_to_blocked_hosts() -> None:
    assert socks5(b"\x05\x01\x00") and socks5(b"\x05\x02\x00\x02")
    assert socks5(b"\x05\x02\x00") is None
    request = b"GET / HTTP/1.1\r\nHost: instagram.test\r\n\r\n"
    assert http_host(request, plan.BLOCKED_NAMES)
    assert http_host(request.replace(b"instagram", b"bank"), plan.BLOCKED_NAMES) is None


# -- the GFW's fully encrypted traffic rule -------------------------------------------------


def test_fet_exemptions_are_the_five_rules_of_wu_et_al() -> None:
    rng = random.Random(3)
    assert exemption(bytes(100)) == "Ex1"  # 0 bits per byte
    assert exemption(b"\xff" * 100) == "Ex1"
    assert exemption(b"abcdef" + encrypted_looking(rng)) == "Ex2"
    assert exemption(b"\xf7ab" * 40) == "Ex3"  # two thirds printable, runs of two
    body = encrypted_looking(rng, 200)
    assert exemption(body[:100] + b"Q" * 21 + body[100:]) == "Ex4"
    assert exemption(b"\x16\x03\x01" + encrypted_looking(rng)) == "Ex5"
    assert exemption(b"POST" + encrypted_looking(rng)) == "Ex5"
    assert exemption(encrypted_looking(rng)) is None


def test_fet_blocks_a_share_of_encrypted_first_packets_and_then_the_server_port() -> None:
    e = engine("fet_gfw", fet_probability=1.0, fet_residual_seconds=180.0)
    rng = random.Random(4)
    tcp_open(e, plan.SERVER, 8388)
    assert blocks(tcp_data(e, plan.SERVER, 8388, encrypted_looking(rng)))
    assert blocks(tcp_open(e, plan.SERVER, 8388, sport=40001, now=100))  # residual
    assert not blocks(tcp_open(e, plan.SERVER, 8389, sport=40002, now=100))  # other port
    assert not blocks(tcp_open(e, plan.SERVER, 8388, sport=40003, now=181))  # expired


def test_a_retransmitted_syn_to_a_blocked_server_is_blocked_too() -> None:
    """The blocked SYN is dropped before the kernel confirms its connection, so no connmark
    holds the block: the client's retry (same 4-tuple, same sequence) must be judged again."""
    e = engine("fet_gfw", fet_probability=1.0, fet_residual_seconds=180.0)
    tcp_open(e, plan.SERVER, 8388)
    assert blocks(tcp_data(e, plan.SERVER, 8388, encrypted_looking(random.Random(6))))
    assert blocks(tcp_open(e, plan.SERVER, 8388, sport=40001, now=10))
    assert blocks(tcp_open(e, plan.SERVER, 8388, sport=40001, now=11))  # its retransmission
    assert blocks(tcp_open(e, plan.SERVER, 8388, sport=40001, now=13))  # and the next one


def test_fet_ignores_a_connection_it_did_not_see_open() -> None:
    e = engine("fet_gfw", fet_probability=1.0)
    assert tcp_data(e, plan.SERVER, 8388, encrypted_looking(random.Random(5))).kind == "accept"


# -- UDP, allowlist, freeze, cooldown ---------------------------------------------------------


def test_udp_hostile_lets_a_few_unknown_datagrams_through_then_drops_the_flow() -> None:
    e = engine("udp_hostile", udp_hostile_packets=3)
    payload = encrypted_looking(random.Random(6), 120)
    verdicts = [e.judge(build_udp(CLIENT, 4000, plan.SERVER, 51820, payload), 0)
                for _ in range(4)]
    assert [blocks(v) for v in verdicts] == [False, False, False, True]
    dns_query = build_udp(CLIENT, 4001, plan.DNS, 53, dns.encode_query(1, "bank.test"))
    assert all(e.judge(dns_query, 0).kind == "accept" for _ in range(6))


def test_allowlist_passes_the_handshake_and_loses_the_first_data_packet() -> None:
    e = engine("allowlist")
    assert tcp_open(e, plan.SERVER, 443).kind == "accept"
    assert blocks(tcp_data(e, plan.SERVER, 443, python_default_hello("abroad.test")))
    tcp_open(e, plan.site("bank.test").address, 443, sport=40001)
    assert tcp_data(e, plan.site("bank.test").address, 443, b"GET / HTTP/1.1\r\n\r\n",
                    sport=40001).kind == "accept"


def test_freeze_exempts_an_allowlisted_sni_on_foreign_hosting_only() -> None:
    e = engine("freeze_16k")
    cdn = plan.site("cdn.test").address
    tcp_open(e, cdn, 443)
    assert tcp_data(e, cdn, 443, python_default_hello("cdn.test")).mark & MARK_EXEMPT
    blog = plan.site("blog.test").address
    tcp_open(e, blog, 443, sport=40001)
    assert tcp_data(e, blog, 443, python_default_hello("blog.test"), sport=40001).kind == "accept"


def test_cooldown_blocks_the_server_port_after_another_technique_fired() -> None:
    e = engine("sni_block", "cooldown", cooldown_seconds=60.0)
    bank = plan.site("bank.test").address
    tcp_open(e, bank, 443)
    assert blocks(tcp_data(e, bank, 443, python_default_hello("instagram.test")))
    assert blocks(tcp_open(e, bank, 443, sport=40001, now=30))
    assert not blocks(tcp_open(e, bank, 443, sport=40002, now=61))


# -- fingerprints and kernel rules -------------------------------------------------------------


def test_fingerprint_resets_pythons_default_client_hello() -> None:
    e = engine("fingerprint")
    tcp_open(e, plan.site("bank.test").address, 443)
    assert tcp_data(e, plan.site("bank.test").address, 443,
                    python_default_hello("bank.test")).mark & MARK_RESET


def utls_chrome_hello(server_name: str) -> bytes:
    """A hello with uTLS HelloChrome_133's contents (what Xray and sing-box send for
    fp=chrome): Chrome 152's without its trust anchor ids, as a censor's JA4 sees it."""
    shape = replace(client_hellos.CHROME, extensions=tuple(
        e for e in client_hellos.CHROME.extensions if e != client_hellos.EXT_TRUST_ANCHORS),
        signature_algorithms=fingerprints.UTLS_CHROME_133.signature_algorithms)
    draft = client_hellos.HelloDraft.new(shape, server_name, ("h2", "http/1.1"), os.urandom)
    return Tls13Client(draft, AnyCertificate()).start()


def judged(e: CensorEngine, hello: bytes, sport: int) -> bool:
    bank = plan.site("bank.test").address
    tcp_open(e, bank, 443, sport=sport)
    return bool(tcp_data(e, bank, 443, hello, sport=sport).mark & MARK_RESET)


def test_the_default_list_is_the_2026_06_wave_utls_chrome_reset_browsers_pass() -> None:
    e = engine("fingerprint")
    assert ja4(parse_client_hello(utls_chrome_hello("bank.test"))) in fingerprints.resolve(
        ["utls-chrome"])
    assert judged(e, utls_chrome_hello("bank.test"), 40001)
    assert judged(e, python_default_hello("bank.test"), 40002)
    assert not judged(e, elsewhere_record("chrome"), 40003)
    assert not judged(e, elsewhere_record("firefox"), 40004)


def test_a_list_naming_chrome_resets_elsewheres_chrome_and_lets_firefox_through() -> None:
    e = engine("fingerprint", blocked_fingerprints=("chrome",))
    assert judged(e, elsewhere_record("chrome"), 40001)
    assert not judged(e, elsewhere_record("firefox"), 40002)
    assert not judged(e, python_default_hello("bank.test"), 40003)  # not on this list


def elsewhere_record(fingerprint: str) -> bytes:
    draft = client_hellos.HelloDraft.new(
        client_hellos.shape_for(fingerprint), "bank.test", ("h2", "http/1.1"), os.urandom)
    return Tls13Client(draft, AnyCertificate()).start()


def test_named_sets_hold_every_sni_and_alpn_variant_and_do_not_overlap() -> None:
    sets = {name: fingerprints.resolve([name]) for name in fingerprints.NAMED}
    for name in ("utls-chrome", "utls-firefox", "chrome", "firefox"):
        assert len(sets[name]) == len(fingerprints.SNI_VARIANTS) * len(fingerprints.ALPN_VARIANTS)
    names = list(sets)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not sets[a] & sets[b], f"{a} and {b} share a fingerprint"
    assert fingerprints.resolve(["t13d0000h2_x_y", "firefox"]) == {"t13d0000h2_x_y"} | sets[
        "firefox"]


def test_ja3_and_ja4_have_their_published_shapes() -> None:
    hello = parse_client_hello(python_default_hello("bank.test"))
    assert hello.server_name == "bank.test"
    assert re.fullmatch(r"[0-9a-f]{32}", ja3(hello))
    assert re.fullmatch(r"t13d\d{4}00_[0-9a-f]{12}_[0-9a-f]{12}", ja4(hello))


def test_the_kernel_queues_only_a_window_of_packets_and_fails_closed() -> None:
    config = CensorConfig(techniques=("freeze_16k",), queue_window=24)
    rules = ruleset(config, CensorEngine(config).techniques)
    queue = next(line for line in rules.splitlines() if "NFQUEUE" in line)
    assert "--connbytes 0:24" in queue and "--queue-bypass" not in queue
    assert "--connbytes 16384: --connbytes-dir reply" in rules


def test_config_travels_as_json() -> None:
    config = CensorConfig(techniques=("dns_poison", "fet_gfw"), seed=9, fet_probability=0.5)
    assert CensorConfig.from_json(config.to_json()) == config
