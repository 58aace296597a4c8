"""With dns_poison + sni_block + ip_block on, instagram.test is unreachable directly and reached
through every elsewhere transport; the site sees the server's address, never the client's, and
the censor has nothing to say about the server's traffic."""

from __future__ import annotations

import pytest

from conftest import CensorStarter
from elsewhere.lab import plan
from elsewhere.lab.elsewhere_transports import elsewhere_transports
from elsewhere.lab.sites import PAGE_BYTES, read_access_log
from elsewhere.lab.topology import Lab
from elsewhere.lab.transport import Transport, fetch

pytestmark = pytest.mark.lab

URL = "https://instagram.test/"


@pytest.mark.parametrize("transport", elsewhere_transports(), ids=lambda t: t.name)
def test_a_blocked_site_is_reached_through_elsewhere_and_sees_the_servers_address(
    lab: Lab, censor: CensorStarter, transport: Transport
) -> None:
    running = censor("dns_poison", "sni_block", "ip_block")
    direct = fetch(lab, URL, connect_timeout=1, timeout=2)
    assert not direct.reached
    assert running.decisions("dns_poison")  # the client's own lookup was forged
    with transport.open(lab) as route:
        page = fetch(lab, URL, route)
    assert page.reached and page.size == PAGE_BYTES
    visitors = [r["client"] for r in read_access_log(lab.workdir) if r["site"] == "instagram.test"]
    assert visitors == [plan.SERVER]
    assert not [e for e in running.events() if e.get("server") == str(route.server)]
