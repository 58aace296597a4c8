"""The store in one SQLite file (DESIGN.md §2.6, §4 "No data lost"): WAL journal with
synchronous=FULL so every committed key change and usage batch survives a crash, schema versions
in `PRAGMA user_version`, the file private to its owner (0600 in a 0700 directory)."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from elsewhere.errors import ConfigError
from elsewhere.store.base import (
    KeyRecord,
    check_limit,
    check_name,
    check_protocol,
    check_secret,
    check_usage,
    new_key_id,
)

log = logging.getLogger(__name__)

FILE_MODE = 0o600
DIR_MODE = 0o700
# How long a write waits for another process (the CLI while the server runs) to commit.
BUSY_TIMEOUT = 5.0

_KEY_COLUMNS = (
    "id, name, protocol, method, secret, created, revoked, data_limit, bytes_up, bytes_down"
)


def _schema_1(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE keys (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            protocol TEXT NOT NULL CHECK (protocol IN ('ss', 'ss2022', 'trojan', 'vless')),
            method TEXT NOT NULL,
            secret TEXT NOT NULL,
            created REAL NOT NULL,
            revoked REAL,
            data_limit INTEGER CHECK (data_limit IS NULL OR data_limit >= 0),
            bytes_up INTEGER NOT NULL DEFAULT 0,
            bytes_down INTEGER NOT NULL DEFAULT 0
        )"""
    )
    # Names are unique among active keys only, and the database enforces it so that two
    # processes adding the same name at once cannot both win.
    db.execute("CREATE UNIQUE INDEX keys_active_name ON keys (name) WHERE revoked IS NULL")
    db.execute("CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute(
        "CREATE TABLE generation (id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER NOT NULL)"
    )
    db.execute("INSERT INTO generation (id, value) VALUES (1, 0)")


def _schema_2(db: sqlite3.Connection) -> None:
    """Protocols are whatever elsewhere.protocols registers, no longer four names fixed in the
    schema: the keys table is rebuilt without that CHECK (SQLite cannot drop one in place)."""
    db.execute(
        """CREATE TABLE keys_2 (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            protocol TEXT NOT NULL CHECK (protocol <> ''),
            method TEXT NOT NULL,
            secret TEXT NOT NULL,
            created REAL NOT NULL,
            revoked REAL,
            data_limit INTEGER CHECK (data_limit IS NULL OR data_limit >= 0),
            bytes_up INTEGER NOT NULL DEFAULT 0,
            bytes_down INTEGER NOT NULL DEFAULT 0
        )"""
    )
    db.execute(f"INSERT INTO keys_2 ({_KEY_COLUMNS}) SELECT {_KEY_COLUMNS} FROM keys")
    db.execute("DROP TABLE keys")
    db.execute("ALTER TABLE keys_2 RENAME TO keys")
    db.execute("CREATE UNIQUE INDEX keys_active_name ON keys (name) WHERE revoked IS NULL")


# MIGRATIONS[n] takes the schema from version n to n + 1; append, never edit a shipped one.
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_schema_1, _schema_2)
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(db: sqlite3.Connection, where: str = "the store") -> int:
    """Bring the schema up to SCHEMA_VERSION, one transaction per step, and return the version
    found. Safe when two processes open a fresh file at once: the version is re-read under the
    write lock."""
    found = db.execute("PRAGMA user_version").fetchone()[0]
    if found > SCHEMA_VERSION:
        raise ConfigError(
            f"{where} has schema version {found} but this elsewhere knows only "
            f"{SCHEMA_VERSION}; upgrade elsewhere"
        )
    while True:
        db.execute("BEGIN IMMEDIATE")
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version >= SCHEMA_VERSION:
                db.execute("COMMIT")
                return int(found)
            MIGRATIONS[version](db)
            # user_version lives in the file header and commits with the step it records.
            db.execute(f"PRAGMA user_version = {version + 1:d}")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise


def _record(row: tuple[Any, ...]) -> KeyRecord:
    return KeyRecord(
        id=row[0],
        name=row[1],
        protocol=check_protocol(row[2]),
        method=row[3],
        secret=row[4],
        created=row[5],
        revoked=row[6],
        data_limit=row[7],
        bytes_up=row[8],
        bytes_down=row[9],
    )


def _create_private_file(path: Path) -> None:
    """Create the file 0600 before SQLite opens it, so it is never readable by others, not even
    for a moment under a loose umask. SQLite gives its -wal and -shm files the same mode."""
    path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            log.warning("store %s was readable by others (mode %o); making it 0600", path, mode)
            os.chmod(path, FILE_MODE)
    else:
        os.close(fd)


