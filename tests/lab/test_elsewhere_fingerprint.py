"""fingerprint catches elsewhere's Trojan and VLESS client: its TLS hello is Python's `ssl`
with an ALPN extension, as easy to list as a bare Python hello (the JA4 cipher and extension
hashes are the same; only the count and the ALPN in its first part differ). curl's hello is
not caught."""

from __future__ import annotations

import pytest

from conftest import CensorStarter
from elsewhere.lab.elsewhere_transports import (
    ElsewhereTls,
    censor_config,
    client_fingerprints,
)
from elsewhere.lab.techniques.fingerprint import python_fingerprints
from elsewhere.lab.topology import Lab
from elsewhere.lab.transport import fetch

URL = "https://instagram.test/"
PYTHON_TLS = censor_config().blocked_fingerprints


def test_elsewheres_hello_is_a_python_hello_apart_from_its_alpn() -> None:
    ours = {f for f in client_fingerprints() if f.startswith("t13")}
    bare = {f for f in python_fingerprints() if f.startswith("t13")}
    assert not ours & bare  # a list of bare Python hellos alone would miss it
    assert {f.split("_", 1)[1] for f in ours} == {f.split("_", 1)[1] for f in bare}
    assert set(PYTHON_TLS) == client_fingerprints() | python_fingerprints()


@pytest.mark.lab
@pytest.mark.parametrize(
    "transport",
    [ElsewhereTls("trojan"), ElsewhereTls("vless"), ElsewhereTls("vless", "ws")],
    ids=lambda t: t.name,
)
def test_fingerprint_resets_elsewheres_python_tls_client(
    lab: Lab, censor: CensorStarter, transport: ElsewhereTls
) -> None:
    running = censor("fingerprint", blocked_fingerprints=PYTHON_TLS)
    assert fetch(lab, "https://bank.test/").reached  # curl's own hello passes
    with transport.open(lab) as route:
        page = fetch(lab, URL, route, timeout=3)
    assert not page.reached
    decisions = running.decisions("fingerprint")
    assert decisions and {d["server"] for d in decisions} == {str(route.server)}
    assert all(d["reason"].startswith("JA4 t13d") for d in decisions)

