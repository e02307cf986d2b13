"""SQLCipher, for an encrypted app database: the one module that imports ``sqlcipher3``.

``sqlcipher3`` is a copy of Python's ``sqlite3`` built on SQLCipher; its exceptions are its
own classes, so code that catches database errors uses the tuples here. Plain databases
keep using Python's ``sqlite3``.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

from app.db_key import new_key
from inference.errors import EnclaveError

try:
    from sqlcipher3 import dbapi2
except ImportError:  # not installed: plain databases work, encrypted ones are refused with what to install
    dbapi2 = None

SQLITE_MAGIC = b"SQLite format 3\x00"
CIPHER = "AES-256-CBC"  # SQLCipher's one cipher; the rest of its settings are read from the library
INSTALL = ("Encryption needs SQLCipher for Python: 'pip install sqlcipher3-binary' (Linux x86-64), or "
           "'pip install sqlcipher3' with SQLCipher installed (apt install libsqlcipher-dev, brew install sqlcipher).")

DATABASE_ERRORS: tuple[type[Exception], ...] = (sqlite3.DatabaseError,) + ((dbapi2.DatabaseError,) if dbapi2 else ())
# Reading a page that fails authentication is an error, in some paths SQLITE_NOMEM (MemoryError).
READ_ERRORS: tuple[type[Exception], ...] = (*DATABASE_ERRORS, MemoryError)
OPERATIONAL_ERRORS: tuple[type[Exception], ...] = (
    (sqlite3.OperationalError,) + ((dbapi2.OperationalError,) if dbapi2 else ()))
INTEGRITY_ERRORS: tuple[type[Exception], ...] = (
    (sqlite3.IntegrityError,) + ((dbapi2.IntegrityError,) if dbapi2 else ()))


def available() -> bool:
    return dbapi2 is not None


def is_plain_sqlite(path: Path) -> bool:
    """True when ``path`` starts as every unencrypted SQLite file does. An SQLCipher file
    starts with its random salt instead, and so does anything that is not a database."""
    with path.open("rb") as f:
        return f.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC


def is_encrypted_file(path: Path) -> bool:
    """A database file that is there, not empty, and not plain SQLite: encrypted (or not a
    database at all, which opening it with a key then shows)."""
    return path.exists() and path.stat().st_size > 0 and not is_plain_sqlite(path)


def key_literal(key: str | None) -> str:
    """SQLCipher's raw-key form, checked so that it can only be hex digits; '' for no key
    (a plain database)."""
    if key is None:
        return ""
    if not re.fullmatch(r"[0-9a-f]{64}", key):
        raise EnclaveError("The database key in the keyring is not one Enclave made (64 hex digits expected).")
    return f"x'{key}'"


def connect(path: Path, key: str | None, *, readonly: bool = False) -> Any:
    """A SQLCipher connection: to an encrypted database with ``key``, or a plain one (None)."""
    if dbapi2 is None:
        raise EnclaveError(INSTALL)
    target, uri = (f"{path.as_uri()}?mode=ro", True) if readonly else (str(path), False)
    conn = dbapi2.connect(target, uri=uri, check_same_thread=False)
    conn.execute("PRAGMA cipher_log_level = NONE")  # a wrong key is our error to report, not a line on stderr
    if key is not None:
        conn.execute(f'PRAGMA key = "{key_literal(key)}"')
    return conn


def cipher_settings() -> dict[str, str]:
    """What an encrypted database here is encrypted with (SQLCipher's defaults in this build)."""
    if dbapi2 is None:
        return {"sqlcipher": "not installed"}
    conn = dbapi2.connect(":memory:")
    conn.execute(f'PRAGMA key = "{key_literal(new_key())}"')  # the provider is only known once keyed
    try:
        def value(pragma: str) -> str:
            row = conn.execute(f"PRAGMA {pragma}").fetchone()
            return str(row[0]) if row else "?"

        return {
            "sqlcipher": value("cipher_version"),
            "cipher": CIPHER,
            "hmac": value("cipher_default_hmac_algorithm"),
            "page_size": value("cipher_default_page_size"),
            "key": "256-bit raw key (no passphrase derivation)",
            "crypto_provider": f"{value('cipher_provider')} {value('cipher_provider_version')}",
        }
    finally:
        conn.close()
