"""Our SIP004 codec against shadowsocks-libev (Debian package): our client through ss-server,
ss-local into our server, and UDP packets through ss-server."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from peers import bound

from elsewhere.codecs.address import NeedMoreData, decode_address, encode_address
from elsewhere.codecs.shadowsocks import (
    METHODS,
    Cipher,
    StreamDecryptor,
    StreamEncryptor,
    decrypt_packet,
    encrypt_packet,
)
from elsewhere.session import Destination
from ports import free_port

# Needs the Debian package shadowsocks-libev (listed in .ci/apt-packages); never skipped.
pytestmark = pytest.mark.interop

PASSWORD = "interop-пароль-42"
TIMEOUT = 5.0
methods = pytest.mark.parametrize("method", sorted(METHODS))


@contextlib.contextmanager
def running(
    args: list[str], port: int, log: Path, *, udp: bool = False
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a shadowsocks-libev binary and wait (bounded) until it listens on TCP `port` and,
    with `udp`, has bound UDP `port` too (it binds that after TCP: a datagram sent in between
    is lost)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (bound(port, "tcp") and (not udp or bound(port, "udp"))):
            if proc.poll() is not None:
                pytest.fail(f"{args[0]} exited: {log.read_text(errors='replace')}")
            if time.monotonic() > deadline:
                pytest.fail(f"{args[0]} never listened on {port}")
            time.sleep(0.02)  # poll interval while the binary starts, not synchronisation
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=TIMEOUT)


def serve_once(handler: Callable[[socket.socket], None]) -> tuple[int, threading.Thread]:
    """A loopback TCP listener that runs handler(conn) for one connection in a thread."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)

    def run() -> None:
        with listener:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(TIMEOUT)
                handler(conn)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread


def echo(conn: socket.socket) -> None:
    while data := conn.recv(65536):
        conn.sendall(data)


def read_plain(sock: socket.socket, decryptor: StreamDecryptor, size: int) -> bytes:
    got = b""
    while len(got) < size:
        data = sock.recv(65536)
        if not data:
            break
        got += decryptor.decrypt(data)
    return got


@methods
def test_our_client_talks_to_ss_server(method: str, tmp_path: Path) -> None:
    echo_port, echo_thread = serve_once(echo)
    port = free_port()
    args = ["ss-server", "-s", "127.0.0.1", "-p", str(port), "-k", PASSWORD, "-m", method]
    cipher = Cipher.from_password(method, PASSWORD)
    data = bytes(range(256)) * 400  # several SIP004 chunks each way
    with (
        running(args, port, tmp_path / "ss-server.log"),
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock,
    ):
        request = encode_address(Destination("127.0.0.1", echo_port)) + data
        sock.sendall(StreamEncryptor(cipher).encrypt(request))
        assert read_plain(sock, StreamDecryptor(cipher), len(data)) == data
    echo_thread.join(TIMEOUT)


@methods
def test_ss_local_talks_to_our_server(method: str, tmp_path: Path) -> None:
    cipher = Cipher.from_password(method, PASSWORD)
    seen: list[Destination] = []
    data = b"hello through ss-local " * 2000

    def server(conn: socket.socket) -> None:
        decryptor = StreamDecryptor(cipher)
        plain = b""
        while True:
            plain += decryptor.decrypt(conn.recv(65536))
            try:
                dest, used = decode_address(plain)
            except NeedMoreData:
                continue
            if len(plain) - used >= len(data):
                break
        seen.append(dest)
        conn.sendall(StreamEncryptor(cipher).encrypt(b"reply:" + plain[used:]))

    server_port, server_thread = serve_once(server)
    local_port = free_port()
    args = ["ss-local", "-s", "127.0.0.1", "-p", str(server_port), "-b", "127.0.0.1"]
    args += ["-l", str(local_port), "-k", PASSWORD, "-m", method]
    with (
        running(args, local_port, tmp_path / "ss-local.log"),
        socket.create_connection(("127.0.0.1", local_port), timeout=TIMEOUT) as sock,
    ):
        sock.sendall(b"\x05\x01\x00")
        assert sock.recv(2) == b"\x05\x00"
        sock.sendall(b"\x05\x01\x00" + encode_address(Destination("instagram.test", 443)))
        assert sock.recv(10)[:2] == b"\x05\x00"
        sock.sendall(data)
        reply = b""
        while len(reply) < len(data) + 6 and (more := sock.recv(65536)):
            reply += more
    server_thread.join(TIMEOUT)
    assert seen == [Destination("instagram.test", 443)]
    assert reply == b"reply:" + data


@methods
def test_udp_packets_go_through_ss_server(method: str, tmp_path: Path) -> None:
    cipher = Cipher.from_password(method, PASSWORD)
    port = free_port()
    args = ["ss-server", "-s", "127.0.0.1", "-p", str(port), "-k", PASSWORD, "-m", method, "-u"]
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as target,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client,
    ):
        target.bind(("127.0.0.1", 0))
        target.settimeout(TIMEOUT)
        target_addr = Destination("127.0.0.1", target.getsockname()[1])
        client.settimeout(TIMEOUT)
        with running(args, port, tmp_path / "ss-server.log", udp=True):
            packet = encrypt_packet(cipher, encode_address(target_addr) + b"dgram")
            client.sendto(packet, ("127.0.0.1", port))
            data, peer = target.recvfrom(65536)
            assert data == b"dgram"
            target.sendto(b"answer", peer)
            reply = decrypt_packet(cipher, client.recvfrom(65536)[0])
    assert reply == encode_address(target_addr) + b"answer"
