"""Bounded waiting: poll a condition until it holds or a deadline passes. The lab waits on ports,
log lines and files this way instead of sleeping for a guessed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from elsewhere.lab.errors import LabError

T = TypeVar("T")

POLL_INTERVAL = 0.02  # seconds between looks; short enough not to slow a test down


def wait_until(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """Call `check` until it returns something other than None/False; return that value.

    Raises LabError naming `what` when `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None and value is not False:
            return value
        if time.monotonic() >= deadline:
            raise LabError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(POLL_INTERVAL)
