"""Saved KV states of library prompts, so a question after a restart costs only itself.

An entry is the llama.cpp KV state of a prompt prefix, saved by the worker, keyed by
everything that decides its bytes: the model's weights (fingerprint), the KV cache types,
flash attention (it changes the V layout) and the prefix's exact tokens (so a changed or
added document makes a new key). Entries are listed in the app database; the files live
under the cache folder. Past the size cap the least recently used go first.

The states are derived from document text, so with an encrypted database they are not
written to disk at all (``persistent`` is False): a library's prefix is then kept only in
the worker's memory (``remember``), and evaluated again after a restart.

An entry also notes the library's version it was made from (``current``: is there a state
for this scope made from the library as it is now? — the libraries page's *ready*).

A *block* entry is one library document's KV cache, encoded alone after the library's
head (``library_attention = isolated``): keyed by the weights, the cache types, the head's
tokens and the document's tokens, so the same document after the same head is the same
block in any library and in any order. ``kv_block_uses`` says which block holds which
document of a library's scope, so whether a library is warm is read from the table.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from app.conversations import now
from app.store import Store
from inference.protocol import ModelSettings


@dataclass(frozen=True)
class CacheEntry:
    key: str
    path: str
    library_id: int | None
    library: str | None
    model: str
    tokens: int
    bytes: int
    created_at: str
    last_used_at: str
    kind: str = "prefix"  # or "block": one document's KV cache


@dataclass(frozen=True)
class BlockGroup:
    """The blocks of one library (by the library that made them) and model."""

    library: str | None
    model: str
    blocks: int
    tokens: int
    bytes: int
    last_used_at: str


class CurrentState(NamedTuple):
    key: str
    tokens: int | None  # None: a state only the worker holds (ask it: ``Runtime.holds_prefix``)


def _files(path: Path) -> list[Path]:
    return [path, path.with_name(path.name + ".json")]  # the state and the engine's sidecar


class PromptCache:
    def __init__(self, store: Store, folder: Path, max_bytes: Callable[[], int]) -> None:
        self.store = store
        self.folder = folder
        self._max_bytes = max_bytes
        self.persistent = not store.encrypted
        self._in_memory: dict[str, tuple[str, str]] = {}  # scope -> (version, key): states only the worker holds

    @staticmethod
    def key(model_fingerprint: str, settings: ModelSettings, prefix: Sequence[int]) -> str:
        digest = hashlib.sha256()
        digest.update(f"{model_fingerprint}|{settings.type_k}|{settings.type_v}|{settings.flash_attn}|".encode())
        digest.update(b"".join(t.to_bytes(4, "little", signed=True) for t in prefix))
        return digest.hexdigest()[:40]

    @staticmethod
    def composed_key(model_fingerprint: str, settings: ModelSettings, prefix: Sequence[int]) -> str:
        """The key of a library prefix composed from blocks: its KV differs from the same
        tokens evaluated in one pass, so it never passes for one."""
        return PromptCache.key(model_fingerprint + "|composed", settings, prefix)

    @staticmethod
    def block_key(model_fingerprint: str, settings: ModelSettings, head: Sequence[int],
                  tokens: Sequence[int]) -> str:
        return PromptCache.key(f"{model_fingerprint}|block|{len(head)}", settings, [*head, *tokens])

    @staticmethod
    def scope(library_id: int, model_fingerprint: str, settings: ModelSettings, system_prompt: str) -> str:
        """What a saved prefix is a version of: a newer one of the same scope replaces it."""
        text = f"{library_id}|{model_fingerprint}|{settings.type_k}|{settings.type_v}|{settings.flash_attn}|"
        return hashlib.sha256((text + system_prompt).encode()).hexdigest()[:24]

    def path_for(self, key: str) -> Path:
        return self.folder / f"{key}.kv"

    def lookup(self, key: str) -> Path | None:
        """The state file for ``key`` if it is there (and marked as just used)."""
        if not self.persistent:
            return None
        path = self.path_for(key)
        row = self.store.read().execute("SELECT 1 FROM kv_cache WHERE key = ?", [key]).fetchone()
        if row is None or not path.exists():
            if row is not None:
                self.forget(key)
            return None
        with self.store.write() as db:
            db.execute("UPDATE kv_cache SET last_used_at = ? WHERE key = ?", [now(), key])
        return path

    def record(self, key: str, *, scope: str, library_id: int | None, model: str, tokens: int,
               version: str = "") -> None:
        """Note a state the worker just saved (``version``: of the library it was made
        from); older states of the same scope are stale (the library changed) and go."""
        path = self.path_for(key)
        size = sum(p.stat().st_size for p in _files(path) if p.exists())
        stamp = now()
        stale = [r[0] for r in self.store.read().execute(
            "SELECT key FROM kv_cache WHERE scope = ? AND key != ? AND kind = 'prefix'", [scope, key])]
        for old in stale:
            self.forget(old)
        with self.store.write() as db:
            db.execute("INSERT OR REPLACE INTO kv_cache (key, path, library_id, model, tokens, bytes, created_at, "
                       "last_used_at, scope, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       [key, str(path), library_id, model, tokens, size, stamp, stamp, scope, version])
        self.evict()

    def record_block(self, key: str, *, scope: str, document: str, library_id: int, model: str,
                     tokens: int) -> None:
        """Note a block the worker just saved, as the one holding ``document`` (its
        ``document_version``) in the library prompt of ``scope``."""
        size = sum(p.stat().st_size for p in _files(self.path_for(key)) if p.exists())
        stamp = now()
        with self.store.write() as db:
            db.execute("INSERT INTO kv_cache (key, path, library_id, model, tokens, bytes, created_at, last_used_at, "
                       "kind) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'block') ON CONFLICT(key) DO UPDATE SET "
                       "bytes = excluded.bytes, last_used_at = excluded.last_used_at",
                       [key, str(self.path_for(key)), library_id, model, tokens, size, stamp, stamp])
            db.execute("INSERT OR REPLACE INTO kv_block_uses (scope, document, key) VALUES (?, ?, ?)",
                       [scope, document, key])
        self.evict()

    def use_block(self, key: str, *, scope: str, document: str) -> None:
        """Note that an existing block holds ``document`` in ``scope``'s library prompt too."""
        with self.store.write() as db:
            db.execute("INSERT OR REPLACE INTO kv_block_uses (scope, document, key) VALUES (?, ?, ?)",
                       [scope, document, key])

    def current_blocks(self, scope: str, documents: Sequence[str]) -> int | None:
        """The tokens of the blocks holding every one of ``documents`` in ``scope``, when
        each has one on disk; else None. Reads the table only."""
        if not self.persistent or not documents or self._before_blocks():
            return None
        rows = {r[0]: (r[1], r[2]) for r in self.store.read().execute(
            "SELECT u.document, k.tokens, k.path FROM kv_block_uses u JOIN kv_cache k ON k.key = u.key "
            f"WHERE u.scope = ? AND u.document IN ({', '.join('?' * len(documents))})", [scope, *documents])}
        if len(rows) < len(set(documents)) or not all(Path(path).exists() for _, path in rows.values()):
            return None
        return sum(tokens for tokens, _ in rows.values())

    def _before_blocks(self) -> bool:
        """A read-only database the next writable open migrates: it knows no blocks yet."""
        return self.store.readonly and "kv_block_uses" not in self.store.read().table_names()

    def remember(self, key: str, *, scope: str, version: str) -> None:
        """Note a state only the worker holds (not saved: the database is encrypted)."""
        self._in_memory[scope] = (version, key)

    def current(self, scope: str, version: str) -> CurrentState | None:
        """The state of ``scope`` made from the library at ``version``, None when there is
        none. Reads the table only: nothing is loaded."""
        if not self.persistent:
            held = self._in_memory.get(scope)
            return CurrentState(held[1], None) if held is not None and held[0] == version else None
        if self.store.readonly and "version" not in self.store.read()["kv_cache"].columns_dict:
            return None  # a database the next writable open migrates: no state knows its library's version
        row = self.store.read().execute("SELECT key, tokens FROM kv_cache WHERE scope = ? AND version = ? "
                                        "AND kind = 'prefix'", [scope, version]).fetchone()
        if row is None or not self.path_for(row[0]).exists():
            return None
        return CurrentState(row[0], row[1])

    def evict(self) -> list[str]:
        """Drop least recently used entries until the total is under the cap, and any
        state file no entry lists (left by a process that died between save and record)."""
        entries = sorted(self.entries(), key=lambda e: e.last_used_at)
        listed = {Path(e.path).name for e in entries}
        for orphan in self.folder.glob("*.kv"):
            if orphan.name not in listed:
                for file in _files(orphan):
                    file.unlink(missing_ok=True)
        dropped = []
        total, cap = sum(e.bytes for e in entries), self._max_bytes()
        for entry in entries:
            if total <= cap:
                break
            self.forget(entry.key)
            total -= entry.bytes
            dropped.append(entry.key)
        return dropped

    def forget(self, key: str) -> None:
        for file in _files(self.path_for(key)):
            file.unlink(missing_ok=True)
        with self.store.write() as db:
            db.execute("DELETE FROM kv_cache WHERE key = ?", [key])

    def entries(self) -> list[CacheEntry]:
        rows = self.store.read().query(
            "SELECT k.key, k.path, k.library_id, k.model, k.tokens, k.bytes, k.created_at, k.last_used_at, "
            "k.kind, l.name AS library FROM kv_cache k LEFT JOIN libraries l ON l.id = k.library_id "
            "ORDER BY k.last_used_at DESC")
        return [CacheEntry(**r) for r in rows]

    def block_groups(self) -> list[BlockGroup]:
        """The saved blocks per library (the one that made each) and model, most recently used first."""
        groups: dict[tuple[str | None, str], list[CacheEntry]] = {}
        for entry in self.entries():
            if entry.kind == "block":
                groups.setdefault((entry.library, entry.model), []).append(entry)
        return [BlockGroup(library, model, len(es), sum(e.tokens for e in es), sum(e.bytes for e in es),
                           max(e.last_used_at for e in es)) for (library, model), es in groups.items()]

    def clear_disk(self) -> tuple[int, int]:
        """Every saved state off the disk, listed or not: (entries, bytes) freed."""
        freed = self.clear()
        self.evict()  # the files no entry lists
        return freed

    def clear(self, library_id: int | None = None) -> tuple[int, int]:
        """Forget every entry (of one library): returns (entries, bytes) freed."""
        gone = [e for e in self.entries() if library_id is None or e.library_id == library_id]
        for entry in gone:
            self.forget(entry.key)
        return len(gone), sum(e.bytes for e in gone)
