"""elsewhere's REALITY client (the `reality` security layer: our TLS 1.3 client with a browser's
hello) against elsewhere's REALITY server whose dest is a real TLS 1.3 site (Debian's nginx on
loopback): with the server's key, VLESS inside reaches its destination, with Chrome's and
Firefox's hellos; with a wrong key the client meets nginx's own certificate and says in one
line that the server did not authenticate, and the server counts a probe.

(A real REALITY peer is not available here: the sing-box 1.14.4 wheel is built without uTLS,
so it has neither a REALITY server nor a REALITY client.)"""

from __future__ import annotations

import asyncio
import os
import ssl
from typing import Any

import pytest
from test_reality_nginx import PUBLIC, SHORT_ID, UUID, _settled, nginx, reality_server
from tls_peers import tcp_echo

from elsewhere.codecs import reality, vless
from elsewhere.session import Destination
from elsewhere.transports.dial import dial
from elsewhere.transports.layer import Layer, Pending
from elsewhere.transports.settings import StreamSettings

pytestmark = pytest.mark.interop

__all__ = ["nginx"]  # the fixture, from the server's tests
TIMEOUT = 10.0


def settings(public_key: bytes, fp: str) -> StreamSettings:
    options: dict[str, Any] = {
        "security": "reality", "sni": "localhost", "fp": fp, "sid": SHORT_ID,
        "pbk": reality.encode_key(public_key),
    }
    return StreamSettings.from_options("proxy", options)


async def vless_echo(stream: Layer, echo_port: int, payload: bytes) -> bytes:
    got = bytearray()
    enough = asyncio.get_running_loop().create_future()

    class Collect(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            got.extend(data)
            if len(got) >= len(payload) + 2 and not enough.done():
                enough.set_result(None)

        def connection_lost(self, exc: Exception | None) -> None:
            if not enough.done():
                enough.set_exception(ConnectionError("the server closed"))

    held = stream.get_protocol()
    collect = Collect()
    stream.set_protocol(collect)
    if isinstance(held, Pending):
        for chunk in held.chunks:
            collect.data_received(chunk)
    stream.write(vless.encode_request(
        vless.parse_uuid(UUID), vless.CMD_TCP, Destination("127.0.0.1", echo_port), payload
    ))
    await asyncio.wait_for(enough, TIMEOUT)
    assert bytes(got[:2]) == vless.encode_response()
    return bytes(got[2:])


@pytest.mark.parametrize("fp", ["chrome", "firefox"])
async def test_our_reality_client_authenticates_and_vless_reaches_its_destination(
    nginx: int, fp: str
) -> None:
    async with reality_server(nginx) as (engine, inbound), tcp_echo() as echo:
        stream = await dial(settings(PUBLIC, fp), "127.0.0.1", inbound.port)
        try:
            payload = os.urandom(300_000)
            assert await vless_echo(stream, echo, payload) == payload
        finally:
            stream.close()
        assert engine.stats.probes == 0
        assert inbound.refusals == {}


async def test_with_a_wrong_key_the_client_meets_dest_and_says_so_in_one_line(nginx: int) -> None:
    wrong = reality.public_key(reality.generate_private_key())
    async with reality_server(nginx) as (engine, inbound):
        with pytest.raises(ssl.SSLCertVerificationError, match="did not authenticate"):
            await dial(settings(wrong, "chrome"), "127.0.0.1", inbound.port)
        await _settled(lambda: engine.stats.probes == 1)
        assert inbound.refusals == {"bad_token": 1}
