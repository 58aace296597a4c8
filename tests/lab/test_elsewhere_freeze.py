"""freeze_16k catches elsewhere too: every elsewhere transport carries a download over one TCP
connection to the server abroad (foreign hosting), which goes silent after about 16 KB. This is
recorded, not hidden: getting past it is the next transport's job."""

from __future__ import annotations

import pytest

from conftest import CensorStarter
from elsewhere.lab.elsewhere_transports import (
    ElsewhereShadowsocks,
    ElsewhereTls,
    ElsewhereTransport,
)
from elsewhere.lab.topology import Lab
from elsewhere.lab.transport import fetch

pytestmark = pytest.mark.lab

LARGE = 256 * 1024
SMALL = 8 * 1024


@pytest.mark.parametrize(
    "transport", [ElsewhereShadowsocks(), ElsewhereTls("vless", "ws")], ids=lambda t: t.name
)
def test_a_large_download_through_one_elsewhere_connection_freezes(
    lab: Lab, censor: CensorStarter, transport: ElsewhereTransport
) -> None:
    running = censor("freeze_16k")
    with transport.open(lab) as route:
        assert fetch(lab, f"https://bank.test/big?bytes={SMALL}", route).reached
        frozen = fetch(lab, f"https://bank.test/big?bytes={LARGE}", route, timeout=2)
    assert not frozen.reached and frozen.size < LARGE
    assert running.rule_hits()["freeze_16k"] > 0
