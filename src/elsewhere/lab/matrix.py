"""The survival matrix: every transport against every censor technique. Each cell gets a fresh
censor with that technique (or a `+`-joined combination; "none" means a censor that judges but
blocks nothing), opens the transport, fetches the blocked site a few times, and records whether
the site was reached, what the site saw as the client's address, and whether the censor noticed
anything (its decisions and notes, kernel rule hits, probe verdicts).

    rows = run_matrix(real_peers(), ["none", "proto_sig", "fet_gfw"])
    print_matrix(rows)
    write_json(rows, Path("matrix.json"))
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from elsewhere.lab import plan
from elsewhere.lab.censor import CensorProcess, Event, start_censor
from elsewhere.lab.errors import LabError
from elsewhere.lab.policy import CensorConfig
from elsewhere.lab.sites import read_access_log
from elsewhere.lab.techniques import NAMES
from elsewhere.lab.topology import Lab
from elsewhere.lab.transport import Fetch, Transport, fetch
from elsewhere.lab.wait import wait_until

NONE = "none"
# cooldown only acts after another technique fired, so it gets a column in company.
DEFAULT_TECHNIQUES: tuple[str, ...] = (
    NONE, *(n for n in NAMES if n != "cooldown"), "fet_gfw+cooldown",
)
DEFAULT_URL = "https://instagram.test/"
DEFAULT_SEED = 1
ATTEMPTS = 2  # the second fetch meets what the first one set off (probes, residual blocks)
FETCH_TIMEOUT = 5.0
PROBE_SETTLE = 5.0  # seconds to wait for a probe round started by the first fetch


@dataclass(frozen=True, slots=True)
class Row:
    """One cell of the matrix."""

    transport: str
    technique: str
    reached: int  # fetches that got the whole page
    attempts: int
    detected: bool  # the censor decided or noted something about this traffic
    detail: str  # the first thing the censor said, or why the fetch failed
    seen_from: str | None  # the client address the site logged, when reached
    seconds: float

    @property
    def survived(self) -> bool:
        return self.reached == self.attempts


def techniques_of(spec: str) -> tuple[str, ...]:
    """"none" -> (), "a+b" -> ("a", "b"); names are checked against the known ones."""
    if spec == NONE:
        return ()
    names = tuple(part for part in spec.split("+") if part)
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        raise LabError(f"unknown technique(s) {', '.join(unknown)}; known: {', '.join(NAMES)}")
    return names


def run_matrix(
    transports: Sequence[Transport],
    techniques: Iterable[str] = DEFAULT_TECHNIQUES,
    *,
    url: str = DEFAULT_URL,
    attempts: int = ATTEMPTS,
    config: CensorConfig | None = None,
    lab: Lab | None = None,
    on_row: Callable[[Row], None] | None = None,
) -> list[Row]:
    """Run every transport against every technique spec; rows in technique-major order.

    Builds (and tears down) its own lab unless `lab` is given. `config` supplies the censor's
    settings (block lists, thresholds, seed); its technique list is replaced per cell."""
    base = config or CensorConfig(seed=DEFAULT_SEED)
    specs = [(spec, techniques_of(spec)) for spec in techniques]
    if lab is None:
        with Lab() as own:
            return run_matrix(transports, [s for s, _ in specs], url=url, attempts=attempts,
                              config=base, lab=own, on_row=on_row)
    rows: list[Row] = []
    for spec, names in specs:
        for transport in transports:
            row = run_cell(lab, transport, spec, replace(base, techniques=names), url, attempts)
            rows.append(row)
            if on_row is not None:
                on_row(row)
    return rows


def run_cell(
    lab: Lab, transport: Transport, spec: str, config: CensorConfig, url: str, attempts: int
) -> Row:
    start = time.monotonic()
    site_name = url.split("/")[2]
    log_mark = len(read_access_log(lab.workdir))
    fetches: list[Fetch] = []
    server: str | None = None
    with start_censor(lab, config) as censor:
        try:
            with transport.open(lab) as route:
                server = str(route.server) if route.server else None
                for attempt in range(attempts):
                    fetches.append(fetch(lab, url, route, timeout=FETCH_TIMEOUT))
                    if attempt == 0:
                        _let_probes_finish(censor)
        except LabError as exc:
            fetches.append(Fetch(url, False, 0, 0, 0.0, f"transport failed: {exc}"))
        events = censor.events()
        hits = censor.rule_hits()
    findings = [e for e in events if _is_finding(e) and _concerns(e, server)]
    findings += [{"technique": name, "reason": f"{count} packets dropped in the kernel"}
                 for name, count in hits.items() if count]
    visits = [r for r in read_access_log(lab.workdir)[log_mark:]
              if r.get("site") == site_name and r.get("status") == 200]
    findings.sort(key=lambda e: DETAIL_ORDER.get(str(e.get("event")), 0))
    probes = [e for e in events if e.get("event") == "probe" and _concerns(e, server)]
    reached = sum(f.reached for f in fetches)
    failed = next((f.error for f in fetches if not f.reached), "")
    detail = _describe(findings[0]) if findings else failed
    if probes and not probes[0]["flagged"] and not failed:
        detail = f"active_probe: probed, not flagged ({probes[0]['reason']})"
    return Row(
        transport=transport.name, technique=spec, reached=reached, attempts=max(len(fetches), 1),
        detected=bool(findings), detail=detail,
        seen_from=str(visits[-1]["client"]) if visits and reached else None,
        seconds=round(time.monotonic() - start, 2),
    )


DETAIL_ORDER = {"decision": 0, "probe": 1, "detected": 2}  # what a row's detail shows first


def _is_finding(event: Event) -> bool:
    kind = event.get("event")
    if kind == "decision":
        return event.get("action") != "exempt"
    if kind == "probe":
        return bool(event.get("flagged"))
    return kind == "detected"


def _concerns(event: Event, server: str | None) -> bool:
    # An earlier cell's orphaned connection may still be retransmitting: flows the censor did
    # not see open, and events about another port of the lab's server, belong to other cells.
    if event.get("opened") is False:
        return False
    about = str(event.get("server", ""))
    if about.rsplit(":", 1)[0] != plan.SERVER:
        return True
    return about == server


def _describe(event: dict[str, Any]) -> str:
    flagged = "flagged: " if event.get("event") == "probe" else ""
    return f"{event.get('technique')}: {flagged}{event.get('reason')}"


def _let_probes_finish(censor: CensorProcess) -> None:
    def settled() -> bool:
        events = censor.events()
        scheduled = sum(e["event"] == "probe-scheduled" for e in events)
        return sum(e["event"] == "probe" for e in events) >= scheduled

    wait_until(settled, PROBE_SETTLE + censor.config.probe_timeout, "probes to finish")


# -- output ----------------------------------------------------------------------------------


def cell_text(row: Row) -> str:
    if row.survived:
        verdict = "[green]reached[/]"
    elif row.reached:
        verdict = f"[yellow]{row.reached}/{row.attempts}[/]"
    else:
        verdict = "[red]blocked[/]"
    return verdict + (" [magenta]detected[/]" if row.detected else "")


def print_matrix(rows: Sequence[Row], console: Any | None = None) -> None:
    """A rich table: techniques down, transports across; what the censor said below."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    techniques = list(dict.fromkeys(r.technique for r in rows))
    transports = list(dict.fromkeys(r.transport for r in rows))
    cells = {(r.transport, r.technique): r for r in rows}
    table = Table(title="Survival matrix: does the client reach the blocked site?")
    table.add_column("censor technique", style="bold")
    for transport in transports:
        table.add_column(transport)
    for technique in techniques:
        table.add_row(technique, *[
            cell_text(cells[(t, technique)]) if (t, technique) in cells else ""
            for t in transports])
    console.print(table)
    for row in rows:
        if row.detail:
            console.print(f"  {row.transport} under {row.technique}: {row.detail}",
                          highlight=False, markup=False)


def write_json(rows: Sequence[Row], path: Path) -> None:
    """The rows as JSON, with what they were measured against."""
    document = {
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "server_address": plan.SERVER,
        "rows": [{**asdict(row), "survived": row.survived} for row in rows],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
