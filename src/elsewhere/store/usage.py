"""Usage accounting between the data path and the store (DESIGN.md §2.6, §4 "No data lost"): the
relay adds bytes to an in-memory meter; a flusher writes them to the store in batches, one
transaction each, and never drops a count it could not write."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from types import TracebackType

from elsewhere.store.base import KeyRecord, Store

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 5.0


class UsageMeter:
    """Per-key byte counters for the data path. Only the event loop's thread touches it, so no
    locks: `add` is one dict lookup and two integer additions."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[str, list[int]] = {}

    def add(self, key_id: str, up: int, down: int) -> None:
        counts = self._counts.get(key_id)
        if counts is None:
            self._counts[key_id] = [up, down]
        else:
            counts[0] += up
            counts[1] += down

    def pending(self, key_id: str) -> int:
        """Bytes (up + down) of this key counted but not yet drained."""
        counts = self._counts.get(key_id)
        return 0 if counts is None else counts[0] + counts[1]

    def drain(self) -> dict[str, tuple[int, int]]:
        """Everything counted so far, as {key id: (up, down)}, leaving the meter empty. The dict
        is swapped in one step, so no `add` falls between the read and the reset."""
        counts, self._counts = self._counts, {}
        return {key_id: (c[0], c[1]) for key_id, c in counts.items()}

    def merge(self, batch: Mapping[str, tuple[int, int]]) -> None:
        """Put a drained batch back (its write failed), on top of what was counted since."""
        for key_id, (up, down) in batch.items():
            self.add(key_id, up, down)

    def __len__(self) -> int:
        return len(self._counts)


class UsageFlusher:
    """Drains a meter into a store every `interval` seconds and keeps each key's stored total
    and limit at hand for `over_limit`.

        async with UsageFlusher(meter, store) as flusher:
            ...  # serve; refuse a new session when flusher.over_limit(key_id)

    A failed write puts its batch back into the meter, to go with the next one; leaving the
    block flushes what is left (and raises if that last write fails)."""

    def __init__(self, meter: UsageMeter, store: Store, interval: float = FLUSH_INTERVAL):
        self._meter = meter
        self._store = store
        self._interval = interval
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._writing: asyncio.Task[None] | None = None
        # Per key: total (up + down) of the batch being written right now, so over_limit sees it
        # while it is neither in the meter nor in the store.
        self._inflight: dict[str, int] = {}
        self._stored: dict[str, int] = {}
        self._limits: dict[str, int] = {}
        self._generation: int | None = None

    # lifecycle

    async def __aenter__(self) -> UsageFlusher:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Load totals and limits, then flush periodically in a task this flusher owns."""
        if self._task is not None:
            raise RuntimeError("UsageFlusher already started")
        await self.refresh(force=True)
        self._task = asyncio.create_task(self._run(), name="usage-flusher")

    async def close(self) -> None:
        """Stop the periodic task and write what is still counted."""
        self._stop.set()
        if self._task is not None:
            await self._task
        await self.flush()

    # public

    def over_limit(self, key_id: str) -> bool:
        """Whether the key has used up its data limit, counting stored, in-flight and pending
        bytes; O(1), for the data path to call before it accepts a session."""
        limit = self._limits.get(key_id)
        if limit is None:
            return False
        used = (
            self._stored.get(key_id, 0)
            + self._inflight.get(key_id, 0)
            + self._meter.pending(key_id)
        )
        return used >= limit

    async def flush(self) -> None:
        """Write everything the meter holds in one transaction, then refresh totals. On a failed
        write the batch goes back into the meter and the store's error is raised."""
        async with self._lock:
            await self._wait_for_write()
            batch = self._meter.drain()
            if batch:
                self._inflight = {key_id: up + down for key_id, (up, down) in batch.items()}
                # The write runs in its own task, shielded: if our caller is cancelled while the
                # thread is mid-transaction, the outcome is still handled (kept or re-merged)
                # exactly once by _written, never guessed.
                write = asyncio.ensure_future(asyncio.to_thread(self._store.add_usage, batch))
                write.add_done_callback(lambda task: self._written(batch, task))
                self._writing = write
                await asyncio.shield(write)
            await self.refresh(force=bool(batch))

    async def refresh(self, force: bool = False) -> None:
        """Re-read stored totals and limits when keys changed (the generation moved) or when
        `force` says usage was just written. A failure keeps the old figures and is logged."""
        try:
            loaded = await asyncio.to_thread(self._load, force)
        except Exception as exc:
            log.warning("could not re-read key totals from the store: %s", exc)
            return
        if loaded is not None:
            self._generation, keys = loaded
            self._stored = {k.id: k.bytes_total for k in keys}
            self._limits = {k.id: k.data_limit for k in keys if k.data_limit is not None}

    # private

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._stop.wait(), self._interval)
                return
            except TimeoutError:
                pass
            try:
                await self.flush()
            except Exception as exc:
                log.warning("usage flush failed, the counts are kept for the next try: %s", exc)

    def _written(self, batch: Mapping[str, tuple[int, int]], task: asyncio.Future[None]) -> None:
        if task.cancelled() or task.exception() is not None:
            self._meter.merge(batch)
        else:
            for key_id, total in self._inflight.items():
                self._stored[key_id] = self._stored.get(key_id, 0) + total
        self._inflight = {}

    async def _wait_for_write(self) -> None:
        """Let a write orphaned by a cancelled flush finish before draining again, so batches
        reach the store in order and the in-flight figures stay right."""
        writing = self._writing
        if writing is not None and not writing.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(writing)

    def _load(self, force: bool) -> tuple[int, list[KeyRecord]] | None:
        generation = self._store.generation()
        if not force and generation == self._generation:
            return None
        return generation, self._store.list_keys()
