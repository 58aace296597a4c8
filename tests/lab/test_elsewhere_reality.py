"""REALITY in the lab: elsewhere's REALITY server with a lab site as dest and elsewhere's own
REALITY client. Through the Russian freeze, a download over one connection to the server
abroad goes on when the SNI (dest's name) is on the allowlist, and goes silent after ~16 KB
when it is not: the lab shows both, it does not flatter REALITY."""

from __future__ import annotations

import pytest

from conftest import CensorStarter
from elsewhere.lab.elsewhere_reality import ElsewhereReality
from elsewhere.lab.topology import Lab
from elsewhere.lab.transport import fetch

pytestmark = pytest.mark.lab

LARGE = 256 * 1024
SMALL = 8 * 1024


def test_with_an_allowlisted_sni_a_large_download_is_not_frozen(
    lab: Lab, censor: CensorStarter
) -> None:
    running = censor("freeze_16k")
    with ElsewhereReality("cdn.test").open(lab) as route:
        page = fetch(lab, f"https://bank.test/big?bytes={LARGE}", route, timeout=10)
    assert page.reached and page.size == LARGE
    assert not running.rule_hits().get("freeze_16k")


def test_with_an_sni_off_the_allowlist_the_same_download_freezes(
    lab: Lab, censor: CensorStarter
) -> None:
    running = censor("freeze_16k")
    with ElsewhereReality("blog.test").open(lab) as route:
        assert fetch(lab, f"https://bank.test/big?bytes={SMALL}", route).reached
        frozen = fetch(lab, f"https://bank.test/big?bytes={LARGE}", route, timeout=2)
    assert not frozen.reached and frozen.size < LARGE
    assert running.rule_hits()["freeze_16k"] > 0
