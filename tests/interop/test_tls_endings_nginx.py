"""How a connection to the decoy ends inside TLS, against the server it imitates: Debian's nginx
1.22.1 on an `ssl` port. Where nginx closes lingering (a pipelined request, a 400 with bytes
left unread, an HTTP/0.9 request with more behind it), it sends close_notify and a FIN, then
reads the socket and drops what comes until lingering_timeout passes without a byte: a late
record (or any bytes) is taken in, not answered with a RST. Where it closes outright, and when
an idle keep-alive connection reaches keepalive_timeout, close_notify and a FIN go out and the
socket is closed: late bytes draw a RST. Each probe goes to nginx and to elsewhere's TLS inbound
with the decoy; what came back (plaintext, close_notify, anything after it), the FIN or RST,
when, and what later bytes drew must be the same. The timeouts are cut short on both sides."""

from __future__ import annotations

import asyncio
import fcntl
import re
import select
import socket
import ssl
import struct
import termios
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_decoy_nginx import MORE, certificate_files, running_tls_nginx

from elsewhere.config import from_mapping
from elsewhere.engine import Engine
from elsewhere.web import decoy
from elsewhere.web.decoy import DecoySite
from elsewhere.web.decoy_content import default_content

# Needs the Debian package nginx (listed in .ci/apt-packages); never skipped.
# Timing is compared with nginx to 0.3 s: these run one after another on one worker, not beside
# each other (each starts ~100 probing threads).
pytestmark = [pytest.mark.interop, pytest.mark.xdist_group("nginx-timing")]

# nginx's lingering_timeout (5 s), lingering_time (30 s) and keepalive_timeout (75 s), cut
# short on both sides
LINGERING_TIMEOUT = 1.0
LINGERING_TIME = 3.0
KEEPALIVE_TIMEOUT = 1.5
SLACK = 0.3
TIMEOUT = 5.0
DATE = re.compile(rb"Date: [^\r\n]*\r\n")
DIRECTIVES = (
    f"        lingering_timeout {round(LINGERING_TIMEOUT * 1000)}ms;\n"
    f"        lingering_time {round(LINGERING_TIME * 1000)}ms;\n"
    f"        keepalive_timeout {round(KEEPALIVE_TIMEOUT * 1000)}ms;\n"
)
H = b"Host: x\r\n"
LATE_REQUEST = b"GET / HTTP/1.1\r\n" + H + b"\r\n"


@dataclass(frozen=True)
class Case:
    """A request, then what the prober does once the server's FIN is in: "record" (a TLS
    record with another request), "raw" (bytes that are no TLS), "slowly" (a byte every
    LINGERING_TIMEOUT * 0.6, three times: past the timeout of one read), "after the timeout"
    (a byte once LINGERING_TIMEOUT has passed)."""

    name: str
    request: bytes
    late: str


@dataclass(frozen=True)
class Ending:
    answer: bytes  # the plaintext, Date blanked
    close_notify: bool
    after_close_notify: bytes  # bytes after the close_notify record, before the FIN
    tcp: str  # "FIN", "RST" or "open"
    after: float  # seconds from the request to the FIN
    late: tuple[str, ...]  # what each late sending drew: "acked" or "RST"


class Client:
    """A TLS client on memory BIOs over a plain socket, to see each record and the FIN."""

    def __init__(self, port: int) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.sock.sendall(self.outgoing.read())
                data = self.sock.recv(65536)
                assert data, "the server ended the handshake"
                self.incoming.write(data)
        self.sock.sendall(self.outgoing.read())

    def send(self, data: bytes) -> None:
        self.tls.write(data)
        self.sock.sendall(self.outgoing.read())

    def read_to_the_end(self, wait: float) -> tuple[bytes, bool, bytes, str]:
        """Plaintext, whether close_notify came, what came after it, how TCP ended."""
        plain, notified, after = bytearray(), False, bytearray()
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return bytes(plain), notified, bytes(after), "open"
            except ConnectionResetError:
                return bytes(plain), notified, bytes(after), "RST"
            if not data:
                return bytes(plain), notified, bytes(after), "FIN"
            if notified:
                after += data
                continue
            self.incoming.write(data)
            while True:
                try:
                    chunk = self.tls.read(65536)
                except ssl.SSLWantReadError:
                    break
                if not chunk:  # close_notify
                    notified = True
                    after += self.incoming.read()
                    break
                plain += chunk
        return bytes(plain), notified, bytes(after), "open"


def visit(port: int, case: Case) -> Ending:
    client = Client(port)
    with client.sock:
        start = time.monotonic()
        client.send(case.request)
        plain, notified, after, tcp = client.read_to_the_end(KEEPALIVE_TIMEOUT + 1.0)
        took = time.monotonic() - start
        late: list[str] = []
        if tcp == "FIN":
            if case.late == "record":
                client.tls.write(LATE_REQUEST)  # after the server's close_notify: allowed
                late.append(drew(client.sock, client.outgoing.read()))
            elif case.late == "raw":
                late.append(drew(client.sock, MORE))
            elif case.late == "slowly":
                for _ in range(3):
                    time.sleep(LINGERING_TIMEOUT * 0.6)  # the prober's pace: part of the probe
                    late.append(drew(client.sock, b"x"))
            elif case.late == "after the timeout":
                time.sleep(LINGERING_TIMEOUT + SLACK)
                late.append(drew(client.sock, b"x"))
    return Ending(DATE.sub(b"Date: -\r\n", plain), notified, after, tcp, took, tuple(late))


