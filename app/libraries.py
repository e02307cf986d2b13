"""Document libraries in the app database: the only module with their SQL.

A library is a named set of documents. A document is a path plus what was read from it;
the extracted text lives in ``contents``, keyed by the SHA-256 of the file's bytes, so the
same file added twice (or to two libraries) is stored once. A document that could not be
read keeps its row with the reason, so the user sees what was left out and why.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from app.conversations import NotFound, now
from app.enforcement import Enforcer
from app.store import Store
from inference.errors import EnclaveError


@dataclass(frozen=True)
class Library:
    id: int
    name: str
    created_at: str
    updated_at: str
    documents: int = 0
    failed: int = 0
    chars: int = 0
    vision_model: str | None = None  # transcribes scanned pages and images as they are added


@dataclass(frozen=True)
class Document:
    id: int
    library_id: int
    path: str
    title: str
    kind: str | None
    size: int
    mtime: float | None
    sha256: str | None
    error: str | None
    error_reason: str | None
    added_at: str
    updated_at: str
    chars: int = 0
    transcribed_by: str | None = None  # the vision model that read its scanned pages or image
    transcribed_pages: tuple[int, ...] = ()  # which pages (1-based) it read

    @property
    def ok(self) -> bool:
        return self.error is None and self.sha256 is not None

    @property
    def transcription_note(self) -> str:
        """'transcribed by MODEL (pages 1, 3)', or '' when no model read any of it."""
        if not self.transcribed_by:
            return ""
        pages = self.transcribed_pages
        if self.kind == "image" and len(pages) <= 1:
            return f"transcribed by {self.transcribed_by}"
        which = f"page {pages[0]}" if len(pages) == 1 else f"pages {_page_list(pages)}"
        return f"transcribed by {self.transcribed_by} ({which})"


def _page_list(pages: tuple[int, ...]) -> str:
    shown = ", ".join(str(p) for p in pages[:8])
    return shown + (f", … ({len(pages)} in all)" if len(pages) > 8 else "")


@dataclass(frozen=True)
class Content:
    sha256: str
    text: str
    pages: tuple[int, ...]
    kind: str
    title: str


_LIBRARY_SELECT = """
    SELECT l.*,
        (SELECT count(*) FROM documents d WHERE d.library_id = l.id AND d.error IS NULL) AS documents,
        (SELECT count(*) FROM documents d WHERE d.library_id = l.id AND d.error IS NOT NULL) AS failed,
        (SELECT coalesce(sum(c.chars), 0) FROM documents d JOIN contents c ON c.sha256 = d.sha256
         WHERE d.library_id = l.id) AS chars
    FROM libraries l"""
_DOCUMENT_SELECT = """
    SELECT d.*, coalesce(c.chars, 0) AS chars, c.transcribed_by,
        coalesce(c.transcribed_pages, '[]') AS transcribed_pages
    FROM documents d LEFT JOIN contents c ON c.sha256 = d.sha256"""
DOCUMENT_FIELDS = tuple(Document.__dataclass_fields__)


def _document(row: dict[str, Any]) -> Document:
    values = {k: row[k] for k in DOCUMENT_FIELDS}
    values["transcribed_pages"] = tuple(json.loads(values["transcribed_pages"] or "[]"))
    return Document(**values)


def document_version(document: Document) -> str:
    """What a document's part of a library prompt is made of (id, content, title, path):
    its KV block is valid while this stays the same."""
    return f"{document.id}|{document.sha256}|{document.title}|{document.path}"


class LibraryRepository:
    def __init__(self, store: Store, enforcer: Enforcer | None = None) -> None:
        self.store = store
        self.enforcer = enforcer or Enforcer()

    # Libraries -----------------------------------------------------------------------

    def create(self, name: str) -> Library:
        name = name.strip()
        if not name:
            raise EnclaveError("A library needs a name.")
        if self.find(name) is not None:
            raise EnclaveError(f"There is already a library called {name!r}.")
        stamp = now()
        with self.store.write() as db:
            db.execute("INSERT INTO libraries (name, created_at, updated_at) VALUES (?, ?, ?)", [name, stamp, stamp])
        created = self.get(name)
        self.enforcer.record("library.create", library=created.name, library_id=created.id)
        return created

    def find(self, name_or_id: str | int) -> Library | None:
        column = "id" if isinstance(name_or_id, int) or str(name_or_id).isdigit() else "name"
        rows = list(self.store.read().query(f"{_LIBRARY_SELECT} WHERE l.{column} = ?", [name_or_id]))
        if not rows and column == "id":  # a library may be called "2024"
            rows = list(self.store.read().query(f"{_LIBRARY_SELECT} WHERE l.name = ?", [str(name_or_id)]))
        return Library(**rows[0]) if rows else None

    def get(self, name_or_id: str | int) -> Library:
        library = self.find(name_or_id)
        if library is None:
            raise NotFound(f"There is no library {name_or_id!r}. 'enclave library list' shows them; "
                           "'enclave library create NAME' makes one.")
        return library

    def all(self) -> list[Library]:
        return [Library(**r) for r in self.store.read().query(f"{_LIBRARY_SELECT} ORDER BY l.name")]

    def delete(self, library_id: int) -> None:
        library = self.find(library_id)
        with self.store.write() as db:
            db.execute("DELETE FROM libraries WHERE id = ?", [library_id])
            _drop_orphan_contents(db)
        if library is not None:
            self.enforcer.record("library.delete", library=library.name, library_id=library_id)

    def set_vision_model(self, library_id: int, model_ref: str | None) -> Library:
        """The model that transcribes the library's scanned pages and images as they are added
        (a registered model's id), or None: they are recorded as unread. ``Services.set_library_vision``
        checks that the model reads images."""
        library = self.get(library_id)
        with self.store.write() as db:
            db.execute("UPDATE libraries SET vision_model = ? WHERE id = ?", [model_ref, library.id])
        self.enforcer.record("library.vision", library=library.name, library_id=library.id, model=model_ref)
        return self.get(library.id)

    def unread_scans(self, library_id: int) -> list[Document]:
        """The documents recorded as unread because only a vision model could read them (scanned
        PDFs, images): what choosing one reads again."""
        return [d for d in self.documents(library_id) if d.error is not None and d.error_reason == "no_text"]

    def touch(self, library_id: int) -> None:
        with self.store.write() as db:
            db.execute("UPDATE libraries SET updated_at = ? WHERE id = ?", [now(), library_id])

    # Documents -------------------------------------------------------------------------

    def documents(self, library_id: int, *, readable_only: bool = False) -> list[Document]:
        """In the order they were added: the order they take in a library prompt."""
        where = "d.library_id = ?" + (" AND d.error IS NULL AND d.sha256 IS NOT NULL" if readable_only else "")
        return [_document(r) for r in self.store.read().query(f"{_DOCUMENT_SELECT} WHERE {where} ORDER BY d.id",
                                                              [library_id])]

    def version(self, library_id: int) -> str:
        """What a library prompt is made of, as a short hash: its readable documents in
        order (``document_version``). It changes exactly when the library's prompt text
        would, with no document text read."""
        digest = hashlib.sha256()
        for d in self.documents(library_id, readable_only=True):
            digest.update(f"\0{document_version(d)}".encode())
        return digest.hexdigest()[:24]

    def document_at(self, library_id: int, path: str) -> Document | None:
        rows = list(self.store.read().query(f"{_DOCUMENT_SELECT} WHERE d.library_id = ? AND d.path = ?",
                                            [library_id, path]))
        return _document(rows[0]) if rows else None

    def document(self, document_id: int) -> Document:
        rows = list(self.store.read().query(f"{_DOCUMENT_SELECT} WHERE d.id = ?", [document_id]))
        if not rows:
            raise NotFound(f"There is no document {document_id}.")
        return _document(rows[0])

    def stored_kind(self, sha256: str) -> tuple[str, str] | None:
        """(title, kind) of text already stored under ``sha256`` (an identical file read before), or None."""
        row = self.store.read().execute("SELECT title, kind FROM contents WHERE sha256 = ?", [sha256]).fetchone()
        return (row[0], row[1]) if row else None

    def content(self, sha256: str) -> Content:
        rows = list(self.store.read().query("SELECT * FROM contents WHERE sha256 = ?", [sha256]))
        if not rows:
            raise NotFound(f"No stored text for {sha256[:12]}.")
        r = rows[0]
        return Content(r["sha256"], r["text"], tuple(json.loads(r["pages"])), r["kind"], r["title"])

    def save_document(self, library_id: int, path: str, *, size: int, mtime: float, sha256: str, title: str,
                      kind: str, text: str | None = None, pages: tuple[int, ...] = (),
                      warnings: tuple[str, ...] = (), transcribed_by: str | None = None,
                      transcribed_pages: tuple[int, ...] = ()) -> Document:
        """Add or update one readable document, its text with it, in one transaction: a
        cancelled or crashed ingest never leaves half a document. ``text`` may be None
        when this content is already stored. ``transcribed_by``: the vision model that wrote the
        text of ``transcribed_pages``."""
        stamp = now()
        previous = self.document_at(library_id, path)
        self._check_room(library_id, path, sha256, text, previous)
        with self.store.write() as db:
            if text is not None:
                db.execute("INSERT OR IGNORE INTO contents (sha256, text, chars, pages, kind, title, warnings, "
                           "transcribed_by, transcribed_pages) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           [sha256, text, len(text), json.dumps(list(pages)), kind, title,
                            json.dumps(list(warnings)), transcribed_by, json.dumps(list(transcribed_pages))])
            db.execute(
                """INSERT INTO documents (library_id, path, title, kind, size, mtime, sha256, error, error_reason,
                                          added_at, updated_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL, ?, ?)
                   ON CONFLICT (library_id, path) DO UPDATE SET title = excluded.title, kind = excluded.kind,
                       size = excluded.size, mtime = excluded.mtime, sha256 = excluded.sha256, error = NULL,
                       error_reason = NULL, updated_at = excluded.updated_at""",
                [library_id, path, title, kind, size, mtime, sha256, stamp, stamp])
            if previous is not None and previous.sha256 and previous.sha256 != sha256:
                _drop_if_unused(db, previous.sha256)
            db.execute("UPDATE libraries SET updated_at = ? WHERE id = ?", [stamp, library_id])
        found = self.document_at(library_id, path)
        assert found is not None
        self.enforcer.record("library.add", library=self._name(library_id), library_id=library_id,
                             document_id=found.id, path=path, sha256=sha256)
        return found

    def _check_room(self, library_id: int, path: str, sha256: str, text: str | None,
                    previous: Document | None) -> None:
        """Refuse the document when the policy's size limit would not hold it."""
        if self.enforcer.policy.max_library_mb is None:
            return
        library = self.get(library_id)
        row = None if text is not None else self.store.read().execute(
            "SELECT chars FROM contents WHERE sha256 = ?", [sha256]).fetchone()
        adding = len(text) if text is not None else (row[0] if row else 0)
        current = library.chars - (previous.chars if previous is not None else 0)
        self.enforcer.check_library_size(library.name, current, adding, path)

    def _name(self, library_id: int) -> str | None:
        row = self.store.read().execute("SELECT name FROM libraries WHERE id = ?", [library_id]).fetchone()
        return row[0] if row else None

    def save_failure(self, library_id: int, path: str, *, size: int, mtime: float | None, kind: str | None,
                     reason: str, error: str) -> Document:
        """Record that ``path`` could not be read, and why. A document read earlier from
        the same path keeps its text: a file that breaks later loses nothing stored."""
        existing = self.document_at(library_id, path)
        stamp = now()
        with self.store.write() as db:
            if existing is not None and existing.ok:
                db.execute("UPDATE documents SET error = ?, error_reason = ?, updated_at = ? WHERE id = ?",
                           [error, reason, stamp, existing.id])
            else:
                db.execute(
                    """INSERT INTO documents (library_id, path, title, kind, size, mtime, error, error_reason,
                                              added_at, updated_at) VALUES (?, ?, '', ?, ?, ?, ?, ?, ?, ?)
                       ON CONFLICT (library_id, path) DO UPDATE SET error = excluded.error,
                           error_reason = excluded.error_reason, size = excluded.size, mtime = excluded.mtime,
                           updated_at = excluded.updated_at""",
                    [library_id, path, kind, size, mtime, error, reason, stamp, stamp])
        found = self.document_at(library_id, path)
        assert found is not None
        return found

    def touch_document(self, document_id: int, mtime: float) -> None:
        with self.store.write() as db:
            db.execute("UPDATE documents SET mtime = ?, error = NULL, error_reason = NULL WHERE id = ?",
                       [mtime, document_id])

    def remove_document(self, document_id: int) -> None:
        document = self.document(document_id)
        with self.store.write() as db:
            db.execute("DELETE FROM documents WHERE id = ?", [document_id])
            if document.sha256:
                _drop_if_unused(db, document.sha256)
        self.enforcer.record("library.remove", library=self._name(document.library_id),
                             library_id=document.library_id, document_id=document_id, path=document.path,
                             sha256=document.sha256)

    # Token counts ----------------------------------------------------------------------

    def token_counts(self, shas: list[str], tokenizer: str) -> dict[str, int]:
        if not shas:
            return {}
        found: dict[str, int] = {}
        for start in range(0, len(shas), 500):
            chunk = shas[start:start + 500]
            rows = self.store.read().execute(
                f"SELECT sha256, tokens FROM token_counts WHERE tokenizer = ? AND sha256 IN "
                f"({', '.join('?' * len(chunk))})", [tokenizer, *chunk]).fetchall()
            found.update(dict(rows))
        return found

    def count_tokens(self, shas: list[str], tokenizer: str, count: Callable[[Sequence[str]], list[int]],
                     texts: dict[str, str] | None = None) -> dict[str, int]:
        """Token counts of these contents for ``tokenizer``: cached ones as they are, the
        rest counted now (with ``count``) and cached. ``texts`` saves reading them again."""
        counts = self.token_counts(shas, tokenizer)
        missing = [sha for sha in shas if sha not in counts]
        if missing:
            known = texts or {}
            counted = dict(zip(missing, count([known[sha] if sha in known else self.content(sha).text
                                               for sha in missing]), strict=True))
            self.save_token_counts(counted, tokenizer)
            counts.update(counted)
        return counts

    def save_token_counts(self, counts: dict[str, int], tokenizer: str) -> None:
        with self.store.write() as db:
            db.conn.executemany("INSERT OR REPLACE INTO token_counts (sha256, tokenizer, tokens) VALUES (?, ?, ?)",
                                [(sha, tokenizer, n) for sha, n in counts.items()])


def _drop_if_unused(db: Any, sha256: str) -> None:
    db.execute("DELETE FROM contents WHERE sha256 = ? AND NOT EXISTS (SELECT 1 FROM documents WHERE sha256 = ?)",
               [sha256, sha256])


def _drop_orphan_contents(db: Any) -> None:
    db.execute("DELETE FROM contents WHERE sha256 NOT IN (SELECT sha256 FROM documents WHERE sha256 IS NOT NULL)")
