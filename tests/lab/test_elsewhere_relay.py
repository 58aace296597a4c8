"""Two hops (issue 9): a relay in the `domestic` namespace in front of the exit abroad gets the
client through the allowlist and the 16 KB freeze that stop every one-hop transport; a large
download arrives whole; the site sees the exit's address; the censor never sees a flow from the
client toward the exit."""

from __future__ import annotations

import hashlib

import pytest

from conftest import CensorStarter
from elsewhere.lab import plan
from elsewhere.lab.elsewhere_relay import ElsewhereRelay, Kind, relay_transports
from elsewhere.lab.elsewhere_transports import ElsewhereSs2022, ElsewhereTls, censor_config
from elsewhere.lab.matrix import DEFAULT_TECHNIQUES, run_matrix
from elsewhere.lab.sites import PAGE_BYTES, read_access_log
from elsewhere.lab.topology import Lab
from elsewhere.lab.transport import Transport, fetch

pytestmark = pytest.mark.lab

BIG = 3 * 1024 * 1024 // 2  # far past the freeze's 16 KB
URL = "https://instagram.test/"


@pytest.mark.parametrize("relay", relay_transports(), ids=lambda t: t.name)
def test_through_the_relay_the_blocked_site_is_reached_under_allowlist_and_freeze(
    lab: Lab, censor: CensorStarter, relay: ElsewhereRelay
) -> None:
    running = censor("allowlist", "freeze_16k", "dns_poison", "sni_block", "ip_block")
    assert not fetch(lab, URL, connect_timeout=1, timeout=2).reached
    with relay.open(lab) as route:
        page = fetch(lab, URL, route)
        target = lab.workdir / f"{relay.name}-big"
        done = lab.run("client", [
            "curl", "-sS", "--cacert", str(lab.ca_cert), "--proxy", str(route.proxy),
            "--max-time", "20", "-o", str(target), f"{URL}big?bytes={BIG}"], timeout=30)
    assert page.reached and page.size == PAGE_BYTES, page.error
    assert done.returncode == 0, done.stderr
    assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(b"x" * BIG).digest()
    visitors = {r["client"] for r in read_access_log(lab.workdir) if r["site"] == "instagram.test"}
    assert visitors == {plan.SERVER}  # the exit's address: not the relay's, not the client's
    flows = running.flows()
    toward_exit = [f for f in flows if f["destination"].startswith(plan.SERVER + ":")]
    assert toward_exit == []
    assert [f for f in flows if f["destination"] == str(route.server)]  # through the censor
    assert not [d for d in running.decisions() if d["server"] == str(route.server)]
    assert running.rule_hits().get("freeze_16k", 0) == 0


def one_hop(kind: str) -> Transport:
    """The one-hop row of the same protocol: client straight to the exit, across the censor."""
    return ElsewhereSs2022() if kind == "ss2022" else ElsewhereTls("vless", "ws")


CELLS = [(kind, technique) for kind in ("ss2022", "vless-ws")
         for technique in DEFAULT_TECHNIQUES if technique != "none"]


@pytest.mark.parametrize(("kind", "technique"), CELLS, ids=[f"{k}-{t}" for k, t in CELLS])
def test_the_relay_is_reached_wherever_its_one_hop_row_is_and_under_allowlist_and_freeze(
    lab: Lab, kind: Kind, technique: str
) -> None:
    relay, direct = ElsewhereRelay(kind), one_hop(kind)
    rows = run_matrix([relay, direct], [technique], lab=lab, config=censor_config())
    two_hops, one = (next(r for r in rows if r.transport == t.name) for t in (relay, direct))
    if technique in ("allowlist", "freeze_16k"):
        assert not one.survived  # what the relay is for
        assert two_hops.survived, two_hops
    if one.survived:
        assert two_hops.survived, two_hops
    if two_hops.survived:
        assert two_hops.seen_from == plan.SERVER
