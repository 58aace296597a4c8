"""XHTTP in the lab: through the CDN edge inside the country (Debian's nginx in `domestic`) the
client reaches the blocked site under the allowlist and the 16 KB freeze, a 1 MB download
whole; WebSocket through the same nginx does not get through (no upgrade); and the client's
pool of few connections passes handshake_rate, which a one-connection-per-request transport
trips when pages come quickly."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import CensorStarter
from elsewhere.lab import plan
from elsewhere.lab.elsewhere_transports import ElsewhereTls
from elsewhere.lab.elsewhere_xhttp import ElsewhereCdn, ElsewhereXhttp
from elsewhere.lab.sites import read_access_log
from elsewhere.lab.topology import Lab
from elsewhere.lab.transport import Fetch, Route, fetch

pytestmark = pytest.mark.lab

MB = 1 << 20
BURST = 6  # pages fetched at once: more handshakes than handshake_rate allows in a burst


def download(lab: Lab, route: Route, size: int) -> bytes:
    """GET /big?bytes=size from instagram.test through the route, the body kept."""
    out = lab.workdir / "download.bin"
    out.unlink(missing_ok=True)
    assert route.proxy is not None
    lab.run(
        "client",
        [
            "curl", "-sS", "--cacert", str(lab.ca_cert), "--max-time", "60",
            "--proxy", route.proxy, "-o", str(out),
            f"https://instagram.test/big?bytes={size}",
        ],
        timeout=70,
    )
    return out.read_bytes()


def burst(lab: Lab, route: Route) -> list[Fetch]:
    with ThreadPoolExecutor(BURST) as pool:
        pages = [pool.submit(fetch, lab, "https://instagram.test/", route, timeout=15)
                 for _ in range(BURST)]
        return [page.result() for page in pages]


def test_xhttp_through_the_domestic_cdn_passes_the_allowlist_and_the_freeze(
    lab: Lab, censor: CensorStarter
) -> None:
    running = censor("allowlist", "freeze_16k")
    with ElsewhereCdn("xhttp").open(lab) as route:
        assert fetch(lab, "https://instagram.test/", route, timeout=15).reached
        body = download(lab, route, MB)
    assert hashlib.sha256(body).digest() == hashlib.sha256(b"x" * MB).digest()
    assert not running.decisions()
    assert running.rule_hits().get("freeze_16k", 0) == 0
    # the client only ever talked to the domestic edge; the site saw the server abroad
    crossed = {f["destination"].rsplit(":", 1)[0] for f in running.flows()}
    assert crossed == {plan.DOMESTIC_HOST}
    visits = [r for r in read_access_log(lab.workdir) if r["site"] == "instagram.test"]
    assert visits and visits[-1]["client"] == plan.SERVER


def test_websocket_through_the_same_cdn_does_not_get_through(
    lab: Lab, censor: CensorStarter
) -> None:
    running = censor("allowlist", "freeze_16k")
    with ElsewhereCdn("ws").open(lab) as route:
        assert not fetch(lab, "https://instagram.test/", route, timeout=8).reached
    # the client did reach the edge (the censor let it pass): nginx is what stopped it
    crossed = {f["destination"] for f in running.flows()}
    assert f"{plan.DOMESTIC_HOST}:443" in crossed
    assert not running.decisions()


def test_xhttp_s_pool_passes_handshake_rate_where_one_connection_per_page_trips_it(
    lab: Lab, censor: CensorStarter
) -> None:
    running = censor("handshake_rate")
    with ElsewhereXhttp().open(lab) as route:
        fetched = burst(lab, route)
    assert all(f.reached for f in fetched), [f.error for f in fetched]
    assert not running.decisions()
    with ElsewhereTls("vless", "ws").open(lab) as route:
        fetched = burst(lab, route)
    assert not all(f.reached for f in fetched)
    assert [d["technique"] for d in running.decisions()][:1] == ["handshake_rate"]
