"""fingerprint against elsewhere's TLS clients, which send a browser's hello of their own
(codecs/client_hellos.py): under the 2026-06 wave's list (Python's hellos, uTLS Chrome's, and
those of a Python `ssl` client with elsewhere's settings) every elsewhere TLS row is reached;
with a list naming the current Chrome, `fp=chrome` is reset and `fp=firefox` survives, so the
lab shows which fp a list leaves through. Our hello's JA4 is the browser's (curl-impersonate's,
tests/interop/test_client_hellos_browser.py), not uTLS's."""

from __future__ import annotations

import pytest

from conftest import CensorStarter
from elsewhere.lab import fingerprints
from elsewhere.lab.clienthello import ja4
from elsewhere.lab.elsewhere_transports import ElsewhereTls, censor_config, client_fingerprints
from elsewhere.lab.topology import Lab
from elsewhere.lab.transport import fetch

URL = "https://instagram.test/"
MATRIX_LIST = censor_config().blocked_fingerprints


def test_the_matrix_list_is_the_wave_and_the_old_python_client() -> None:
    blocked = fingerprints.resolve(MATRIX_LIST)
    assert fingerprints.resolve(["utls-chrome", "python"]) | client_fingerprints() == blocked
    assert not fingerprints.resolve(["chrome", "firefox"]) & blocked


@pytest.mark.parametrize("fp", ["chrome", "firefox"])
def test_our_hello_is_the_browsers_not_utls(fp: str) -> None:
    ours = ja4(fingerprints.elsewhere_hello(fp, "abroad.test", ("h2", "http/1.1")))
    assert ours in fingerprints.resolve([fp])
    assert ours not in fingerprints.resolve(["utls-chrome", "utls-firefox"])


@pytest.mark.lab
@pytest.mark.parametrize(
    "transport",
    [ElsewhereTls("trojan"), ElsewhereTls("vless"), ElsewhereTls("vless", "ws")],
    ids=lambda t: t.name,
)
def test_every_elsewhere_tls_client_gets_through_the_2026_06_wave(
    lab: Lab, censor: CensorStarter, transport: ElsewhereTls
) -> None:
    running = censor("fingerprint", blocked_fingerprints=MATRIX_LIST)
    with transport.open(lab) as route:
        page = fetch(lab, URL, route, timeout=5)
    assert page.reached
    assert not running.decisions("fingerprint")


@pytest.mark.lab
def test_a_list_naming_chrome_resets_fp_chrome_and_fp_firefox_survives(
    lab: Lab, censor: CensorStarter
) -> None:
    running = censor("fingerprint", blocked_fingerprints=("chrome",))
    with ElsewhereTls("trojan", fp="chrome").open(lab) as route:
        assert not fetch(lab, URL, route, timeout=3).reached
        chrome_server = str(route.server)
    decisions = running.decisions("fingerprint")
    assert decisions and {d["server"] for d in decisions} == {chrome_server}
    chrome = fingerprints.resolve(["chrome"])
    assert all(d["reason"].split()[1] in chrome for d in decisions), decisions
    with ElsewhereTls("trojan", fp="firefox").open(lab) as route:
        assert fetch(lab, URL, route, timeout=5).reached
    assert len(running.decisions("fingerprint")) == len(decisions)
