"""Moving the app database to and from encryption, keeping every row.

Both directions rewrite the database beside itself with SQLCipher's ``sqlcipher_export``,
check the copy (every table's row count, ``integrity_check``, ``cipher_integrity_check``),
fsync it, and only then put it in place with one atomic rename. Until that rename the
old database is the database; anything that fails before it leaves it as it was and
removes the half-written copy. The instance lock is held throughout, so no Enclave can
write meanwhile. After encrypting, the plain file is overwritten with zeros and its
-wal/-shm files removed (a best effort: SSDs and snapshots may keep old blocks).

The key lives in the system keyring, or — on a server with no desktop keyring — in a key file
(``app.key_file``): ``encrypt --key-file PATH`` uses the key in PATH, or makes PATH (0600, 256
random bits in hex) when it does not exist; afterwards Enclave finds it through
``ENCLAVE_DB_KEY_FILE=PATH`` or systemd's credential ``enclave-db-key``. With a key file named
(by the option or the environment) the keyring is never asked. ``decrypt`` reads the same file
and leaves it in place (it may be a read-only credential): it is no longer needed afterwards.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from app import db_key, sqlcipher
from app.key_file import KeyFile, check_can_create, create_key_file, read_key
from app.keyring_access import keyring_name
from app.store import take_instance_lock
from inference.errors import EnclaveError

log = logging.getLogger("enclave.encryption")


class EncryptionError(EnclaveError):
    """The database cannot be moved to or from encryption; the old one is left as it was."""


@dataclass(frozen=True)
class Rewritten:
    tables: int
    rows: int
    warning: str = ""  # done, but something to tell the user (a key the keyring would not delete)
    key_file: KeyFile | None = None  # the key file used; None: the keyring
    key_file_made: bool = False  # encrypt made the key file


def status(database: Path) -> dict[str, Any]:
    """For ``enclave doctor``: whether encryption is on, with what, and where the key is.
    Reads only the file's first bytes; the keyring is asked only when it is on."""
    on = sqlcipher.is_encrypted_file(database)
    report: dict[str, Any] = {"encrypted": on, "sqlcipher_available": sqlcipher.available()}
    if on:
        report["cipher"] = sqlcipher.cipher_settings()
        key_file = db_key.key_file_for()
        if key_file is not None:
            report["key_file"] = str(key_file.path)
            report["key_file_named_by"] = key_file.named_by
        else:
            report["keyring"] = keyring_name()
            report["key_entry"] = f"{db_key.SERVICE} / {db_key.entry_name(database)}"
    return report


def describe(report: dict[str, Any]) -> str:
    """One line for doctor (and the settings page) from ``status``."""
    if not report["encrypted"]:
        how = "'enclave database encrypt' turns it on" if report["sqlcipher_available"] else sqlcipher.INSTALL
        return f"off ({how})"
    c = report["cipher"]
    where = (f"key in file {report['key_file']} ({report['key_file_named_by']})" if "key_file" in report
             else f"key in keyring '{report['keyring']}' as '{report['key_entry']}'")
    return (f"on (SQLCipher {c['sqlcipher']}, {c['cipher']}, {c['hmac']}, page {c['page_size']}, {c['key']}, "
            f"{c['crypto_provider']}; {where})")


def check_can_encrypt(database: Path, key_file: KeyFile | None = None) -> None:
    """EncryptionError (or DatabaseKeyError, KeyFileError) saying why ``database`` cannot be
    encrypted here, with the key file ``key_file`` or the one the environment names, else the keyring."""
    if sqlcipher.is_encrypted_file(database):
        raise EncryptionError(f"The database {database} is already encrypted.")
    if not sqlcipher.available():
        raise EncryptionError(sqlcipher.INSTALL)
    key_file = db_key.key_file_for(key_file)
    if key_file is None:
        db_key.check_keyring()  # before any work: a key with nowhere to go stops it
    elif os.path.lexists(key_file.path):
        read_key(key_file)  # a key file that is there must be usable as it is
    else:
        check_can_create(key_file)


def encrypt_database(database: Path, key_file: KeyFile | None = None) -> Rewritten:
    """Encrypt the database: with the key in the key file in use (made now, before the switch,
    when it does not exist), else with a new key saved in the keyring before the switch."""
    key_file = db_key.key_file_for(key_file)
    if key_file is not None:
        return _encrypt_with_file(database, key_file)
    with _exclusive(database):
        check_can_encrypt(database)
        key = db_key.new_key()
        try:
            return _rewrite(database, None, key, before_switch=lambda: db_key.save_key(database, key))
        except BaseException:
            if not sqlcipher.is_encrypted_file(database):  # the plain database stayed: its new key would open nothing
                with suppress(EnclaveError):
                    db_key.delete_key(database)
            raise


def _encrypt_with_file(database: Path, key_file: KeyFile) -> Rewritten:
    with _exclusive(database):
        check_can_encrypt(database, key_file)
        if os.path.lexists(key_file.path):
            return replace(_rewrite(database, None, read_key(key_file), before_switch=lambda: None),
                           key_file=key_file)
        key = db_key.new_key()
        try:
            done = _rewrite(database, None, key, before_switch=lambda: create_key_file(key_file, key))
        except BaseException:
            if not sqlcipher.is_encrypted_file(database) and _holds(key_file, key):  # ours, and it opens nothing
                key_file.path.unlink(missing_ok=True)
            raise
        return replace(done, key_file=key_file, key_file_made=True)


def _holds(key_file: KeyFile, key: str) -> bool:
    try:
        return read_key(key_file) == key
    except EnclaveError:
        return False