def drew(sock: socket.socket, data: bytes) -> str:
    """Send `data` after the server's FIN: "acked" (the server reads on) or "RST" (it had
    closed). As test_decoy_nginx's still_reads: on loopback either comes at once."""
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        return "RST"
    reset = select.poll()
    reset.register(sock, 0)  # POLLERR and POLLHUP only: a RST; the FIN alone is POLLIN
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if reset.poll(1):
            return "RST"
        unacked = struct.unpack("i", fcntl.ioctl(sock, termios.TIOCOUTQ, b"\0" * 4))[0]
        if unacked == 0:  # a RST empties the queue too, after setting the error it polls
            return "RST" if reset.poll(0) else "acked"
    raise AssertionError("bytes sent after the FIN were neither acknowledged nor reset")


CASES = [
    Case("Connection: close", b"GET / HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n", "record"),
    Case("keep-alive, then idle", b"GET / HTTP/1.1\r\n" + H + b"\r\n", "record"),
    Case(
        "pipelined, the last closes",
        LATE_REQUEST + b"GET /robots.txt HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n",
        "record",
    ),
    Case("pipelined, raw bytes late", LATE_REQUEST + b"GET / HTTP/1.0\r\n\r\n", "raw"),
    Case("pipelined, bytes slowly", LATE_REQUEST + b"GET / HTTP/1.0\r\n\r\n", "slowly"),
    Case(
        "pipelined, a byte too late", LATE_REQUEST + b"GET / HTTP/1.0\r\n\r\n", "after the timeout"
    ),
    Case("400 with bytes left", b"GET / HTTP/1.1\r\n" + H + H + b"\r\nmore", "record"),
    Case("400 on a bad byte", b"GET / HTTP/1.1\r\n" + H + b"\x01\r\n\r\n", "raw"),
    Case("HTTP/0.9 with more behind", b"GET /\r\nmore", "record"),
]


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return certificate_files(tmp_path_factory.mktemp("cert"))


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory, tls_files: tuple[Path, Path]) -> Iterator[int]:
    """nginx's TLS port, serving test_decoy_nginx's site, with the short timeouts."""
    with running_tls_nginx(tmp_path_factory.mktemp("nginx"), tls_files, DIRECTIVES) as port:
        yield port


@pytest.fixture
def short_timers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The decoy's copies of nginx's defaults, cut as nginx's are here (DecoySite takes no
    parameters for them; it reads them when it sets a deadline)."""
    monkeypatch.setattr(decoy, "LINGERING_TIMEOUT", LINGERING_TIMEOUT)
    monkeypatch.setattr(decoy, "LINGERING_TIME", LINGERING_TIME)
    monkeypatch.setattr(decoy, "KEEPALIVE_TIMEOUT", KEEPALIVE_TIMEOUT)


def inbound(cert: Path, key: Path) -> dict:
    return {
        "type": "tls",
        "listen": "127.0.0.1",
        "port": 0,
        "cert": str(cert),
        "key": str(key),
        "trojan": [{"id": "tom", "password": "a password"}],
        "fallback": "decoy",
        "decide_timeout": 0.5,
    }


async def test_inside_tls_the_decoys_connections_end_as_nginxs_do_lingering_or_not(
    nginx: int, tls_files: tuple[Path, Path], short_timers: None
) -> None:
    config = {"inbounds": [inbound(*tls_files)], "outbounds": [{"type": "direct"}]}
    loop = asyncio.get_running_loop()
    async with Engine(from_mapping(config)) as engine:
        ours = engine.inbounds[0].port
        with ThreadPoolExecutor(2 * len(CASES)) as pool:
            seen = await asyncio.gather(
                *(
                    loop.run_in_executor(pool, visit, port, c)
                    for c in CASES
                    for port in (nginx, ours)
                )
            )
    by_case = {case.name: (seen[2 * i], seen[2 * i + 1]) for i, case in enumerate(CASES)}
    differ = {
        name: (theirs, mine)
        for name, (theirs, mine) in by_case.items()
        if (theirs.answer, theirs.close_notify, theirs.after_close_notify, theirs.tcp, theirs.late)
        != (mine.answer, mine.close_notify, mine.after_close_notify, mine.tcp, mine.late)
        or abs(theirs.after - mine.after) > SLACK
    }
    assert differ == {}
    # the comparison means something: nginx answered, sent close_notify and a FIN every time,
    # read on after some and not after others, and its lingering timer restarts on each read
    nginx_saw = {name: each[0] for name, each in by_case.items()}
    assert all(e.answer and e.close_notify and e.tcp == "FIN" for e in nginx_saw.values())
    assert nginx_saw["Connection: close"].late == ("RST",)
    assert nginx_saw["pipelined, the last closes"].late == ("acked",)
    assert nginx_saw["pipelined, bytes slowly"].late == ("acked",) * 3
    assert nginx_saw["pipelined, a byte too late"].late == ("RST",)
    idle = nginx_saw["keep-alive, then idle"]
    assert idle.late == ("RST",)
    assert KEEPALIVE_TIMEOUT - SLACK < idle.after < KEEPALIVE_TIMEOUT + SLACK


def test_unconfigured_an_idle_keepalive_connection_is_kept_nginxs_75_seconds() -> None:
    """keepalive_timeout's default in ngx_http_core_module (Debian's nginx.conf leaves it)."""
    site = DecoySite(default_content(), now=1000.0)
    site.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 1000.0)
    assert site.data_to_send().startswith(b"HTTP/1.1 200 OK\r\n")
    assert not (site.closed or site.half_closed)
    assert site.deadline == 1075.0 and not site.times_out_quietly
