"""The survival matrix runs transports against techniques, says who got through and who was
seen, prints a table and writes JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from elsewhere.lab import plan
from elsewhere.lab.errors import LabError
from elsewhere.lab.matrix import print_matrix, run_matrix, techniques_of, write_json
from elsewhere.lab.peers import ShadowsocksLibev
from elsewhere.lab.topology import Lab
from elsewhere.lab.transport import Direct

pytestmark = pytest.mark.lab


def test_the_matrix_shows_direct_blocked_and_a_proxy_through_with_the_servers_address(
    lab: Lab, tmp_path: Path
) -> None:
    rows = run_matrix([Direct(), ShadowsocksLibev()], ["none", "dns_poison+sni_block"], lab=lab)
    cells = {(r.transport, r.technique): r for r in rows}
    assert cells[("direct", "none")].survived
    assert cells[("direct", "none")].seen_from == plan.CLIENT
    blocked = cells[("direct", "dns_poison+sni_block")]
    assert blocked.reached == 0 and blocked.detected and "dns_poison" in blocked.detail
    through = cells[("shadowsocks-libev", "dns_poison+sni_block")]
    assert through.survived and not through.detected and through.seen_from == plan.SERVER

    console = Console(record=True, width=140)
    print_matrix(rows, console)
    text = console.export_text()
    assert "shadowsocks-libev" in text and "blocked" in text and "reached" in text
    write_json(rows, tmp_path / "matrix.json")
    document = json.loads((tmp_path / "matrix.json").read_text())
    assert len(document["rows"]) == 4 and {"survived", "detected"} <= set(document["rows"][0])


def test_technique_specs_are_checked_by_name() -> None:
    assert techniques_of("none") == ()
    assert techniques_of("fet_gfw+cooldown") == ("fet_gfw", "cooldown")
    with pytest.raises(LabError, match="known"):
        techniques_of("great_wall")