def decrypt_database(database: Path, key_file: KeyFile | None = None) -> Rewritten:
    """Write the database back in plain SQLite and forget its key: the keyring's entry is deleted;
    a key file is left where it is (it may be a read-only credential) and is no longer needed."""
    key_file = db_key.key_file_for(key_file)
    with _exclusive(database):
        if not sqlcipher.is_encrypted_file(database):
            raise EncryptionError(f"The database {database} is not encrypted.")
        key = db_key.load_key(database, key_file)
        if key_file is not None:
            return replace(_rewrite(database, key, None, before_switch=lambda: None), key_file=key_file)
        if key is None:
            raise EncryptionError(f"The keyring holds no key for {database}; it cannot be decrypted here.")
        rewritten = _rewrite(database, key, None, before_switch=lambda: None)
    try:
        db_key.delete_key(database)
    except EnclaveError as exc:  # the database is plain now: that is done, whatever the keyring says
        return replace(rewritten, warning=f"{exc} The unused key is still in the keyring as "
                                          f"'{db_key.SERVICE}' / '{db_key.entry_name(database)}'; delete it there.")
    return rewritten


@contextmanager
def _exclusive(database: Path) -> Iterator[None]:
    if not database.exists():
        raise EncryptionError(f"There is no database at {database} yet.")
    if not sqlcipher.available():
        raise EncryptionError(sqlcipher.INSTALL)
    lock = take_instance_lock(database)
    try:
        yield
    finally:
        lock.release()


def _rewrite(database: Path, old_key: str | None, new_key: str | None, *,
             before_switch: Callable[[], None]) -> Rewritten:
    copy = database.with_name(database.name + ".rewrite")
    _remove(copy)  # left by an interrupted run: always ours
    try:
        with closing(sqlcipher.connect(database, old_key)) as source:
            expected = _row_counts(source)
            _export(source, copy, new_key)
            _verify(copy, new_key, expected)
            _fsync(copy)
            before_switch()
            source.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        _switch(copy, database, wipe_old=new_key is not None)
    except sqlcipher.DATABASE_ERRORS as exc:
        _remove(copy)
        raise EncryptionError(f"Could not rewrite {database} ({exc}); it was left as it was.") from exc
    except BaseException:
        _remove(copy)
        raise
    log.info("database %s: %d tables, %d rows", "encrypted" if new_key else "decrypted", len(expected),
             sum(expected.values()))
    return Rewritten(tables=len(expected), rows=sum(expected.values()))


def _row_counts(conn: Any) -> dict[str, int]:
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    return {name: conn.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0] for name in names}


def _export(source: Any, copy: Path, key: str | None) -> None:
    source.execute("ATTACH DATABASE ? AS rewrite KEY ?", [str(copy), sqlcipher.key_literal(key)])
    try:
        source.execute("SELECT sqlcipher_export('rewrite')")
        version = source.execute("PRAGMA main.user_version").fetchone()[0]
        source.execute(f"PRAGMA rewrite.user_version = {int(version)}")  # sqlcipher_export leaves it out
    finally:
        source.execute("DETACH DATABASE rewrite")


def _verify(copy: Path, key: str | None, expected: dict[str, int]) -> None:
    """The copy, opened afresh, has every table with every row and passes SQLite's (and
    SQLCipher's) own checks."""
    if (key is None) != sqlcipher.is_plain_sqlite(copy):
        raise EncryptionError(f"The rewritten copy of the database is {'not ' if key else ''}encrypted.")
    opened = sqlcipher.connect(copy, key) if key else sqlite3.connect(copy)
    with closing(opened) as conn:
        found = _row_counts(conn)
        problems = [r[0] for r in conn.execute("PRAGMA integrity_check")] != ["ok"]
        if key is not None:
            problems = problems or bool(conn.execute("PRAGMA cipher_integrity_check").fetchall())
    if found != expected or problems:
        missing = {t: (n, found.get(t)) for t, n in expected.items() if found.get(t) != n}
        raise EncryptionError(f"The rewritten copy did not check out (rows by table, expected/found: {missing}; "
                              f"integrity {'failed' if problems else 'ok'}).")


def _switch(copy: Path, database: Path, *, wipe_old: bool) -> None:
    """Put ``copy`` in place of ``database`` atomically; the old -wal/-shm go first (they
    belong to the old file and would be replayed into the new one). With ``wipe_old`` the
    old file, still open here after the rename, is overwritten with zeros (POSIX only:
    Windows cannot rename over an open file)."""
    for suffix in ("-wal", "-shm"):
        database.with_name(database.name + suffix).unlink(missing_ok=True)
    with open(database, "r+b") as old:
        if not (wipe_old and os.name == "posix"):
            old.close()
        os.replace(copy, database)
        _fsync_folder(database.parent)
        if not old.closed:
            _zero(old)


def _zero(f: Any) -> None:
    """Best effort, after the switch: a failure here is logged, the encryption stands."""
    try:
        size = os.fstat(f.fileno()).st_size
        chunk = b"\0" * (1 << 20)
        f.seek(0)
        for start in range(0, size, len(chunk)):
            f.write(chunk[: min(len(chunk), size - start)])
        f.flush()
        os.fsync(f.fileno())
    except OSError as exc:
        log.warning("could not overwrite the old plain database: %s", exc)


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_folder(folder: Path) -> None:
    if os.name == "posix":  # a rename is durable once its folder is synced; Windows has no such call
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove(copy: Path) -> None:
    for path in (copy, copy.with_name(copy.name + "-journal")):
        path.unlink(missing_ok=True)
