"""Two hops through the lab (issue 9): the client's phone-style connection goes to a relay in
`domestic` (an address the censor tolerates), and the relay carries it over its own uplink to
the exit in `server`. Each process is what an operator runs:

- the exit: one of elsewhere_transports' servers (`elsewhere run` in `server`);
- the relay: `elsewhere relay EXIT_LINK` in `domestic`, with a store made by the same calls
  `elsewhere keys add` makes, so its printed link is the one a person would scan;
- the phone: `elsewhere client LINK` in `client`, with the link the relay printed.

    elsewhere-relay-ss2022     phone ─ss2022→ relay ─ss2022→ exit
    elsewhere-relay-vless-ws   phone ─VLESS+WS+TLS→ relay ─VLESS+WS+TLS→ exit
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from elsewhere.control import roles
from elsewhere.control.links import AccessKey, format_access_key
from elsewhere.lab import plan
from elsewhere.lab.elsewhere_transports import (
    IDLE_TIMEOUT,
    LISTENING,
    START_TIMEOUT,
    WEBSOCKET_PATH,
    ElsewhereSs2022,
    ElsewhereTls,
    ElsewhereTransport,
    toml_text,
)
from elsewhere.lab.errors import LabError
from elsewhere.lab.topology import Lab, LabProcess
from elsewhere.lab.transport import Route
from elsewhere.session import Destination

Kind = Literal["ss2022", "vless-ws"]
EXIT_OK = " ok · "  # the relay's status line once its check went through the exit
CLIENT_READY = "proxy on"  # what `elsewhere client` prints once its port is open
# An HTTPS site abroad the exit reaches: what the relay's check goes to through the exit.
CHECK = f"{plan.site('blog.test').address}:443"
PHONE = "phone"

# kind: (exit port on plan.SERVER, relay ports (ss, ss2022, tls) on plan.DOMESTIC_HOST, socks)
PORTS: dict[Kind, tuple[int, tuple[int, int, int], int]] = {
    "ss2022": (8402, (8410, 8412, 8413), 1102),
    "vless-ws": (8403, (8420, 8422, 8423), 1103),
}


class ElsewhereRelay:
    """client → relay (domestic) → exit (abroad), each side speaking `kind`."""

    def __init__(self, kind: Kind) -> None:
        self.kind = kind
        self.name = f"elsewhere-relay-{kind}"
        self.exit_port, self.relay_ports, self.socks_port = PORTS[kind]
        self.exit: ElsewhereTransport = (
            ElsewhereSs2022() if kind == "ss2022" else ElsewhereTls("vless", "ws"))
        # its own port, and its own name: the certificate's and the logs' files are named after
        # it, and the one-hop row of the same kind may run in the same lab
        self.exit.port = self.exit_port
        self.exit.name = f"{self.name}-exit"

    def exit_link(self, lab: Lab) -> str:
        """The exit's share link, as `elsewhere server` would print it for this server."""
        if isinstance(self.exit, ElsewhereSs2022):
            key = AccessKey("ss", self.exit.method, self.exit.psk, plan.SERVER, self.exit_port,
                            name="exit")
        else:
            assert isinstance(self.exit, ElsewhereTls)
            _, pin = self.exit.certificate(lab)
            key = AccessKey("vless", "", self.exit.uuid, plan.SERVER, self.exit_port,
                            name="exit", extra={
                                "security": "tls", "sni": plan.SERVER_NAME, "type": "ws",
                                "host": plan.SERVER_NAME, "path": WEBSOCKET_PATH, "pcs": pin})
        return format_access_key(key)

    def prepare_relay(self, lab: Lab) -> Path:
        """The relay's data directory with its settings and the phone's key, as the relay's
        first run and `elsewhere keys add phone` leave it."""
        data = lab.workdir / f"{self.name}-relay"
        if (data / roles.STORE_FILE).exists():  # the relay's second start in this lab
            return data
        store = roles.open_store(data)
        try:
            port, port_ss2022, port_tls = self.relay_ports
            roles.prepare_server(store, port, plan.DOMESTIC_HOST, "0.0.0.0", data=data,
                                 ports={"port_ss2022": port_ss2022, "port_tls": port_tls})
            if self.kind == "ss2022":
                roles.add_key(store, PHONE, protocol="ss2022")
            else:
                roles.add_key(store, PHONE, "ws", protocol="vless")
        finally:
            store.close()
        return data

    @property
    def relay_port(self) -> int:
        return self.relay_ports[1] if self.kind == "ss2022" else self.relay_ports[2]

    @contextmanager
    def open(self, lab: Lab) -> Iterator[Route]:
        started: list[LabProcess] = []
        try:
            server_config, _ = self.exit.configs(lab)
            server_config["timeouts"] = {"idle": IDLE_TIMEOUT}
            path = lab.workdir / f"{self.exit.name}.toml"
            path.write_text(toml_text(server_config))
            path.chmod(0o600)
            exit_ = lab.spawn("server", lab.python("elsewhere", "run", "-c", str(path)),
                              name=self.exit.name)
            started.append(exit_)
            exit_.wait_for_output(LISTENING, START_TIMEOUT)
            data = self.prepare_relay(lab)
            relay = lab.spawn("domestic", lab.python(
                "elsewhere", "relay", self.exit_link(lab), "--check", CHECK,
                "--data-dir", str(data), "--idle-timeout", str(IDLE_TIMEOUT)),
                name=f"{self.name}-relay")
            started.append(relay)
            relay.wait_for_output(EXIT_OK, START_TIMEOUT)
            link = printed_link(relay.output(), PHONE)
            client = lab.spawn("client", lab.python(
                "elsewhere", "client", link, "--listen", "127.0.0.1",
                "--port", str(self.socks_port), "--no-status"), name=f"{self.name}-client")
            started.append(client)
            client.wait_for_output(CLIENT_READY, START_TIMEOUT)
            yield Route(proxy=f"socks5h://127.0.0.1:{self.socks_port}",
                        server=Destination(plan.DOMESTIC_HOST, self.relay_port))
        finally:
            for process in reversed(started):
                lab.forget(process)


_KEY_LINE = re.compile(r"^key (\S+) \(")


def printed_link(output: str, name: str) -> str:
    """The share link printed under `key NAME (…):` in a server's or relay's output."""
    lines = output.splitlines()
    for index, line in enumerate(lines[:-1]):
        match = _KEY_LINE.match(line)
        if match and match.group(1) == name:
            return lines[index + 1].strip()
    raise LabError(f"no key {name!r} in the output:\n{output[-800:]}")


def relay_transports() -> list[ElsewhereRelay]:
    """The relay rows, in the order the matrix shows them."""
    return [ElsewhereRelay("ss2022"), ElsewhereRelay("vless-ws")]
