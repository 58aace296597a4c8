"""freeze_16k: one TCP connection to foreign hosting goes silent after about 16 KB from the
server, unless the SNI is allowlisted; domestic sites and small pages are untouched."""

from __future__ import annotations

import pytest
from lab_doubles import CensorStarter

from elsewhere.lab.peers import ShadowsocksLibev
from elsewhere.lab.topology import Lab
from elsewhere.lab.transport import fetch

pytestmark = pytest.mark.lab

LARGE = 256 * 1024
SMALL = 8 * 1024


def test_a_large_download_from_foreign_hosting_freezes_after_16_kb(
    lab: Lab, censor: CensorStarter
) -> None:
    running = censor("freeze_16k")
    frozen = fetch(lab, f"https://blog.test/big?bytes={LARGE}", timeout=2)
    assert not frozen.reached and frozen.size < LARGE
    assert running.rule_hits()["freeze_16k"] > 0
    assert fetch(lab, f"https://blog.test/big?bytes={SMALL}").reached


def test_domestic_sites_and_allowlisted_names_are_spared(lab: Lab, censor: CensorStarter) -> None:
    running = censor("freeze_16k")
    assert fetch(lab, f"https://bank.test/big?bytes={LARGE}").reached
    assert fetch(lab, f"https://cdn.test/big?bytes={LARGE}").reached
    assert [e["reason"] for e in running.decisions("freeze_16k")] == [
        "SNI cdn.test is allowlisted"
    ]
    assert running.rule_hits().get("freeze_16k", 0) == 0


def test_a_proxy_on_foreign_hosting_that_keeps_one_connection_freezes_too(
    lab: Lab, censor: CensorStarter
) -> None:
    censor("freeze_16k")
    with ShadowsocksLibev().open(lab) as route:
        assert fetch(lab, f"https://bank.test/big?bytes={SMALL}", route).reached
        frozen = fetch(lab, f"https://bank.test/big?bytes={LARGE}", route, timeout=2)
        assert not frozen.reached and frozen.size < LARGE
