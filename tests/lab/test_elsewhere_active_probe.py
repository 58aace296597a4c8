"""active_probe against elsewhere's servers. A Shadowsocks or Shadowsocks 2022 server meets the
censor's replays and random probes exactly as a server that swallows everything in silence does
(the distinguishable double of test_active_probe, which it does flag, shows the prober works);
with a printable prefix the server is not even a suspect. A TLS server is never a suspect (its
first packet is TLS), and a censor that completes the handshake and probes inside TLS gets
what the decoy site alone, behind the same certificate, gives."""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from typing import Any

import pytest
from lab_doubles import TcpDouble, encrypted_looking, exchange, read_forever

from conftest import CensorStarter
from elsewhere.lab import plan
from elsewhere.lab.censor import CensorProcess, Event
from elsewhere.lab.elsewhere_transports import (
    ElsewhereShadowsocks,
    ElsewhereSs2022,
    ElsewhereTls,
    ElsewhereTransport,
    toml_text,
)
from elsewhere.lab.prober import REPLY_KEPT, Outcome, Probe, Reaction, judge, plan_probes
from elsewhere.lab.topology import Lab
from elsewhere.lab.transport import fetch
from elsewhere.session import Destination

pytestmark = pytest.mark.lab

URL = "https://instagram.test/"
SILENT_PORT = 9302
DECOY_PORT = 9303
PROBE_TIMEOUT = 1.5  # seconds each in-TLS probe waits for a reaction
START_TIMEOUT = 10.0


def probe_verdict(running: CensorProcess, server: Destination) -> Event:
    return running.wait_for_event(
        lambda e: e["event"] == "probe" and e["server"] == str(server), 10, f"probe of {server}")


def profile(verdict: Event) -> list[tuple[Any, ...]]:
    """What the prober saw, without what differs by construction (replay lengths, timings)."""
    return sorted((r["kind"], r["length"] if r["kind"] == "random" else 0, r["outcome"])
                  for r in verdict["reactions"])


@pytest.mark.parametrize(
    "transport", [ElsewhereShadowsocks(prefix=b""), ElsewhereSs2022()], ids=lambda t: t.name
)
def test_probes_cannot_tell_a_shadowsocks_server_from_silence(
    lab: Lab, censor: CensorStarter, transport: ElsewhereTransport
) -> None:
    running = censor("active_probe")
    with TcpDouble(lab, SILENT_PORT, read_forever), transport.open(lab) as route:
        assert route.server is not None and fetch(lab, URL, route).reached
        ours = probe_verdict(running, route.server)
        exchange(lab, SILENT_PORT, encrypted_looking(random.Random(31)), timeout=0.5)
        silence = probe_verdict(running, Destination(plan.SERVER, SILENT_PORT))
        assert not ours["flagged"] and ours["reason"] == "every probe met the same silence"
        assert profile(ours) == profile(silence)
        assert fetch(lab, URL, route).reached  # not blocked after the probes


def test_with_a_printable_prefix_the_shadowsocks_server_is_not_even_a_suspect(
    lab: Lab, censor: CensorStarter
) -> None:
    running = censor("active_probe")
    with ElsewhereShadowsocks(prefix=b"HTTP/1.1 ").open(lab) as route:
        assert fetch(lab, URL, route).reached and fetch(lab, URL, route).reached
    assert not [e for e in running.events() if e.get("technique") == "active_probe"]


# -- TLS: probing inside the handshake ------------------------------------------------------


async def tls_probe(lab: Lab, port: int, probe: Probe, context: ssl.SSLContext) -> Reaction:
    """One probe sent inside TLS from the censor's namespace, as the censor's prober would."""
    loop = asyncio.get_running_loop()
    sock = lab.socket("censor")
    sock.setblocking(False)
    start = time.monotonic()
    outcome: Outcome
    reply = b""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            await loop.sock_connect(sock, (plan.SERVER, port))
            reader, writer = await asyncio.open_connection(
                sock=sock, ssl=context, server_hostname=plan.SERVER_NAME)
        writer.write(probe.payload)
        async with asyncio.timeout(PROBE_TIMEOUT):
            reply = await reader.read(REPLY_KEPT)
        outcome = "data" if reply else "fin"
    except TimeoutError:
        outcome = "timeout"
    except OSError:
        outcome = "rst"
    finally:
        if writer is not None:
            writer.transport.abort()
        else:
            sock.close()
    return Reaction(probe.kind, len(probe.payload), outcome, time.monotonic() - start, reply)


def tls_reactions(lab: Lab, port: int, seed: int) -> list[Reaction]:
    context = ssl.create_default_context(cafile=str(lab.ca_cert))
    context.set_alpn_protocols(["http/1.1"])  # as a browser visiting the site would
    probes = [p for p in plan_probes(b"", random.Random(seed)) if p.kind == "random"]

    async def all_of_them() -> list[Reaction]:
        return list(await asyncio.gather(*(tls_probe(lab, port, p, context) for p in probes)))

    return asyncio.run(all_of_them())


def seen(reaction: Reaction) -> tuple[object, ...]:
    """A reaction as a prober compares them: outcome and the status line, not the Date."""
    return reaction.length, reaction.outcome, reaction.reply.split(b"\r\n", 1)[0]


@pytest.mark.parametrize(
    "transport", [ElsewhereTls("trojan"), ElsewhereTls("vless", "ws")], ids=lambda t: t.name
)
def test_a_tls_server_is_never_a_suspect_and_probes_inside_tls_meet_the_decoy_site(
    lab: Lab, censor: CensorStarter, transport: ElsewhereTls
) -> None:
    running = censor("active_probe")
    cert, _ = transport.certificate(lab)
    decoy_config = lab.workdir / "decoy-only.toml"
    decoy_config.write_text(toml_text({
        "inbounds": [{"type": "tls", "listen": plan.SERVER, "port": DECOY_PORT,
                      "cert": str(cert.cert), "key": str(cert.key), "fallback": "decoy"}],
        "outbounds": [{"type": "block"}],
    }))
    decoy = lab.spawn("server", lab.python("elsewhere", "run", "-c", str(decoy_config)),
                      name="decoy-only")
    decoy.wait_for_output("listening:", START_TIMEOUT)
    with transport.open(lab) as route:
        assert route.server is not None
        assert fetch(lab, URL, route).reached and fetch(lab, URL, route).reached
        ours = tls_reactions(lab, route.server.port, seed=41)
    site = tls_reactions(lab, DECOY_PORT, seed=41)
    assert not [e for e in running.events() if e.get("technique") == "active_probe"]
    assert [seen(r) for r in ours] == [seen(r) for r in site]
    assert not judge(ours).flagged and not judge(site).flagged
