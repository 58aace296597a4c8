"""XTLS Vision (VLESS flow "xtls-rprx-vision", Xray-core proxy/proxy.go: XtlsPadding,
XtlsUnpadding, XtlsFilterTls; sing-box protocol/vless): the proxied stream's first packets are
framed and padded, so the inner TLS handshake's telling lengths vanish inside the outer TLS;
once the inner TLS 1.3 is past its handshake, both sides say "direct" and copy the inner
records raw over TCP, outside the outer TLS (no TLS in TLS to see).

A frame: [the user's UUID, in the first frame only] | command(1) | content length(u16) |
padding length(u16) | content | padding. Commands: 0 continue, 1 end (padding over, still
inside the outer TLS), 2 direct (padding over, raw from the next write on).

Sans-I/O: VisionWriter.encode(chunk) -> (bytes for the outer TLS, switch to raw after them);
VisionReader.decode(chunk) -> (content, the peer switched to raw after this chunk)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

FLOW = "xtls-rprx-vision"
UUID_LEN = 16
CMD_CONTINUE = 0
CMD_END = 1
CMD_DIRECT = 2
FRAME_HEADER = 5
BUFFER_SIZE = 8192  # Xray's buf.Size: a frame and its padding fit one of its buffers
MAX_FRAME_CONTENT = BUFFER_SIZE - UUID_LEN - FRAME_HEADER  # 8171: ReshapeMultiBuffer's bound
# Xray's default testseed: content under 900 bytes padded up to 900 + [0, 500), else [0, 256)
LONG_PADDING_BELOW = 900
LONG_PADDING_RANDOM = 500
LONG_PADDING_BASE = 900
SHORT_PADDING_RANDOM = 256
PACKETS_TO_FILTER = 8

TLS_APPLICATION_DATA = b"\x17\x03\x03"
TLS_SERVER_HANDSHAKE = b"\x16\x03\x03"
TLS_CLIENT_HANDSHAKE = b"\x16\x03"
TLS13_SUPPORTED_VERSIONS = b"\x00\x2b\x00\x02\x03\x04"
HANDSHAKE_CLIENT_HELLO = 0x01
HANDSHAKE_SERVER_HELLO = 0x02
# TLS 1.3 suites after which direct copy is safe (Xray: every one but TLS_AES_128_CCM_8_SHA256)
DIRECT_SUITES = frozenset({0x1301, 0x1302, 0x1303, 0x1304})


@dataclass
class TrafficState:
    """What one connection's two directions learn together about the inner traffic
    (Xray's TrafficState): is it TLS, TLS 1.3, may it go direct."""

    packets_to_filter: int = PACKETS_TO_FILTER
    enable_direct: bool = False
    is_tls12_or_above: bool = False
    is_tls: bool = False
    cipher: int = 0
    remaining_server_hello: int = -1

    def filter(self, chunks: list[bytes]) -> None:
        """XtlsFilterTls: look at the inner stream's first packets for its hellos."""
        for chunk in chunks:
            if self.packets_to_filter <= 0:
                return
            self.packets_to_filter -= 1
            if len(chunk) >= 6:
                if chunk[:3] == TLS_SERVER_HANDSHAKE and chunk[5] == HANDSHAKE_SERVER_HELLO:
                    self.remaining_server_hello = (chunk[3] << 8 | chunk[4]) + 5
                    self.is_tls12_or_above = True
                    self.is_tls = True
                    if len(chunk) >= 79 and self.remaining_server_hello >= 79:
                        session_id_length = chunk[43]
                        at = 43 + session_id_length + 1
                        self.cipher = int.from_bytes(chunk[at : at + 2], "big")
                elif chunk[:2] == TLS_CLIENT_HANDSHAKE and chunk[5] == HANDSHAKE_CLIENT_HELLO:
                    self.is_tls = True
            if self.remaining_server_hello > 0:
                end = min(self.remaining_server_hello, len(chunk))
                self.remaining_server_hello -= len(chunk)
                if TLS13_SUPPORTED_VERSIONS in chunk[:end]:
                    self.enable_direct = self.cipher in DIRECT_SUITES
                    self.packets_to_filter = 0
                    return
                if self.remaining_server_hello <= 0:  # TLS 1.2: padded, never direct
                    self.packets_to_filter = 0
                    return


def is_complete_records(data: bytes) -> bool:
    """IsCompleteRecord: `data` is whole TLS application data records and nothing else."""
    offset, end = 0, len(data)
    if not end:
        return False
    while offset < end:
        if end - offset < 5 or data[offset : offset + 3] != TLS_APPLICATION_DATA:
            return False
        length = data[offset + 3] << 8 | data[offset + 4]
        if not length:
            return False
        offset += 5 + length
    return offset == end


def _padding_length(content: int, long: bool) -> int:
    if content < LONG_PADDING_BELOW and long:
        padding = secrets.randbelow(LONG_PADDING_RANDOM) + LONG_PADDING_BASE - content
    else:
        padding = secrets.randbelow(SHORT_PADDING_RANDOM)
    return max(0, min(padding, MAX_FRAME_CONTENT - content))


@dataclass
class VisionWriter:
    """One direction's padding (Xray's VisionWriter)."""

    state: TrafficState
    uuid: bytes
    padding: bool = True
    direct: bool = False  # writes after the last encode() go raw
    _uuid_pending: bool = field(default=True, repr=False)

    def frame(self, content: bytes, command: int, long: bool) -> bytes:
        """XtlsPadding."""
        padding = _padding_length(len(content), long)
        head = self.uuid if self._uuid_pending else b""
        self._uuid_pending = False
        return b"".join((
            head, bytes((command, len(content) >> 8, len(content) & 0xFF, padding >> 8,
                         padding & 0xFF)), content, bytes(padding),
        ))

    def encode(self, data: bytes) -> tuple[bytes, bool]:
        """(what goes into the outer TLS, whether writes go raw after it). b"" `data` is the
        first write with nothing to say: a long padding alone hides the request header."""
        if self.direct or not self.padding:
            return data, self.direct
        state = self.state
        state.filter([data])
        if not data:
            return self.frame(b"", CMD_CONTINUE, True), False
        complete = is_complete_records(data)
        pieces = [data[i : i + MAX_FRAME_CONTENT] for i in range(0, len(data),
                                                                  MAX_FRAME_CONTENT)]
        long = state.is_tls
        out: list[bytes] = []
        last = len(pieces) - 1
        for i, piece in enumerate(pieces):
            if state.is_tls and len(piece) >= 6 and piece[:3] == TLS_APPLICATION_DATA and complete:
                # the inner handshake is over: padding ends with this write
                if state.enable_direct:
                    self.direct = True
                command = CMD_CONTINUE
                if i == last:
                    command = CMD_DIRECT if state.enable_direct else CMD_END
                out.append(self.frame(piece, command, True))
                self.padding = False
                long = False
                continue
            if not state.is_tls12_or_above and state.packets_to_filter <= 1:
                # not TLS (or not found out in time): padding ends a packet early, as Xray's
                self.padding = False
                out.append(self.frame(piece, CMD_END, long))
                out.extend(pieces[i + 1 :])  # after "end", the rest goes as it is
                break
            command = CMD_CONTINUE
            if i == last and not self.padding:
                command = CMD_DIRECT if state.enable_direct else CMD_END
            out.append(self.frame(piece, command, long))
        return b"".join(out), self.direct


@dataclass
class VisionReader:
    """One direction's unpadding (Xray's VisionReader): a stream state machine, so frames may
    be cut anywhere between reads."""

    state: TrafficState
    uuid: bytes
    within_padding: bool = True
    direct: bool = False  # the peer said "direct": what follows this chunk is raw
    remaining_command: int = -1
    remaining_content: int = -1
    remaining_padding: int = -1
    current_command: int = 0
    _head: bytes = field(default=b"", repr=False)  # a command header cut by a read

    def decode(self, data: bytes) -> tuple[bytes, bool]:
        if self.direct or not (self.within_padding or self.state.packets_to_filter > 0):
            return data, self.direct
        plain = self._unpad(data)
        if self.remaining_content > 0 or self.remaining_padding > 0 or self.current_command == 0:
            self.within_padding = True
        elif self.current_command == CMD_END:
            self.within_padding = False
        elif self.current_command == CMD_DIRECT:
            self.within_padding = False
            self.direct = True
        if self.state.packets_to_filter > 0 and plain:
            self.state.filter([plain])
        return plain, self.direct

    def _unpad(self, data: bytes) -> bytes:
        """XtlsUnpadding, over whole runs of content and padding rather than byte by byte."""
        if self.remaining_command == -1 and self.remaining_content == -1 \
                and self.remaining_padding == -1:
            if len(data) >= UUID_LEN + FRAME_HEADER and data[:UUID_LEN] == self.uuid:
                data = data[UUID_LEN:]
                self.remaining_command = FRAME_HEADER
            else:
                return data
        out: list[bytes] = []
        offset, end = 0, len(data)
        while offset < end:
            if self.remaining_command > 0:
                take = min(self.remaining_command, end - offset)
                self._head += data[offset : offset + take]
                offset += take
                self.remaining_command -= take
                if self.remaining_command:
                    break
                head, self._head = self._head, b""
                self.current_command = head[0]
                self.remaining_content = head[1] << 8 | head[2]
                self.remaining_padding = head[3] << 8 | head[4]
            elif self.remaining_content > 0:
                take = min(self.remaining_content, end - offset)
                out.append(data[offset : offset + take])
                offset += take
                self.remaining_content -= take
            else:
                take = min(self.remaining_padding, end - offset)
                offset += take
                self.remaining_padding -= take
            if self.remaining_command <= 0 and self.remaining_content <= 0 \
                    and self.remaining_padding <= 0:
                if self.current_command == CMD_CONTINUE:
                    self.remaining_command = FRAME_HEADER
                else:  # end or direct: what is left of this chunk is the stream itself
                    self.remaining_command = self.remaining_content = self.remaining_padding = -1
                    out.append(data[offset:])
                    break
        return b"".join(out)
