"""The lab's `domestic` host, a machine in a data centre inside the country: users reach it
through the censor, whose allowlist and 16 KB freeze spare it, and it reaches the server abroad
over an uplink the censor never sees."""

from __future__ import annotations

import hashlib
import os
import socket

import pytest
from lab_doubles import READ_SIZE, CensorStarter, TcpDouble, echo

from elsewhere.lab import plan
from elsewhere.lab.sites import read_access_log
from elsewhere.lab.topology import Lab

pytestmark = pytest.mark.lab

PORT = 9301
BULK = os.urandom(1 << 20)  # far beyond freeze_16k's threshold


def send_bulk(conn: socket.socket) -> None:
    conn.sendall(BULK)
    conn.shutdown(socket.SHUT_WR)


def read_all(lab: Lab, role: plan.Role, address: str, port: int, timeout: float = 10.0) -> bytes:
    got = bytearray()
    with lab.connect(role, address, port, timeout=timeout) as sock:
        while chunk := sock.recv(READ_SIZE):
            got += chunk
    return bytes(got)


def test_the_domestic_host_is_on_the_allowlist_and_not_foreign_hosting() -> None:
    assert plan.in_networks(plan.DOMESTIC_HOST, plan.ALLOWLIST)
    assert not plan.in_networks(plan.DOMESTIC_HOST, plan.FOREIGN_HOSTING)
    assert not plan.in_networks(plan.DOMESTIC_UPLINK, plan.ALLOWLIST)  # only its public side is
    # the domestic sites keep their addresses beside the host's small link
    assert not any(plan.in_networks(s.address, (plan.DOMESTIC_HOST_NETWORK,)) for s in plan.SITES)


def test_the_client_reaches_the_domestic_host_through_the_censor_that_lets_it_pass(
    lab: Lab, censor: CensorStarter
) -> None:
    running = censor("allowlist", "freeze_16k")
    with TcpDouble(lab, PORT, send_bulk, role="domestic", address=plan.DOMESTIC_HOST), \
            TcpDouble(lab, PORT + 1, echo, role="domestic", address=plan.DOMESTIC_HOST):
        with lab.connect("client", plan.DOMESTIC_HOST, PORT + 1, timeout=5) as sock:
            sock.sendall(b"hello")  # the allowlist drops a flow at its first data packet
            assert sock.recv(READ_SIZE) == b"hello"
        got = read_all(lab, "client", plan.DOMESTIC_HOST, PORT)
    assert hashlib.sha256(got).digest() == hashlib.sha256(BULK).digest()
    seen = {(f["source"].rsplit(":", 1)[0], f["destination"]) for f in running.flows()}
    assert (plan.CLIENT, f"{plan.DOMESTIC_HOST}:{PORT}") in seen  # it did cross the censor
    assert not running.decisions()


def test_the_domestic_host_reaches_the_server_abroad_without_crossing_the_censor(
    lab: Lab, censor: CensorStarter
) -> None:
    running = censor("allowlist", "freeze_16k")
    with TcpDouble(lab, PORT, send_bulk):  # on plan.SERVER, in `server`
        got = read_all(lab, "domestic", plan.SERVER, PORT)
    assert hashlib.sha256(got).digest() == hashlib.sha256(BULK).digest()
    assert not [f for f in running.flows() if f["destination"].startswith(plan.SERVER + ":")]
    route = lab.run("domestic", ["ip", "route", "get", plan.SERVER]).stdout
    assert "dev to-internet" in route


def test_a_site_abroad_sees_the_domestic_hosts_uplink_address(lab: Lab) -> None:
    done = lab.run("domestic", ["curl", "-sS", "--cacert", str(lab.ca_cert), "-o", "/dev/null",
                                "-w", "%{http_code}", "https://instagram.test/"])
    assert done.stdout == "200"
    visits = [r for r in read_access_log(lab.workdir) if r["site"] == "instagram.test"]
    assert visits and visits[-1]["client"] == plan.DOMESTIC_UPLINK


def test_the_domestic_host_has_no_route_out_of_the_lab(lab: Lab) -> None:
    lookup = lab.run("domestic", ["ip", "route", "get", "192.0.2.1"], check=False)
    assert f"via {plan.INTERNET_FROM_DOMESTIC}" in lookup.stdout  # towards the lab's internet,
    beyond = lab.run("internet", ["ip", "route", "get", "192.0.2.1"], check=False)
    assert beyond.returncode != 0  # which has nowhere to send it
