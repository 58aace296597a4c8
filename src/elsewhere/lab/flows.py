"""Flows as the censor tracks them: who opened the connection, the first payloads each way,
and the client's TCP stream reassembled from segments (so a ClientHello split over two segments
is still read, in or out of order). Sans-I/O: packets and `now` in, state out."""

from __future__ import annotations

from dataclasses import dataclass, field

from elsewhere.codecs.address import NeedMoreData
from elsewhere.errors import ProtocolError
from elsewhere.lab.clienthello import ClientHello, looks_like_tls, parse_client_hello
from elsewhere.lab.packet import PROTO_TCP, TCP_ACK, TCP_SYN, Packet

SEQ_SPACE = 1 << 32
MAX_PREFIX = 16 * 1024  # bytes of the client's stream the censor keeps; a ClientHello fits
MAX_PENDING = 64  # out-of-order segments held while waiting for a gap to fill
FLOW_IDLE = 300.0  # seconds without a queued packet before a flow is forgotten
SWEEP_EVERY = 4096  # packets between sweeps of idle flows

Endpoint = tuple[str, int]
FlowKey = tuple[int, Endpoint, Endpoint]


class StreamPrefix:
    """The contiguous start of one direction of a TCP stream, at most `limit` bytes."""

    def __init__(self, limit: int = MAX_PREFIX) -> None:
        self.limit = limit
        self._base: int | None = None  # sequence number of the first byte
        self._data = bytearray()
        self._pending: dict[int, bytes] = {}

    def begin(self, first_seq: int) -> None:
        """The stream's first byte has sequence number `first_seq` (the SYN's seq + 1)."""
        if self._base is None:
            self._base = first_seq % SEQ_SPACE

    def add(self, seq: int, payload: bytes) -> None:
        if not payload:
            return
        if self._base is None:  # joined mid-stream (no SYN seen): start where we are
            self._base = seq
        offset = (seq - self._base) % SEQ_SPACE
        if offset >= SEQ_SPACE // 2:  # before the base: an old retransmission
            return
        if offset > len(self._data):
            if offset < self.limit and len(self._pending) < MAX_PENDING:
                self._pending[offset] = payload
            return
        self._append(offset, payload)
        while True:  # fill from held segments that now touch the end
            ready = [o for o in self._pending if o <= len(self._data)]
            if not ready:
                break
            for o in sorted(ready):
                self._append(o, self._pending.pop(o))

    def _append(self, offset: int, payload: bytes) -> None:
        have = len(self._data)
        fresh = payload[have - offset :]
        room = self.limit - have
        if fresh and room > 0:
            self._data += fresh[:room]

    @property
    def data(self) -> bytes:
        return bytes(self._data)

    def __len__(self) -> int:
        return len(self._data)


@dataclass(eq=False)
class Flow:
    """One connection (TCP) or one 5-tuple (UDP), oriented client → server."""

    proto: int
    client: Endpoint
    server: Endpoint
    created: float
    last_seen: float
    upstream_packets: int = 0
    downstream_packets: int = 0
    upstream_payloads: int = 0  # client → server packets that carried data
    downstream_payloads: int = 0
    first_payload: bytes | None = None  # the first client data segment or datagram, as sent
    first_reply: bytes | None = None
    syn_seen: bool = False  # TCP: the censor saw the connection open (not picked up mid-way)
    syn_seq: int | None = None  # the opening SYN's sequence number
    stream: StreamPrefix = field(default_factory=StreamPrefix)
    notes: dict[str, object] = field(default_factory=dict)  # per-technique memory
    logged: set[str] = field(default_factory=set)  # decisions already written to the log
    _hello: ClientHello | None = None
    _not_tls: bool = False

    @property
    def opens_here(self) -> bool:
        """Whether the censor has seen this flow from its start: every UDP flow, and TCP
        connections whose SYN it saw (not retransmissions of an older, forgotten one)."""
        return self.proto != PROTO_TCP or self.syn_seen

    def is_upstream(self, packet: Packet) -> bool:
        return (packet.src, packet.sport) == self.client

    def client_hello(self) -> ClientHello | None:
        """The client's ClientHello once the reassembled stream holds all of it, else None
        (not yet complete, or the stream is not TLS)."""
        if self._hello is not None or self._not_tls or self.proto != PROTO_TCP:
            return self._hello
        data = self.stream.data
        if not data:
            return None
        if not looks_like_tls(data):
            self._not_tls = True
            return None
        try:
            self._hello = parse_client_hello(data)
        except NeedMoreData:
            return None
        except ProtocolError:
            self._not_tls = True
        return self._hello

    def describe(self) -> str:
        kind = "tcp" if self.proto == PROTO_TCP else "udp"
        return f"{kind} {self.client[0]}:{self.client[1]}>{self.server[0]}:{self.server[1]}"


class FlowTable:
    """All flows the censor has seen packets of, keyed by protocol and both endpoints."""

    def __init__(self, idle: float = FLOW_IDLE) -> None:
        self.idle = idle
        self._flows: dict[FlowKey, Flow] = {}
        self._since_sweep = 0

    def __len__(self) -> int:
        return len(self._flows)

    def track(self, packet: Packet, now: float) -> tuple[Flow, bool]:
        """The packet's flow (created if new) and whether the packet goes client → server."""
        a, b = (packet.src, packet.sport), (packet.dst, packet.dport)
        key: FlowKey = (packet.proto, min(a, b), max(a, b))
        flow = self._flows.get(key)
        if (
            flow is not None
            and packet.is_tcp
            and packet.flags & (TCP_SYN | TCP_ACK) == TCP_SYN
            and flow.syn_seq is not None
            and packet.seq != flow.syn_seq
        ):
            # a new connection on a reused 4-tuple (busy machines reuse ports): judge it anew
            # rather than as packet N of the old one (a retransmitted SYN keeps its seq)
            flow = None
        if flow is None:
            # Whoever sends the first packet is the client, except a SYN-ACK's sender.
            syn_ack = packet.is_tcp and packet.flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK
            client, server = (b, a) if syn_ack else (a, b)
            flow = Flow(packet.proto, client, server, created=now, last_seen=now)
            self._flows[key] = flow
            self._maybe_sweep(now)
        flow.last_seen = now
        upstream = flow.is_upstream(packet)
        if upstream:
            flow.upstream_packets += 1
            if packet.is_tcp and packet.flags & TCP_SYN:
                flow.syn_seen = True
                flow.syn_seq = packet.seq
                flow.stream.begin(packet.seq + 1)
            if packet.payload:
                flow.upstream_payloads += 1
                if flow.first_payload is None:
                    flow.first_payload = packet.payload
                if packet.is_tcp:
                    flow.stream.add(packet.seq, packet.payload)
        else:
            flow.downstream_packets += 1
            if packet.payload:
                flow.downstream_payloads += 1
                if flow.first_reply is None:
                    flow.first_reply = packet.payload
        return flow, upstream

    def _maybe_sweep(self, now: float) -> None:
        self._since_sweep += 1
        if self._since_sweep < SWEEP_EVERY:
            return
        self._since_sweep = 0
        stale = [k for k, f in self._flows.items() if now - f.last_seen > self.idle]
        for key in stale:
            del self._flows[key]
