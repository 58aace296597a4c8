"""Sockets inside a named network namespace, made from this process.

A thread may switch its own network namespace with setns(2) without touching the rest of the
process; a socket keeps the namespace it was created in. So a short-lived thread enters the
namespace, creates the socket and exits, and the caller uses the socket as usual (also from
asyncio). Python 3.11 has no os.setns, hence ctypes."""

from __future__ import annotations

import ctypes
import os
import socket
import threading

from elsewhere.lab.errors import LabError

CLONE_NEWNET = 0x40000000  # <sched.h>
NETNS_RUN_DIR = "/run/netns"  # where `ip netns add` pins named namespaces

_libc = ctypes.CDLL(None, use_errno=True)


def namespace_path(name: str) -> str:
    return os.path.join(NETNS_RUN_DIR, name)


def socket_in(
    namespace: str, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM, proto: int = 0
) -> socket.socket:
    """A new socket living in the network namespace `namespace`."""
    made: list[socket.socket] = []
    failed: list[BaseException] = []

    def enter_and_make() -> None:
        try:
            fd = os.open(namespace_path(namespace), os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, os.strerror(err))
            finally:
                os.close(fd)
            made.append(socket.socket(family, kind, proto))
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=enter_and_make, name=f"netns-{namespace}")
    thread.start()
    thread.join()
    if failed:
        raise LabError(f"cannot open a socket in namespace {namespace}: {failed[0]}") from failed[0]
    return made[0]
