"""The censor: a Python process in the `censor` namespace that sees the first packets of every
flow through NFQUEUE and lets its switched-on techniques decide about them.

Only the first `queue_window` packets of a connection are queued (iptables `connbytes`), so bulk
traffic stays in the kernel. Verdicts go back as packet marks that the CENSOR chain saves on the
connection: a blocked flow is dropped (or reset) in the kernel from then on. Every decision is
written as a JSON line to the event log, which tests and the survival matrix read, beside one
"flow" line per flow that crosses the censor (the flow log).

    python -m elsewhere.lab.censor --techniques sni_block,fet_gfw --seed 1 --log events.jsonl

`CensorEngine` is the pure part (raw packets and `now` in, verdicts and events out);
`serve` is the NFQUEUE/asyncio shell; `start_censor` runs it inside a Lab."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from elsewhere.lab import prober
from elsewhere.lab.errors import LabError
from elsewhere.lab.flows import Endpoint, Flow, FlowTable
from elsewhere.lab.packet import TCP_ACK, TCP_SYN, Packet, parse
from elsewhere.lab.policy import CensorConfig
from elsewhere.lab.techniques import (
    MARK_BLOCK,
    MARK_EXEMPT,
    MARK_JUDGED,
    MARK_RESET,
    MARK_THROTTLE,
    Action,
    Decision,
    Technique,
    load,
)
from elsewhere.lab.wait import wait_until

if TYPE_CHECKING:
    from netfilterqueue import Packet as QueuedPacket

    from elsewhere.lab.topology import Lab, LabProcess

QUEUE_NUM = 0  # queues are per network namespace, so every lab can use 0
CHAIN = "CENSOR"
READY = "censor ready"
START_TIMEOUT = 15.0
QUEUE_MAX_LEN = 4096  # packets the kernel holds for us before dropping (fail closed)

Event = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: Literal["accept", "drop", "mark"]
    mark: int = 0
    inject: tuple[bytes, ...] = ()


ACCEPT = Verdict("accept")


@dataclass(slots=True)
class ServerBlock:
    until: float
    technique: str
    reason: str
    client: str | None  # None: everyone


@dataclass(frozen=True, slots=True)
class ProbeRequest:
    server: Endpoint
    payload: bytes


def endpoint_text(endpoint: Endpoint) -> str:
    return f"{endpoint[0]}:{endpoint[1]}"


@dataclass
class CensorEngine:
    """Flows, techniques and the shared memory of blocked servers; implements the techniques'
    Context. Time is passed in (`now`, monotonic seconds)."""

    config: CensorConfig
    techniques: list[Technique] = field(default_factory=list)
    clock: Callable[[], float] = time.time  # wall time for the event log only

    def __post_init__(self) -> None:
        if not self.techniques:
            self.techniques = [load(name, self.config) for name in self.config.techniques]
        self.rng = random.Random(self.config.seed)
        # Probes draw from their own stream, so when they run never shifts the techniques' draws.
        seed = self.config.seed
        self.probe_rng = random.Random(None if seed is None else f"{seed}/probes")
        self.flows = FlowTable()
        self.now = 0.0
        self.events: list[Event] = []
        self.probe_requests: list[ProbeRequest] = []
        self._server_blocks: dict[Endpoint, list[ServerBlock]] = {}
        self._probed: set[Endpoint] = set()

    # -- Context ---------------------------------------------------------------------------

    def block_server(
        self, server: Endpoint, seconds: float, technique: str, reason: str,
        client: str | None = None,
    ) -> None:
        self._server_blocks.setdefault(server, []).append(
            ServerBlock(self.now + seconds, technique, reason, client)
        )
        self._log("server-blocked", technique=technique, server=endpoint_text(server),
                  client=client, seconds=seconds, reason=reason)

    def request_probe(self, server: Endpoint, first_payload: bytes) -> None:
        if server in self._probed:
            return
        self._probed.add(server)
        self.probe_requests.append(ProbeRequest(server, first_payload))
        self._log("probe-scheduled", technique="active_probe", server=endpoint_text(server))

    def note(self, technique: str, flow: Flow, reason: str) -> None:
        key = f"note:{technique}"
        if key not in flow.logged:
            flow.logged.add(key)
            self._log("detected", technique=technique, flow=flow.describe(),
                      server=endpoint_text(flow.server), opened=flow.opens_here, reason=reason)

    # -- judging ---------------------------------------------------------------------------

    def judge(self, raw: bytes, now: float) -> Verdict:
        """The verdict on one queued IPv4 packet."""
        self.now = now
        packet = parse(raw)
        if packet is None:
            return ACCEPT
        flow, upstream = self.flows.track(packet, now)
        if "flow" not in flow.logged:
            # The flow log: every connection and datagram flow that crosses the censor, once.
            flow.logged.add("flow")
            self._log("flow", flow=flow.describe(), source=endpoint_text(flow.client),
                      destination=endpoint_text(flow.server), opened=flow.opens_here)
        # A flow's first packet meets the server blocks, and so does a retransmitted SYN: the
        # blocked SYN was dropped before its conntrack entry was confirmed, so the connmark
        # that drops the rest of a blocked flow never existed, and the client's retry (1 s
        # later) comes back here as packet 2 of the same flow.
        if upstream and (flow.upstream_packets == 1 or _bare_syn(packet)):
            block = self._server_block(flow)
            if block is not None:
                decision = Decision(block.technique, Action.BLOCK, block.reason)
                self._record(decision, flow)
                return self._verdict(decision, packet.is_tcp)
        decisions = [d for t in self.techniques
                     if (d := t.inspect(packet, flow, upstream, self)) is not None]
        if not decisions:
            return ACCEPT
        for decision in decisions:
            self._record(decision, flow)
        final = next((d for d in decisions if d.action.stops_flow or d.action is Action.DROP),
                     None)
        if final is not None:
            if final.action.stops_flow:
                for technique in self.techniques:
                    technique.notice(final, flow, self)
            return self._verdict(final, packet.is_tcp)
        mark = MARK_JUDGED
        for decision in decisions:
            mark |= MARK_THROTTLE if decision.action is Action.THROTTLE else MARK_EXEMPT
        return Verdict("mark", mark)

    def probe_finished(
        self, server: Endpoint, reactions: list[prober.Reaction], judgement: prober.Judgement
    ) -> None:
        # block first, then tell: whoever reads the verdict may rely on the block being in place
        if judgement.flagged:
            self.block_server(server, self.config.probe_block_seconds, "active_probe",
                              f"probing showed: {judgement.reason}")
        self._log("probe", technique="active_probe", server=endpoint_text(server),
                  flagged=judgement.flagged, reason=judgement.reason,
                  reactions=[r.as_dict() for r in reactions])

    def take_events(self) -> list[Event]:
        events, self.events = self.events, []
        return events

    def take_probe_requests(self) -> list[ProbeRequest]:
        requests, self.probe_requests = self.probe_requests, []
        return requests

    def _server_block(self, flow: Flow) -> ServerBlock | None:
        blocks = self._server_blocks.get(flow.server)
        if not blocks:
            return None
        blocks[:] = [b for b in blocks if b.until > self.now]
        return next((b for b in blocks if b.client in (None, flow.client[0])), None)

    @staticmethod
    def _verdict(decision: Decision, tcp: bool) -> Verdict:
        if decision.action is Action.DROP:
            return Verdict("drop", inject=decision.inject)
        if decision.action is Action.RESET and tcp:
            return Verdict("mark", MARK_RESET | MARK_JUDGED, decision.inject)
        return Verdict("mark", MARK_BLOCK | MARK_JUDGED, decision.inject)

    def _record(self, decision: Decision, flow: Flow) -> None:
        key = f"{decision.technique}:{decision.action.value}"
        if decision.action is not Action.DROP:  # forged DNS answers repeat per query
            if key in flow.logged:
                return
            flow.logged.add(key)
        # `opened` is False for a TCP flow first seen mid-way: typically an orphaned socket
        # retransmitting into a censor that was restarted since.
        self._log("decision", technique=decision.technique, action=decision.action.value,
                  flow=flow.describe(), server=endpoint_text(flow.server),
                  opened=flow.opens_here, reason=decision.reason)

    def _log(self, event: str, **fields: Any) -> None:
        self.events.append({"t": round(self.clock(), 3), "event": event, **fields})


def _bare_syn(packet: Packet) -> bool:
    return packet.is_tcp and packet.flags & (TCP_SYN | TCP_ACK) == TCP_SYN


# -- the kernel side -----------------------------------------------------------------------


def ruleset(config: CensorConfig, techniques: Sequence[Technique]) -> str:
    """The filter table for iptables-restore: marks to connmarks, kernel-side enforcement,
    technique rules, and the queue for a flow's first packets."""
    lines = [
        "*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
        f":{CHAIN} - [0:0]", f"-A FORWARD -j {CHAIN}",
    ]
    for mark, saved in ((MARK_BLOCK, MARK_BLOCK), (MARK_RESET, MARK_BLOCK),
                        (MARK_EXEMPT, MARK_EXEMPT), (MARK_THROTTLE, MARK_THROTTLE)):
        lines.append(
            f"-A {CHAIN} -m mark --mark {mark:#x}/{mark:#x} -j CONNMARK --or-mark {saved:#x}"
        )
    lines += [
        f"-A {CHAIN} -p tcp -m mark --mark {MARK_RESET:#x}/{MARK_RESET:#x} "
        "-j REJECT --reject-with tcp-reset",
        f"-A {CHAIN} -m connmark --mark {MARK_BLOCK:#x}/{MARK_BLOCK:#x} -j DROP",
    ]
    for technique in techniques:
        lines += technique.rules()
    lines += [
        # No --queue-bypass: if the censor dies, traffic stops (a lab must fail closed).
        f"-A {CHAIN} -m mark --mark 0x0/{MARK_JUDGED:#x} -m connbytes --connbytes "
        f"0:{config.queue_window} --connbytes-dir both --connbytes-mode packets "
        f"-j NFQUEUE --queue-num {QUEUE_NUM}",
        "COMMIT",
    ]
    return "\n".join(lines) + "\n"


