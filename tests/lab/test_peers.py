"""The real peers work through a censor that blocks nothing — the site sees the server's
address — and proto_sig catches WireGuard and OpenVPN by their first packets."""

from __future__ import annotations

import pytest
from lab_doubles import CensorStarter

from elsewhere.lab import peers, plan
from elsewhere.lab.sites import read_access_log
from elsewhere.lab.topology import Lab
from elsewhere.lab.transport import Transport, fetch

pytestmark = pytest.mark.lab


def quick(transport: Transport) -> Transport:
    if isinstance(transport, peers.OpenVpn):
        transport.handshake_timeout = 3.0  # its TLS handshake takes well under a second here
    return transport


@pytest.mark.parametrize(
    "transport", [peers.WireGuardGo(), peers.OpenVpn()], ids=lambda t: t.name
)
def test_a_vpn_peer_reaches_the_site_without_censorship_and_is_caught_by_proto_sig(
    lab: Lab, censor: CensorStarter, transport: Transport
) -> None:
    transport = quick(transport)
    with censor(), transport.open(lab) as route:
        assert fetch(lab, "https://instagram.test/", route).reached
    assert read_access_log(lab.workdir)[-1]["client"] == plan.SERVER
    with censor("proto_sig") as running, transport.open(lab) as route:
        page = fetch(lab, "https://instagram.test/", route, connect_timeout=1, timeout=2)
        assert not page.reached
        [decision] = running.decisions("proto_sig")
    expected = "WireGuard" if isinstance(transport, peers.WireGuardGo) else "OpenVPN"
    assert expected in decision["reason"]
    assert decision["server"] == str(route.server)


@pytest.mark.parametrize(
    "transport", [peers.ShadowsocksLibev(), peers.V2rayVless()], ids=lambda t: t.name
)
def test_a_proxy_peer_reaches_the_site_and_proto_sig_sees_nothing(
    lab: Lab, censor: CensorStarter, transport: Transport
) -> None:
    with censor("proto_sig") as running, transport.open(lab) as route:
        assert route.proxy and fetch(lab, "https://instagram.test/", route).reached
        assert not running.decisions()
    assert read_access_log(lab.workdir)[-1]["client"] == plan.SERVER
