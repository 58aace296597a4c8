"""The SQLite store: keys, limits, usage, settings, schema versions, file permissions and the
crash durability DESIGN.md §4 asks for ("usage counted is usage kept across a crash")."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from elsewhere.errors import ConfigError
from elsewhere.store.base import KeyRecord, Store
from elsewhere.store.sqlite import SCHEMA_VERSION, SqliteStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "elsewhere.db"


@pytest.fixture
def store(path: Path) -> Iterator[SqliteStore]:
    with SqliteStore(path, clock=Clock()) as s:
        yield s


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(exc.value)
    assert "\n" not in message and message
    return message


# keys


def test_a_new_key_is_found_by_id_and_by_name(store: SqliteStore) -> None:
    key = store.add_key("alice", "ss2022", "2022-blake3-aes-256-gcm", "c2VjcmV0", data_limit=10)
    assert len(key.id) == 8 and int(key.id, 16) >= 0
    assert key.name == "alice" and key.protocol == "ss2022"
    assert key.method == "2022-blake3-aes-256-gcm" and key.secret == "c2VjcmV0"
    assert key.revoked is None and key.active
    assert key.data_limit == 10 and (key.bytes_up, key.bytes_down) == (0, 0)
    assert store.get_key(key.id) == key
    assert store.get_key("alice") == key


def test_key_ids_are_unique(store: SqliteStore) -> None:
    ids = {store.add_key(f"user{i}", "trojan", "", f"pw{i}").id for i in range(200)}
    assert len(ids) == 200


def test_the_secret_stays_out_of_a_printed_record(store: SqliteStore) -> None:
    key = store.add_key("alice", "ss", "chacha20-ietf-poly1305", "hunter2-very-secret")
    assert "hunter2-very-secret" not in repr(key)


def test_keys_are_listed_in_the_order_they_were_made(store: SqliteStore) -> None:
    names = ["carol", "alice", "bob"]
    for name in names:
        store.add_key(name, "vless", "", name + "-uuid")
    assert [k.name for k in store.list_keys()] == names


def test_a_revoked_key_leaves_the_list_but_keeps_its_record(store: SqliteStore) -> None:
    alice = store.add_key("alice", "ss", "aes-128-gcm", "a")
    bob = store.add_key("bob", "ss", "aes-128-gcm", "b")
    revoked = store.revoke_key("alice")
    assert revoked.id == alice.id and revoked.revoked is not None and not revoked.active
    assert [k.id for k in store.list_keys()] == [bob.id]
    assert [k.id for k in store.list_keys(include_revoked=True)] == [alice.id, bob.id]
    assert store.get_key(alice.id) == revoked
    with pytest.raises(ConfigError):
        store.get_key("alice")


def test_revoking_twice_says_so(store: SqliteStore) -> None:
    key = store.add_key("alice", "ss", "aes-128-gcm", "a")
    store.revoke_key(key.id)
    with pytest.raises(ConfigError) as exc:
        store.revoke_key(key.id)
    assert "already revoked" in one_line(exc)


def test_a_name_is_unique_among_active_keys_only(store: SqliteStore) -> None:
    first = store.add_key("alice", "ss", "aes-128-gcm", "a")
    with pytest.raises(ConfigError) as exc:
        store.add_key("alice", "trojan", "", "b")
    assert "alice" in one_line(exc) and "already exists" in one_line(exc)
    store.revoke_key("alice")
    second = store.add_key("alice", "trojan", "", "b")
    assert second.id != first.id
    assert store.get_key("alice") == second


@pytest.mark.parametrize(
    ("name", "protocol", "limit", "what"),
    [
        ("", "ss", None, "empty"),
        ("   ", "ss", None, "empty"),
        ("a" * 65, "ss", None, "too long"),
        ("bad\nname", "ss", None, "control"),
        ("deadbeef", "ss", None, "looks like a key id"),
        ("alice", "Wire Guard", None, "not a protocol name"),
        ("alice", "ss", -1, "negative"),
        ("alice", "ss", 1.5, "whole number"),
    ],
)
def test_a_persons_mistake_is_one_clear_line(
    store: SqliteStore, name: str, protocol: str, limit: int | None, what: str
) -> None:
    with pytest.raises(ConfigError) as exc:
        store.add_key(name, protocol, "aes-128-gcm", "secret", data_limit=limit)
    assert what in one_line(exc)
    assert store.list_keys(include_revoked=True) == []


@pytest.mark.parametrize("call", ["get_key", "revoke_key", "usage"])
def test_an_unknown_key_is_one_clear_line(store: SqliteStore, call: str) -> None:
    with pytest.raises(ConfigError) as exc:
        getattr(store, call)("nobody")
    assert "nobody" in one_line(exc)


def test_surrounding_blanks_are_not_part_of_a_name(store: SqliteStore) -> None:
    key = store.add_key("  alice ", "ss", "aes-128-gcm", "a")
    assert key.name == "alice"
    assert store.get_key(" alice") == key


# limits


def test_a_limit_is_set_changed_and_removed(store: SqliteStore) -> None:
    key = store.add_key("alice", "ss", "aes-128-gcm", "a")
    assert store.set_limit("alice", 1000).data_limit == 1000
    assert store.get_key(key.id).data_limit == 1000
    assert store.set_limit(key.id, None).data_limit is None
    assert store.get_key(key.id).data_limit is None


def test_a_negative_limit_is_refused_and_the_old_one_kept(store: SqliteStore) -> None:
    store.add_key("alice", "ss", "aes-128-gcm", "a", data_limit=5)
    with pytest.raises(ConfigError) as exc:
        store.set_limit("alice", -5)
    assert "negative" in one_line(exc)
    assert store.get_key("alice").data_limit == 5


def test_a_key_is_over_its_limit_once_it_used_all_of_it(store: SqliteStore) -> None:
    key = store.add_key("alice", "ss", "aes-128-gcm", "a", data_limit=100)
    store.add_usage({key.id: (40, 59)})
    assert not store.get_key(key.id).over_limit
    store.add_usage({key.id: (0, 1)})
    assert store.get_key(key.id).over_limit
    assert store.add_key("zero", "ss", "aes-128-gcm", "z", data_limit=0).over_limit
    assert not store.add_key("free", "ss", "aes-128-gcm", "f").over_limit


def test_the_limit_of_a_revoked_key_cannot_be_set(store: SqliteStore) -> None:
    key = store.add_key("alice", "ss", "aes-128-gcm", "a")
    store.revoke_key(key.id)
    with pytest.raises(ConfigError) as exc:
        store.set_limit(key.id, 10)
    assert "revoked" in one_line(exc)


# usage


def test_usage_adds_up_per_key_and_direction(store: SqliteStore) -> None:
    alice = store.add_key("alice", "ss", "aes-128-gcm", "a")
    bob = store.add_key("bob", "ss", "aes-128-gcm", "b")
    store.add_usage({alice.id: (10, 20), bob.id: (1, 2)})
    store.add_usage({alice.id: (5, 0)})
    assert store.usage(alice.id) == (15, 20)
    assert store.usage("bob") == (1, 2)
    assert store.get_key("alice").bytes_total == 35


def test_usage_of_a_revoked_key_is_still_kept(store: SqliteStore) -> None:
    key = store.add_key("alice", "ss", "aes-128-gcm", "a")
    store.revoke_key(key.id)
    store.add_usage({key.id: (7, 8)})
    assert store.usage(key.id) == (7, 8)


def test_usage_of_an_unknown_key_is_dropped_and_the_rest_kept(store: SqliteStore) -> None:
    key = store.add_key("alice", "ss", "aes-128-gcm", "a")
    store.add_usage({"00000000": (1, 1), key.id: (3, 4)})
    assert store.usage(key.id) == (3, 4)


def test_a_usage_batch_is_written_all_or_nothing(store: SqliteStore, path: Path) -> None:
    alice = store.add_key("alice", "ss", "aes-128-gcm", "a")
    bob = store.add_key("bob", "ss", "aes-128-gcm", "b")
    # Make the second row of the batch fail inside the transaction, after the first succeeded.
    other = sqlite3.connect(path)
    other.execute(
        f"CREATE TRIGGER fail_bob BEFORE UPDATE OF bytes_up ON keys WHEN NEW.id = '{bob.id}' "
        "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
    )
    other.commit()
    other.close()
    with pytest.raises(sqlite3.Error):
        store.add_usage({alice.id: (100, 100), bob.id: (1, 1)})
    assert store.usage(alice.id) == (0, 0)
    store.add_usage({alice.id: (1, 2)})  # the failed transaction left nothing open behind it
    assert store.usage(alice.id) == (1, 2)


def test_negative_usage_is_a_bug_and_writes_nothing(store: SqliteStore) -> None:
    key = store.add_key("alice", "ss", "aes-128-gcm", "a")
    with pytest.raises(ValueError):
        store.add_usage({key.id: (5, -1)})
    assert store.usage(key.id) == (0, 0)


# generation: how a running server notices `elsewhere keys revoke` from another process


def test_every_key_change_moves_the_generation_and_nothing_else_does(store: SqliteStore) -> None:
    seen = [store.generation()]
    key = store.add_key("alice", "ss", "aes-128-gcm", "a")
    seen.append(store.generation())
    store.set_limit(key.id, 10)
    seen.append(store.generation())
    store.revoke_key(key.id)
    seen.append(store.generation())
    assert seen == sorted(set(seen)) and len(seen) == 4
    store.add_usage({key.id: (1, 1)})
    store.set_setting("port", "443")
    store.get_key(key.id)
    assert store.generation() == seen[-1]


def test_failed_changes_leave_the_generation_alone(store: SqliteStore) -> None:
    store.add_key("alice", "ss", "aes-128-gcm", "a")
    before = store.generation()
    for bad in (
        lambda: store.add_key("alice", "ss", "aes-128-gcm", "b"),
        lambda: store.set_limit("alice", -1),
        lambda: store.revoke_key("nobody"),
    ):
        with pytest.raises(ConfigError):
            bad()
    assert store.generation() == before


def test_a_revocation_by_another_process_is_seen_by_the_server(path: Path) -> None:
    with SqliteStore(path) as server, SqliteStore(path) as cli:
        key = server.add_key("alice", "ss", "aes-128-gcm", "a")
        polled = server.generation()
        assert cli.generation() == polled
        cli.revoke_key("alice")
        assert server.generation() != polled
        assert server.list_keys() == []
        assert server.get_key(key.id).revoked is not None


def test_two_processes_cannot_both_take_a_name(path: Path) -> None:
    with SqliteStore(path) as one, SqliteStore(path) as two:
        one.add_key("alice", "ss", "aes-128-gcm", "a")
        with pytest.raises(ConfigError):
            two.add_key("alice", "ss", "aes-128-gcm", "b")


def test_the_store_is_usable_from_an_executor_thread(store: SqliteStore) -> None:
    async def main() -> KeyRecord:
        return await asyncio.to_thread(store.add_key, "alice", "ss", "aes-128-gcm", "a")

    key = asyncio.run(main())
    assert store.get_key("alice") == key


# settings


def test_settings_are_stored_replaced_and_removed(store: SqliteStore, path: Path) -> None:
    assert store.get_setting("port") is None
    assert store.get_setting("port", "8388") == "8388"
    store.set_setting("port", "443")
    store.set_setting("host", "vpn.example")
    store.set_setting("port", "8443")
    assert store.settings() == {"host": "vpn.example", "port": "8443"}
    store.set_setting("host", None)
    store.close()
    with SqliteStore(path) as reopened:
        assert reopened.settings() == {"port": "8443"}


# the file: schema, permissions, durability


def test_a_fresh_file_gets_the_current_schema(path: Path) -> None:
    with SqliteStore(path):
        pass
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()


def test_an_empty_file_is_migrated_and_a_reopen_keeps_the_data(path: Path) -> None:
    path.parent.mkdir(mode=0o700)
    path.touch(mode=0o600)
    with SqliteStore(path) as first:
        key = first.add_key("alice", "ss", "aes-128-gcm", "a")
        first.add_usage({key.id: (1, 2)})
    with SqliteStore(path) as second:
        assert second.get_key("alice").id == key.id
        assert second.usage(key.id) == (1, 2)


def test_a_version_1_file_keeps_its_keys_and_takes_any_registered_protocol(path: Path) -> None:
    """Version 1 fixed the four protocols in a CHECK; version 2 leaves them to the registry."""
    from elsewhere.store.sqlite import MIGRATIONS

    path.parent.mkdir(mode=0o700)
    raw = sqlite3.connect(path, isolation_level=None)
    MIGRATIONS[0](raw)
    raw.execute("PRAGMA user_version = 1")
    raw.execute(
        "INSERT INTO keys (id, name, protocol, method, secret, created, data_limit, bytes_up) "
        "VALUES ('0123abcd', 'alice', 'vless', 'ws', 'uuid', 1.0, 50, 7)"
    )
    raw.close()
    with SqliteStore(path) as store:
        alice = store.get_key("alice")
        assert (alice.protocol, alice.method, alice.data_limit, alice.bytes_up) == (
            "vless", "ws", 50, 7
        )
        assert store.add_key("bob", "myproto", "", "s").protocol == "myproto"
        with pytest.raises(ConfigError):
            store.add_key("alice", "ss", "aes-128-gcm", "a")  # still one active alice
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    raw.close()


def test_a_file_from_a_newer_elsewhere_is_refused(path: Path) -> None:
    with SqliteStore(path):
        pass
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.commit()
    raw.close()
    with pytest.raises(ConfigError) as exc:
        SqliteStore(path)
    assert "upgrade elsewhere" in one_line(exc)


def test_a_file_that_is_not_a_database_is_refused(path: Path) -> None:
    path.parent.mkdir()
    path.write_bytes(b"this is my shopping list, not a database" * 100)
    with pytest.raises(ConfigError) as exc:
        SqliteStore(path)
    assert "not an elsewhere store" in one_line(exc)


def test_the_store_is_private_to_its_owner(path: Path) -> None:
    old = os.umask(0o022)
    try:
        with SqliteStore(path) as s:
            s.add_key("alice", "ss", "aes-128-gcm", "a")
            for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
            assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    finally:
        os.umask(old)


def test_a_store_others_could_read_is_made_private(path: Path) -> None:
    path.parent.mkdir()
    path.touch()
    path.chmod(0o644)
    with SqliteStore(path):
        pass
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from elsewhere.store.sqlite import SqliteStore
    from elsewhere.store.usage import UsageFlusher, UsageMeter

    store = SqliteStore(sys.argv[1])
    key = store.add_key("alice", "ss", "aes-256-gcm", "secret")
    meter = UsageMeter()

    async def main() -> None:
        flusher = UsageFlusher(meter, store, interval=3600)
        meter.add(key.id, 1000, 2000)
        meter.add(key.id, 234, 0)
        await flusher.flush()
        print(key.id, flush=True)
        await asyncio.Event().wait()  # keep the store open until killed

    asyncio.run(main())
    """
)


def test_usage_acknowledged_as_flushed_survives_a_kill(path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        ready, _, _ = select.select([child.stdout], [], [], 30)
        assert ready, "the child never reported its flush"
        assert child.stdout is not None
        key_id = child.stdout.readline().strip()
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
        if child.stdout is not None:
            child.stdout.close()
    assert Path(f"{path}-wal").exists()  # nothing was checkpointed: recovery reads the WAL
    with SqliteStore(path) as reopened:
        assert reopened.usage(key_id) == (1234, 2000)


def test_a_sqlite_store_is_a_store(store: SqliteStore) -> None:
    assert isinstance(store, Store)
    typed: Store = store
    assert typed.list_keys() == []