class SqliteStore:
    """The Store of one server, in one file. One connection guarded by a lock: the engine calls
    it from a thread executor, the CLI from its main thread; other processes share the file
    through SQLite's own locking."""

    def __init__(self, path: str | os.PathLike[str], clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        try:
            _create_private_file(self.path)
        except OSError as exc:
            raise ConfigError(f"cannot create the store {self.path}: {exc.strerror}") from exc
        try:
            db = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open the store {self.path}: {exc}") from exc
        try:
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise ConfigError(
                    f"the store {self.path} cannot use WAL journaling (got {mode}); "
                    "put it on a local file system"
                )
            # FULL: the WAL is synced at every commit, so a batch acknowledged as flushed is on
            # disk (NORMAL would keep WAL durability only up to the last checkpoint).
            db.execute("PRAGMA synchronous = FULL")
            migrate(db, f"the store {self.path}")
        except sqlite3.OperationalError as exc:
            db.close()
            raise ConfigError(f"cannot open the store {self.path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            db.close()
            raise ConfigError(
                f"{self.path} is not an elsewhere store ({exc}); move it away or pick another path"
            ) from exc
        except BaseException:
            db.close()
            raise
        self._db = db

    # context manager

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # Store

    def add_key(
        self,
        name: str,
        protocol: str,
        method: str,
        secret: str,
        data_limit: int | None = None,
    ) -> KeyRecord:
        name = check_name(name)
        checked_protocol = check_protocol(protocol)
        secret = check_secret(secret)
        data_limit = check_limit(data_limit)
        if not isinstance(method, str):
            raise ConfigError(f"a cipher method is text, not {method!r}")
        with self._write() as db:
            if db.execute(
                "SELECT 1 FROM keys WHERE name = ? AND revoked IS NULL", (name,)
            ).fetchone():
                raise ConfigError(
                    f"a key named {name!r} already exists; pick another name or "
                    "revoke that key first"
                )
            key_id = new_key_id()
            while db.execute("SELECT 1 FROM keys WHERE id = ?", (key_id,)).fetchone():
                key_id = new_key_id()
            record = KeyRecord(
                id=key_id,
                name=name,
                protocol=checked_protocol,
                method=method,
                secret=secret,
                created=self._clock(),
                revoked=None,
                data_limit=data_limit,
                bytes_up=0,
                bytes_down=0,
            )
            db.execute(
                f"INSERT INTO keys ({_KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.id,
                    record.name,
                    record.protocol,
                    record.method,
                    record.secret,
                    record.created,
                    record.revoked,
                    record.data_limit,
                    0,
                    0,
                ),
            )
            self._bump(db)
        return record

    def get_key(self, id_or_name: str) -> KeyRecord:
        with self._lock:
            return _record(self._find(self._db, id_or_name))

    def list_keys(self, include_revoked: bool = False) -> list[KeyRecord]:
        where = "" if include_revoked else "WHERE revoked IS NULL"
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_KEY_COLUMNS} FROM keys {where} ORDER BY created, id"
            ).fetchall()
        return [_record(row) for row in rows]

    def revoke_key(self, id_or_name: str) -> KeyRecord:
        with self._write() as db:
            row = self._find(db, id_or_name)
            if row[6] is not None:
                raise ConfigError(f"key {row[1]!r} ({row[0]}) is already revoked")
            db.execute("UPDATE keys SET revoked = ? WHERE id = ?", (self._clock(), row[0]))
            self._bump(db)
            return _record(self._find(db, row[0]))

    def set_limit(self, id_or_name: str, data_limit: int | None) -> KeyRecord:
        data_limit = check_limit(data_limit)
        with self._write() as db:
            row = self._find(db, id_or_name)
            if row[6] is not None:
                raise ConfigError(
                    f"key {row[1]!r} ({row[0]}) is revoked; its limit no longer matters"
                )
            db.execute("UPDATE keys SET data_limit = ? WHERE id = ?", (data_limit, row[0]))
            self._bump(db)
            return _record(self._find(db, row[0]))

    def add_usage(self, batch: Mapping[str, tuple[int, int]]) -> None:
        rows = check_usage(batch)
        if not rows:
            return
        with self._write() as db:
            cursor = db.executemany(
                "UPDATE keys SET bytes_up = bytes_up + ?, bytes_down = bytes_down + ? WHERE id = ?",
                rows,
            )
            if cursor.rowcount != len(rows):
                known = {r[0] for r in db.execute("SELECT id FROM keys")}
                unknown = sorted(key_id for _, _, key_id in rows if key_id not in known)
                log.warning("dropped usage of unknown key ids %s", ", ".join(unknown))

    def usage(self, id_or_name: str) -> tuple[int, int]:
        with self._lock:
            row = self._find(self._db, id_or_name)
        return row[8], row[9]

    def generation(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT value FROM generation").fetchone()[0])

    def get_setting(self, name: str, default: str | None = None) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
        return default if row is None else str(row[0])

    def set_setting(self, name: str, value: str | None) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigError("a setting needs a non-empty name")
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"setting {name!r} takes text, not {value!r}")
        with self._write() as db:
            if value is None:
                db.execute("DELETE FROM settings WHERE name = ?", (name,))
            else:
                db.execute(
                    "INSERT INTO settings (name, value) VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    (name, value),
                )

    def settings(self) -> dict[str, str]:
        with self._lock:
            return dict(self._db.execute("SELECT name, value FROM settings ORDER BY name"))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # private

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction. IMMEDIATE takes the write lock up front, so the checks made
        inside it still hold at COMMIT even with another process writing the same file."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                # A failed COMMIT (disk full, I/O error) may leave the transaction open; close it
                # so the next write does not fail on "transaction within a transaction".
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    @staticmethod
    def _bump(db: sqlite3.Connection) -> None:
        db.execute("UPDATE generation SET value = value + 1 WHERE id = 1")

    @staticmethod
    def _find(db: sqlite3.Connection, id_or_name: str) -> tuple[Any, ...]:
        """An id finds any key, revoked or not; a name finds the active key of that name."""
        row = db.execute(f"SELECT {_KEY_COLUMNS} FROM keys WHERE id = ?", (id_or_name,)).fetchone()
        if row is None:
            row = db.execute(
                f"SELECT {_KEY_COLUMNS} FROM keys WHERE name = ? AND revoked IS NULL",
                (id_or_name.strip() if isinstance(id_or_name, str) else id_or_name,),
            ).fetchone()
        if row is None:
            raise ConfigError(
                f"no key has the id or name {id_or_name!r}; list the keys to see them"
            )
        return tuple(row)
