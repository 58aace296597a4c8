"""One `elsewhere vpn` per network namespace: a second one would replace the first one's rules
under it. The running one holds an flock on a file named after the namespace (its inode), so
the lock goes with the process however it ends, kill -9 included."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator

from elsewhere.device.errors import DeviceError

LOCK_DIR = "/run/elsewhere"


@contextlib.contextmanager
def single_instance() -> Iterator[None]:
    namespace = os.stat("/proc/self/ns/net").st_ino
    path = os.path.join(LOCK_DIR, f"vpn-net{namespace}.lock")
    try:
        os.makedirs(LOCK_DIR, mode=0o755, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise DeviceError(f"cannot create {path}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise DeviceError(f"elsewhere vpn is already running here (pid {holder}); stop it "
                              "first, or elsewhere vpn --off") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
