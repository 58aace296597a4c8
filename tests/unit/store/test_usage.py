"""Usage accounting: the meter the relay counts into, and the flusher that writes it to the store
in batches without ever dropping a count (DESIGN.md §4 "No data lost")."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from elsewhere.store.base import KeyRecord
from elsewhere.store.sqlite import SqliteStore
from elsewhere.store.usage import UsageFlusher, UsageMeter


class FlakyStore:
    """A real store whose usage writes can be made to fail or to wait, and are counted."""

    def __init__(self, inner: SqliteStore) -> None:
        self.inner = inner
        self.fail = False
        self.writes: list[dict[str, tuple[int, int]]] = []
        self.entered = threading.Event()  # a write has started
        self.release = threading.Event()  # let a started write go on
        self.release.set()
        self.written = threading.Event()  # a write has committed
        self.failed = threading.Event()  # a write has failed

    def add_usage(self, batch: Mapping[str, tuple[int, int]]) -> None:
        self.entered.set()
        if not self.release.wait(10):
            raise TimeoutError("the test never released the write")
        if self.fail:
            self.failed.set()
            raise OSError("disk full")
        self.inner.add_usage(batch)
        self.writes.append(dict(batch))
        self.written.set()

    def generation(self) -> int:
        return self.inner.generation()

    def list_keys(self, include_revoked: bool = False) -> list[KeyRecord]:
        return self.inner.list_keys(include_revoked)


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore(tmp_path / "elsewhere.db") as s:
        yield s


@pytest.fixture
def store(sqlite: SqliteStore) -> FlakyStore:
    return FlakyStore(sqlite)


def flusher_for(meter: UsageMeter, store: FlakyStore, interval: float = 3600) -> UsageFlusher:
    return UsageFlusher(meter, store, interval=interval)  # type: ignore[arg-type]


# the meter


def test_the_meter_adds_up_per_key_and_direction() -> None:
    meter = UsageMeter()
    meter.add("k1", 10, 1)
    meter.add("k1", 5, 0)
    meter.add("k2", 0, 7)
    assert meter.pending("k1") == 16 and meter.pending("k2") == 7 and meter.pending("k3") == 0
    assert meter.drain() == {"k1": (15, 1), "k2": (0, 7)}


def test_draining_empties_the_meter_and_counting_starts_afresh() -> None:
    meter = UsageMeter()
    meter.add("k1", 1, 2)
    first = meter.drain()
    meter.add("k1", 3, 4)
    assert first == {"k1": (1, 2)}
    assert meter.drain() == {"k1": (3, 4)}
    assert meter.drain() == {} and len(meter) == 0


def test_a_batch_merged_back_adds_to_what_was_counted_since() -> None:
    meter = UsageMeter()
    meter.add("k1", 1, 2)
    batch = meter.drain()
    meter.add("k1", 10, 20)
    meter.add("k2", 5, 5)
    meter.merge(batch)
    assert meter.drain() == {"k1": (11, 22), "k2": (5, 5)}


# the flusher


def test_a_flush_writes_the_whole_meter_in_one_batch(store: FlakyStore) -> None:
    alice = store.inner.add_key("alice", "ss", "aes-128-gcm", "a")
    bob = store.inner.add_key("bob", "ss", "aes-128-gcm", "b")
    meter = UsageMeter()

    async def main() -> None:
        flusher = flusher_for(meter, store)
        meter.add(alice.id, 100, 200)
        meter.add(bob.id, 1, 2)
        meter.add(alice.id, 1, 0)
        await flusher.flush()
        await flusher.flush()  # nothing new: no write at all

    asyncio.run(main())
    assert store.writes == [{alice.id: (101, 200), bob.id: (1, 2)}]
    assert store.inner.usage(alice.id) == (101, 200) and len(meter) == 0


def test_a_failed_write_keeps_every_count_for_the_next_one(store: FlakyStore) -> None:
    key = store.inner.add_key("alice", "ss", "aes-128-gcm", "a")
    meter = UsageMeter()

    async def main() -> None:
        flusher = flusher_for(meter, store)
        meter.add(key.id, 100, 200)
        store.fail = True
        with pytest.raises(OSError, match="disk full"):
            await flusher.flush()
        assert meter.pending(key.id) == 300
        meter.add(key.id, 1, 2)
        store.fail = False
        await flusher.flush()

    asyncio.run(main())
    assert store.inner.usage(key.id) == (101, 202)
    assert store.writes == [{key.id: (101, 202)}]


def test_a_cancelled_flush_neither_loses_nor_doubles_its_batch(store: FlakyStore) -> None:
    key = store.inner.add_key("alice", "ss", "aes-128-gcm", "a")
    meter = UsageMeter()

    async def main() -> None:
        flusher = flusher_for(meter, store)
        meter.add(key.id, 100, 200)
        store.release.clear()
        first = asyncio.create_task(flusher.flush())
        assert await asyncio.to_thread(store.entered.wait, 10)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        meter.add(key.id, 1, 1)
        second = asyncio.create_task(flusher.flush())
        await asyncio.sleep(0)  # one turn of the loop: the second flush starts and waits
        assert meter.pending(key.id) == 2  # not drained while the orphaned write is unsettled
        store.release.set()  # the orphaned write now commits
        await second

    asyncio.run(main())
    assert store.inner.usage(key.id) == (101, 201)
    assert store.writes == [{key.id: (100, 200)}, {key.id: (1, 1)}]


def test_the_periodic_task_writes_without_being_asked(store: FlakyStore) -> None:
    key = store.inner.add_key("alice", "ss", "aes-128-gcm", "a")
    meter = UsageMeter()

    async def main() -> None:
        async with flusher_for(meter, store, interval=0.01):
            meter.add(key.id, 5, 6)
            assert await asyncio.to_thread(store.written.wait, 10)

    asyncio.run(main())
    assert store.inner.usage(key.id) == (5, 6)


def test_the_periodic_task_survives_a_failing_store(store: FlakyStore) -> None:
    key = store.inner.add_key("alice", "ss", "aes-128-gcm", "a")
    meter = UsageMeter()

    async def main() -> None:
        async with flusher_for(meter, store, interval=0.01):
            store.fail = True
            meter.add(key.id, 5, 6)
            assert await asyncio.to_thread(store.failed.wait, 10)
            meter.add(key.id, 1, 1)
            store.fail = False
            assert await asyncio.to_thread(store.written.wait, 10)

    asyncio.run(main())
    assert store.inner.usage(key.id) == (6, 7)


def test_closing_writes_what_is_left(store: FlakyStore) -> None:
    key = store.inner.add_key("alice", "ss", "aes-128-gcm", "a")
    meter = UsageMeter()

    async def main() -> None:
        async with flusher_for(meter, store):
            meter.add(key.id, 7, 8)
            assert store.writes == []

    asyncio.run(main())
    assert store.inner.usage(key.id) == (7, 8)


def test_closing_on_a_failing_store_says_so_and_keeps_the_counts(store: FlakyStore) -> None:
    key = store.inner.add_key("alice", "ss", "aes-128-gcm", "a")
    meter = UsageMeter()

    async def main() -> None:
        flusher = flusher_for(meter, store)
        await flusher.start()
        meter.add(key.id, 7, 8)
        store.fail = True
        with pytest.raises(OSError):
            await flusher.close()

    asyncio.run(main())
    assert meter.pending(key.id) == 15


# limits


def test_a_key_is_over_its_limit_counting_stored_and_pending_bytes(store: FlakyStore) -> None:
    limited = store.inner.add_key("alice", "ss", "aes-128-gcm", "a", data_limit=1000)
    free = store.inner.add_key("bob", "ss", "aes-128-gcm", "b")
    store.inner.add_usage({limited.id: (300, 300)})
    meter = UsageMeter()

    async def main() -> None:
        async with flusher_for(meter, store) as flusher:
            assert not flusher.over_limit(limited.id)
            meter.add(limited.id, 0, 399)
            assert not flusher.over_limit(limited.id)
            meter.add(limited.id, 1, 0)
            assert flusher.over_limit(limited.id)  # pending bytes count before any flush
            await flusher.flush()
            assert flusher.over_limit(limited.id)  # and still count once stored
            meter.add(free.id, 10**12, 10**12)
            assert not flusher.over_limit(free.id)
            assert not flusher.over_limit("unknown0")

    asyncio.run(main())


def test_bytes_being_written_still_count_against_the_limit(store: FlakyStore) -> None:
    key = store.inner.add_key("alice", "ss", "aes-128-gcm", "a", data_limit=100)
    meter = UsageMeter()

    async def main() -> None:
        flusher = flusher_for(meter, store)
        await flusher.refresh(force=True)
        meter.add(key.id, 100, 0)
        store.release.clear()
        flushing = asyncio.create_task(flusher.flush())
        assert await asyncio.to_thread(store.entered.wait, 10)
        assert meter.pending(key.id) == 0
        assert flusher.over_limit(key.id)
        store.release.set()
        await flushing
        assert flusher.over_limit(key.id)

    asyncio.run(main())


def test_a_limit_changed_by_another_process_is_picked_up(store: FlakyStore, tmp_path: Path) -> None:
    key = store.inner.add_key("alice", "ss", "aes-128-gcm", "a")
    store.inner.add_usage({key.id: (50, 50)})
    meter = UsageMeter()

    async def main() -> None:
        flusher = flusher_for(meter, store)
        await flusher.refresh()
        assert not flusher.over_limit(key.id)
        with SqliteStore(tmp_path / "elsewhere.db") as cli:
            cli.set_limit("alice", 100)
        await flusher.refresh()  # generation moved: limits re-read
        assert flusher.over_limit(key.id)

    asyncio.run(main())


def test_a_refresh_without_changes_reads_no_keys(store: FlakyStore) -> None:
    store.inner.add_key("alice", "ss", "aes-128-gcm", "a")
    reads: list[bool] = []
    list_keys = store.list_keys

    def counting(include_revoked: bool = False) -> list[KeyRecord]:
        reads.append(include_revoked)
        return list_keys(include_revoked)

    store.list_keys = counting  # type: ignore[method-assign]

    async def main() -> None:
        flusher = flusher_for(UsageMeter(), store)
        await flusher.refresh()
        await flusher.refresh()
        await flusher.flush()

    asyncio.run(main())
    assert len(reads) == 1