EMPTY_RULESET = (
    "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
)


def _restore(rules: str) -> None:
    done = subprocess.run(["iptables-restore"], input=rules, capture_output=True, text=True)
    if done.returncode != 0:
        raise LabError(f"iptables-restore failed: {done.stderr.strip()}")


def _forget_connections() -> None:
    # Connection marks of an earlier censor would keep old flows blocked.
    subprocess.run(["conntrack", "-F"], capture_output=True, check=False)


# -- the process ---------------------------------------------------------------------------


class CensorService:
    """The I/O shell around a CensorEngine: NFQUEUE in, verdicts, raw-socket injection, probes,
    and the event log."""

    def __init__(self, engine: CensorEngine, log_path: Path) -> None:
        self.engine = engine
        self.log = log_path.open("a", buffering=1, encoding="utf-8")
        self.raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self.tasks: set[asyncio.Task[None]] = set()

    def on_packet(self, packet: QueuedPacket) -> None:
        try:
            verdict = self.engine.judge(packet.get_payload(), time.monotonic())
        except Exception as exc:  # a censor bug must not take the network down silently
            self._write({"t": time.time(), "event": "error", "reason": repr(exc)})
            packet.accept()
            return
        self._flush()  # the log shows a decision before its effect does
        for raw in verdict.inject:
            with contextlib.suppress(OSError):
                self.raw.sendto(raw, (socket.inet_ntoa(raw[16:20]), 0))
        if verdict.kind == "accept":
            packet.accept()
        elif verdict.kind == "drop":
            packet.drop()
        else:
            packet.set_mark(packet.get_mark() | verdict.mark)
            packet.repeat()  # back through the chain, which now sees the mark

    def _flush(self) -> None:
        for event in self.engine.take_events():
            self._write(event)
        for request in self.engine.take_probe_requests():
            task = asyncio.get_running_loop().create_task(self._probe(request))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _probe(self, request: ProbeRequest) -> None:
        host, port = request.server
        reactions = await prober.probe_server(host, port, request.payload, self.engine.probe_rng,
                                              self.engine.config.probe_timeout)
        self.engine.probe_finished(request.server, reactions, prober.judge(reactions))
        self._flush()

    def _write(self, event: Event) -> None:
        self.log.write(json.dumps(event) + "\n")

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        self.raw.close()
        self.log.close()


