"""The app database: one SQLite file, WAL mode, one serialised writer, many readers.

Readers use their own connections (one per thread), so in WAL mode they never wait on a
long write such as a library ingest. Writes go through ``write()``, one at a time, each a
transaction. The schema comes from ``app.schema.MIGRATIONS``.

One Enclave process owns a data folder at a time: ``open_store`` takes an exclusive lock
file next to the database and tells a second instance plainly that the folder is in use.
Enclave never overwrites a file it did not create: a damaged or foreign database is
refused with what to do, and left as it is.

An encrypted database (``enclave database encrypt``) has no SQLite header; the store then
takes its key from the keyring, or from the key file named by ``ENCLAVE_DB_KEY_FILE`` or
systemd's credential ``enclave-db-key`` (``app.db_key``, ``app.key_file``), and opens every
connection through SQLCipher (``app.sqlcipher``). Without the key it is refused like a foreign file.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout
from sqlite_utils import Database

from app import sqlcipher
from app.db_key import SERVICE, DatabaseKeyError, entry_name, key_location, load_key
from app.key_file import KEY_FILE_ENV, KeyFileError
from app.schema import MIGRATIONS
from inference.errors import EnclaveError


class StoreError(EnclaveError):
    """The database cannot be used: damaged, foreign, or in use by another Enclave."""


class AnotherInstanceError(StoreError):
    pass


def _connect(path: Path, readonly: bool = False, key: str | None = None) -> sqlite3.Connection:
    if key is not None:
        conn = sqlcipher.connect(path, key, readonly=readonly)
    elif readonly:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, check_same_thread=False)
    else:
        conn = sqlite3.connect(path, check_same_thread=False)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA busy_timeout = 10000")
    return conn


class Store:
    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        self._lock: FileLock | None = None
        self._key = _key_for(path)
        if not readonly:
            self._lock = take_instance_lock(path)
        try:
            self._writer = Database(_connect(path, readonly, self._key), execute_plugins=False)
            _refuse_foreign_schema(self._writer, path)  # before anything could write to it
            if not readonly:
                self._writer.execute("PRAGMA journal_mode = WAL")
                self._writer.execute("PRAGMA synchronous = NORMAL")
                MIGRATIONS.apply(self._writer)
        except sqlcipher.OPERATIONAL_ERRORS as exc:
            self.close()
            if "locked" in str(exc) or "busy" in str(exc):
                raise StoreError(f"The database {path} is locked by another program. Close it (or wait for it to "
                                 "finish) and try again.") from exc
            raise StoreError(_damaged(path, exc)) from exc
        except sqlcipher.DATABASE_ERRORS as exc:
            self.close()
            raise StoreError(_wrong_key(path) if self._key is not None else _damaged(path, exc)) from exc
        self._write_lock = threading.RLock()
        # by thread id, not threading.local: a Qt pool thread gets a new Python thread state (and
        # so new thread-locals) for every task, which would open a connection per task and never close it
        self._readers: dict[int, Database] = {}

    @property
    def encrypted(self) -> bool:
        return self._key is not None

    # Access -------------------------------------------------------------------------

    @contextmanager
    def write(self) -> Iterator[Database]:
        """The writer, inside a transaction; one writer at a time across threads."""
        if self.readonly:
            raise StoreError(f"{self.path} is open read-only.")
        with self._write_lock, self._writer.atomic():
            yield self._writer

    def read(self) -> Database:
        """This thread's reading connection: it sees the last committed state and never
        waits for a writer."""
        thread = threading.get_ident()
        db = self._readers.get(thread)
        if db is None:
            conn = _connect(self.path, readonly=True, key=self._key)
            db = self._readers[thread] = Database(conn, execute_plugins=False)
        return db

    def applied_migrations(self) -> list[str]:
        return [m.name for m in MIGRATIONS.applied(self.read())]

    def integrity_check(self) -> list[str]:
        """SQLite's own check (and SQLCipher's page authentication when encrypted): ['ok']
        when the file is sound."""
        db = self.read()
        found = [f"cipher: {row[0]}" for row in db.execute("PRAGMA cipher_integrity_check")] if self.encrypted else []
        try:
            found += [row[0] for row in db.execute("PRAGMA integrity_check") if row[0] != "ok"]
        except sqlcipher.READ_ERRORS as exc:  # SQLCipher refuses to read a page that fails authentication
            found.append(f"cannot be read: {exc or type(exc).__name__}")
        return found or ["ok"]

    def close(self) -> None:
        for reader in list(getattr(self, "_readers", {}).values()):
            reader.close()
        writer = getattr(self, "_writer", None)
        if writer is not None:
            writer.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _key_for(path: Path) -> str | None:
    """None for a plain (or new) database; the key file's or the keyring's key for an encrypted
    one. A file with neither a SQLite header nor a key is refused: it is encrypted elsewhere, or
    not a database at all, and either way not Enclave's to change."""
    if not sqlcipher.is_encrypted_file(path):
        return None
    try:
        key = load_key(path)
    except (DatabaseKeyError, KeyFileError) as exc:
        raise StoreError(f"The database {path} is encrypted (or is not a database); Enclave did not change it. "
                         f"{exc}") from exc
    if key is None:
        raise StoreError(_damaged(path, f"it is not a plain SQLite database, and the keyring holds no Enclave key "
                                        f"for it ('{SERVICE}' / '{entry_name(path)}'); if it was encrypted on this "
                                        "machine, unlock the keyring (or log in as the user who encrypted it); if "
                                        f"it was encrypted with a key file, set {KEY_FILE_ENV} to that file"))
    if not sqlcipher.available():
        raise StoreError(f"The database {path} is encrypted. {sqlcipher.INSTALL}")
    try:
        sqlcipher.key_literal(key)
    except EnclaveError as exc:
        raise StoreError(f"The database {path} cannot be opened: {exc} Enclave did not change it.") from exc
    return key


def _wrong_key(path: Path) -> str:
    return (f"The key in {key_location(path)} does not open the database {path}: the key was replaced, or the "
            "file is damaged or not Enclave's. Enclave did not change it. Put back the key or a backup of the "
            "file, or move the file away to start with an empty database.")


def _refuse_foreign_schema(db: Database, path: Path) -> None:
    tables = set(db.table_names())
    if tables and "_sqlite_migrations" not in tables:
        raise StoreError(
            f"{path} is an SQLite database, but not Enclave's (it has tables {', '.join(sorted(tables)[:5])}). "
            "Enclave did not change it. Move it elsewhere, or set ENCLAVE_HOME to another folder."
        )


def _damaged(path: Path, reason: object) -> str:
    return (f"The database {path} cannot be used: {reason}. Enclave did not change it. Rename or move the file "
            "to start with an empty database, or put back a backup; 'enclave doctor --check-db' checks it.")


def take_instance_lock(path: Path) -> FileLock:
    """The data folder's instance lock: one Enclave (or database command) at a time."""
    lock_path = path.with_name(path.name + ".lock")
    pid_path = path.with_name(path.name + ".pid")
    lock = FileLock(lock_path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = pid_path.read_text().strip() if pid_path.exists() else "unknown"
        raise AnotherInstanceError(
            f"Enclave is already running with this data folder ({path.parent}, process {holder}). "
            "Close the other Enclave first, or set ENCLAVE_HOME to use another folder."
        ) from None
    pid_path.write_text(str(os.getpid()))
    return lock


def open_store(database: Path, *, readonly: bool = False) -> Store:
    database.parent.mkdir(parents=True, exist_ok=True)
    if readonly and not database.exists():
        readonly = False  # nothing to read yet: create it
    return Store(database, readonly=readonly)
