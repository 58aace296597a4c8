"""`elsewhere vpn --netns NAME`: the whole process moves into one network namespace before it
starts anything, so every rule, route and socket it makes lives there (how the lab and tests
confine it). Python 3.11 has no os.setns, hence ctypes."""

from __future__ import annotations

import ctypes
import os
import threading

from elsewhere.device.errors import DeviceError

CLONE_NEWNET = 0x40000000  # <sched.h>
NETNS_RUN_DIR = "/run/netns"  # where `ip netns add` pins named namespaces


def enter(name: str) -> None:
    if threading.active_count() > 1:
        raise RuntimeError("enter the namespace before any thread starts")
    path = os.path.join(NETNS_RUN_DIR, name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise DeviceError(f"--netns {name}: no such network namespace ({path})") from None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise DeviceError(f"--netns {name}: cannot enter it: {os.strerror(err)}")
    finally:
        os.close(fd)


def resolv_conf(namespace: str | None) -> str:
    """The resolver file programs in `namespace` read (`ip netns exec` bind-mounts
    /etc/netns/NAME/resolv.conf over /etc/resolv.conf)."""
    if namespace is not None:
        path = os.path.join("/etc/netns", namespace, "resolv.conf")
        if os.path.exists(path):
            return path
    return "/etc/resolv.conf"