async def serve(config: CensorConfig, log_path: Path) -> None:
    """Install the rules, judge queued packets until SIGTERM, remove the rules."""
    from netfilterqueue import NetfilterQueue

    engine = CensorEngine(config)
    service = CensorService(engine, log_path)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    queue = NetfilterQueue()
    queue.bind(QUEUE_NUM, service.on_packet, max_len=QUEUE_MAX_LEN)
    try:
        loop.add_reader(queue.get_fd(), queue.run, False)
        _forget_connections()
        _restore(ruleset(config, engine.techniques))
        service._write({"t": time.time(), "event": "ready", "techniques": list(config.techniques)})
        print(READY, flush=True)
        await stop.wait()
    finally:
        _restore(EMPTY_RULESET)
        loop.remove_reader(queue.get_fd())
        queue.unbind()
        service.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The censor lab's censor (runs in its netns).")
    parser.add_argument("--config", type=Path, help="CensorConfig as JSON")
    parser.add_argument("--techniques", help="comma-separated technique names (overrides)")
    parser.add_argument("--seed", type=int, help="seed for every random choice (overrides)")
    parser.add_argument("--log", type=Path, required=True, help="where JSON-line events go")
    args = parser.parse_args(argv)
    config = CensorConfig.from_json(args.config.read_text()) if args.config else CensorConfig()
    if args.techniques is not None:
        config = config.with_techniques(*[t for t in args.techniques.split(",") if t])
    if args.seed is not None:
        config = replace(config, seed=args.seed)
    for name in config.techniques:
        load(name, config)  # an unknown name fails here, with the list of known ones
    asyncio.run(serve(config, args.log))
    return 0


