"""API keys for ``enclave serve``: made, listed, revoked and checked here, kept in the database
(table ``api_keys``, migration 0013).

A key's secret is ``enc-`` and 32 random bytes (URL-safe base64). It is shown once, when made,
and never stored: the table holds its SHA-256 and a short prefix (``enc-`` and six characters)
that tells keys apart in lists and logs without opening anything. ``verify`` finds the keys
with the secret's prefix and compares hashes in constant time; a revoked key opens nothing.
A key's name stays taken after it is revoked, so audit records naming it stay unambiguous.

``last_used_at`` is written at most once a minute per key: a busy server reads on every
request but writes only then.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlite_utils import Database

from app.store import Store
from inference.errors import EnclaveError

SECRET_START = "enc-"
PREFIX_CHARS = len(SECRET_START) + 6
LAST_USED_EVERY = timedelta(minutes=1)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_COLUMNS = "name, prefix, created_at, last_used_at, revoked_at"


@dataclass(frozen=True)
class ApiKey:
    name: str
    created_at: str  # ISO 8601, UTC, seconds
    last_used_at: str | None = None
    revoked_at: str | None = None
    prefix: str = ""  # "enc-" and the secret's next six characters: not enough to use it

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class ApiKeyRepository:
    """The only SQL for API keys. ``clock`` is for tests (the minute between ``last_used_at`` writes)."""

    def __init__(self, store: Store, clock: Callable[[], datetime] = _now) -> None:
        self.store = store
        self._clock = clock

    def create(self, name: str) -> tuple[ApiKey, str]:
        """A new key and its secret — the only time the secret exists outside the caller."""
        name = name.strip()
        if not _NAME.fullmatch(name):
            raise EnclaveError(f"{name!r} cannot name a key: use up to 64 letters, digits, '.', '_', '@' or '-', "
                               "starting with a letter or digit.")
        secret = SECRET_START + secrets.token_urlsafe(32)
        created = _stamp(self._clock())
        with self.store.write() as db:
            existing = self._get(db, name)
            if existing is not None:
                state = (f" (revoked {existing.revoked_at}; names of revoked keys stay taken)"
                         if existing.revoked else "")
                raise EnclaveError(f"A key named {name!r} already exists{state}; choose another name.")
            db.execute("INSERT INTO api_keys (name, prefix, hash, created_at) VALUES (?, ?, ?, ?)",
                       [name, secret[:PREFIX_CHARS], secret_hash(secret), created])
        return ApiKey(name, created, prefix=secret[:PREFIX_CHARS]), secret

    def list(self) -> list[ApiKey]:
        if not self.store.read()["api_keys"].exists():  # read-only before migration 0013 was applied: none yet
            return []
        rows = self.store.read().execute(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at, name").fetchall()
        return [_key(row) for row in rows]

    def revoke(self, name: str) -> ApiKey:
        """Revoke the key ``name``: from now on it opens nothing. Revoking it again changes nothing."""
        with self.store.write() as db:
            key = self._get(db, name)
            if key is None:
                names = [row[0] for row in db.execute("SELECT name FROM api_keys ORDER BY name")]
                known = ", ".join(names) if names else "there are none yet"
                raise EnclaveError(f"There is no key named {name!r} (keys: {known}).")
            if key.revoked:
                return key
            db.execute("UPDATE api_keys SET revoked_at = ? WHERE name = ?", [_stamp(self._clock()), name])
            return self._get(db, name)  # type: ignore[return-value]

    def verify(self, secret: str) -> ApiKey | None:
        """The key this secret is, unless revoked; None for anything else."""
        if not secret.startswith(SECRET_START) or len(secret) <= PREFIX_CHARS:
            return None
        digest = secret_hash(secret)
        candidates = self.store.read().execute(
            f"SELECT {_COLUMNS}, hash FROM api_keys WHERE prefix = ?", [secret[:PREFIX_CHARS]]).fetchall()
        found = next((row for row in candidates if hmac.compare_digest(row[5], digest)), None)
        if found is None or found[4] is not None:
            return None
        key = _key(found)
        return self._note_use(key)

    def _note_use(self, key: ApiKey) -> ApiKey:
        now = self._clock()
        if key.last_used_at is not None and now - datetime.fromisoformat(key.last_used_at) < LAST_USED_EVERY:
            return key
        stamp = _stamp(now)
        with self.store.write() as db:
            db.execute("UPDATE api_keys SET last_used_at = ? WHERE name = ?", [stamp, key.name])
        return ApiKey(key.name, key.created_at, stamp, key.revoked_at, key.prefix)

    @staticmethod
    def _get(db: Database, name: str) -> ApiKey | None:
        row = db.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE name = ?", [name]).fetchone()
        return _key(row) if row else None


def _key(row: Sequence[Any]) -> ApiKey:
    name, prefix, created_at, last_used_at, revoked_at = row[:5]
    return ApiKey(name, created_at, last_used_at, revoked_at, prefix)