# -- the handle a test or the matrix holds ---------------------------------------------------


_RULE_COMMENT = re.compile(r"^\s*(\d+)\s+\d+\s.*/\* (\S+) \*/")


class CensorProcess:
    """A running censor inside a lab: its events, its kernel rule counters, and stop()."""

    def __init__(self, lab: Lab, config: CensorConfig, process: LabProcess, events: Path) -> None:
        self.lab = lab
        self.config = config
        self.process = process
        self.events_path = events

    def events(self) -> list[Event]:
        try:
            text = self.events_path.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.endswith("}")]

    def flows(self) -> list[Event]:
        """The flow log: one event per flow that crossed the censor (source, destination)."""
        return [e for e in self.events() if e["event"] == "flow"]

    def decisions(self, technique: str | None = None) -> list[Event]:
        return [e for e in self.events() if e["event"] == "decision"
                and (technique is None or e["technique"] == technique)]

    def wait_for_event(
        self, matches: Callable[[Event], bool], timeout: float, what: str
    ) -> Event:
        def found() -> Event | None:
            if not self.process.alive():
                raise LabError(f"the censor died:\n{self.process.output()[-800:]}")
            return next((e for e in self.events() if matches(e)), None)

        return wait_until(found, timeout, what)

    def rule_hits(self) -> dict[str, int]:
        """Packets each technique's kernel rule has dropped so far (by rule comment)."""
        listing = self.lab.run("censor", ["iptables", "-nvxL", CHAIN], check=False).stdout
        hits: dict[str, int] = {}
        for line in listing.splitlines():
            match = _RULE_COMMENT.match(line)
            if match:
                hits[match.group(2)] = hits.get(match.group(2), 0) + int(match.group(1))
        return hits

    def stop(self) -> None:
        self.lab.forget(self.process)

    def __enter__(self) -> CensorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_censor_runs = 0


def start_censor(lab: Lab, config: CensorConfig, timeout: float = START_TIMEOUT) -> CensorProcess:
    """Start a censor with `config` in the lab's `censor` namespace; returns once it judges."""
    global _censor_runs
    _censor_runs += 1
    stem = f"censor-{_censor_runs}"
    config_path = lab.workdir / f"{stem}.json"
    config_path.write_text(config.to_json())
    events = lab.workdir / f"{stem}.events.jsonl"
    process = lab.spawn("censor", lab.python(
        "elsewhere.lab.censor", "--config", str(config_path), "--log", str(events)), name=stem)
    process.wait_for_output(READY, timeout)
    return CensorProcess(lab, config, process, events)


if __name__ == "__main__":
    sys.exit(main())
