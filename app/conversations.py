"""Conversations and their messages in the app database: the only module with their SQL.

Rows come back as frozen dataclasses. Lists are paged (``limit``/``offset`` or
``before_id``) so a view can load a long history a page at a time.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal, NamedTuple

from sqlite_utils import Database

from app import sqlcipher
from app.image_store import ImageMissingError, delete_unused
from app.store import Store
from inference.errors import EnclaveError

Status = Literal["complete", "partial", "error"]


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Conversation:
    id: int
    title: str
    model: str | None
    library_id: int | None
    system_prompt: str
    sampling: dict[str, Any]
    created_at: str
    updated_at: str
    message_count: int = 0


@dataclass(frozen=True)
class Source:
    """A document, or a passage of a long one, that a library answer was given — or that
    did not fit and was left out."""

    document_id: int
    title: str
    path: str
    section: int | None = None  # a passage (from 0) of a long document; None: all of it
    start: int | None = None  # the passage's characters in the document's text
    end: int | None = None
    page: int | None = None  # the page the passage starts on
    left_out: bool = False

    @property
    def name(self) -> str:
        """As a user knows it: the file's name, and the title the text gave it when it differs."""
        file = self.path.replace("\\", "/").rsplit("/", 1)[-1]
        return f"{self.title} ({file})" if self.title and self.title != file else file


def sources_json(sources: tuple[Source, ...]) -> str:
    return json.dumps([{k: v for k, v in asdict(s).items() if v is not None and v is not False} for s in sources])


def sources_from_json(text: str | None) -> tuple[Source, ...]:
    return tuple(Source(**item) for item in json.loads(text or "[]"))


class ImageRef(NamedTuple):
    """An image to link to a message: a stored image (``app.image_store``) and the name the
    user's file had ("" for a pasted image)."""

    sha256: str
    name: str = ""


@dataclass(frozen=True)
class MessageImage:
    """An image a message shows the model (before its text), as read back with the message."""

    sha256: str
    name: str
    width: int
    height: int


@dataclass(frozen=True)
class Message:
    id: int
    conversation_id: int
    role: str
    content: str
    reasoning: str = ""
    status: Status = "complete"
    error: str | None = None
    stop_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    prompt_seconds: float | None = None
    generation_seconds: float | None = None
    reasoning_seconds: float | None = None
    drafted_tokens: int = 0  # tokens proposed by drafting (the prompt, a draft model) and checked
    accepted_tokens: int = 0  # of those, the ones the model agreed with
    model: str | None = None
    created_at: str = ""
    updated_at: str = ""
    context_note: str | None = None  # what a library prompt included and left out
    sources: tuple[Source, ...] = ()  # what a library answer was given, and what was left out
    alternative_of: int | None = None  # the first reply of its group of alternatives (None: it is the first)
    shown: bool = True  # the alternative listed and given to the model
    alternative: int = 1  # its place among the alternatives to the same message, from 1 (read, never stored)
    alternatives: int = 1  # how many there are
    images: tuple[MessageImage, ...] = ()  # a user message's images, in order (read from message_images)

    @property
    def group(self) -> int:
        """The id naming this reply's group of alternatives: its first reply's."""
        return self.alternative_of or self.id


@dataclass(frozen=True)
class SearchHit:
    conversation_id: int
    conversation_title: str
    message_id: int | None  # None: the title matched
    role: str | None
    snippet: str  # the match marked with [ and ]
    updated_at: str = field(default="")


class NotFound(EnclaveError):
    pass


_LINKED = frozenset({"images"})  # read from other tables, not columns of ``messages``
MESSAGE_FIELDS = tuple(name for name in Message.__dataclass_fields__ if name not in _LINKED)
_COMPUTED = frozenset({"alternative", "alternatives"})  # counted when read, not columns
_IMAGES_SELECT = """
    SELECT mi.message_id, mi.sha256, mi.name, i.width, i.height
    FROM message_images mi JOIN images i ON i.sha256 = mi.sha256"""
_CONVERSATION_SELECT = """
    SELECT c.*, (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id AND m.shown = 1) AS message_count
    FROM conversations c"""
# A message with its place among its alternatives (counted for replies only: a user message has none).
_SIBLINGS = ("FROM messages a WHERE (a.id = coalesce(m.alternative_of, m.id) "
             "OR a.alternative_of = coalesce(m.alternative_of, m.id))")
_MESSAGE_SELECT = f"""
    SELECT m.*,
        CASE WHEN m.role = 'assistant' THEN (SELECT count(*) {_SIBLINGS} AND a.id <= m.id) ELSE 1 END
            AS alternative,
        CASE WHEN m.role = 'assistant' THEN (SELECT count(*) {_SIBLINGS}) ELSE 1 END AS alternatives
    FROM messages m"""


def _conversation(row: dict[str, Any]) -> Conversation:
    return Conversation(**{**row, "sampling": json.loads(row["sampling"] or "{}")})


def _message(row: dict[str, Any], images: dict[int, list[MessageImage]] | None = None) -> Message:
    values = {k: row[k] for k in MESSAGE_FIELDS}
    values["sources"] = sources_from_json(row.get("sources"))
    values["shown"] = bool(row["shown"])
    return Message(**values, images=tuple((images or {}).get(row["id"], ())))


class ConversationRepository:
    def __init__(self, store: Store) -> None:
        self.store = store

    # Conversations -------------------------------------------------------------------

    def create(self, *, title: str = "", model: str | None = None, system_prompt: str = "",
               sampling: dict[str, Any] | None = None, library_id: int | None = None) -> Conversation:
        stamp = now()
        with self.store.write() as db:
            cursor = db.execute(
                "INSERT INTO conversations (title, model, library_id, system_prompt, sampling, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [title, model, library_id, system_prompt, json.dumps(sampling or {}), stamp, stamp],
            )
            new_id = cursor.lastrowid
        return self.get(new_id)

    def insert_whole(self, *, title: str, model: str | None, system_prompt: str, sampling: dict[str, Any],
                     messages: list[dict[str, Any]]) -> Conversation:
        """A conversation with all its messages, in one transaction (an import). A message's
        ``alternative_of`` is the position in ``messages`` of its group's first reply; its
        ``images``, ``ImageRef``s of images already stored."""
        stamp = now()
        with self.store.write() as db:
            new_id = db.execute(
                "INSERT INTO conversations (title, model, system_prompt, sampling, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?)", [title, model, system_prompt, json.dumps(sampling), stamp, stamp],
            ).lastrowid
            ids: list[int] = []
            for m in messages:
                values = {"created_at": stamp, "updated_at": stamp, **m, "conversation_id": new_id}
                images = values.pop("images", ())
                if values.get("alternative_of") is not None:  # a position in ``messages``: its id now
                    values["alternative_of"] = ids[values["alternative_of"]]
                ids.append(_insert_message(db, values))
                _link_images(db, ids[-1], images)
        return self.get(new_id)

    def get(self, conversation_id: int) -> Conversation:
        rows = list(self.store.read().query(f"{_CONVERSATION_SELECT} WHERE c.id = ?", [conversation_id]))
        if not rows:
            raise NotFound(f"There is no conversation {conversation_id}. 'enclave history list' shows them.")
        return _conversation(rows[0])

    def recent(self, limit: int = 50, offset: int = 0) -> list[Conversation]:
        """Newest first (by last activity)."""
        rows = self.store.read().query(
            f"{_CONVERSATION_SELECT} ORDER BY c.updated_at DESC, c.id DESC LIMIT ? OFFSET ?", [limit, offset])
        return [_conversation(r) for r in rows]

    def count(self) -> int:
        return self.store.read().execute("SELECT count(*) FROM conversations").fetchone()[0]

    def update(self, conversation_id: int, **fields: Any) -> Conversation:
        allowed = {"title", "model", "library_id", "system_prompt", "sampling"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"cannot update {unknown}")
        if "sampling" in fields:
            fields["sampling"] = json.dumps(fields["sampling"])
        self.get(conversation_id)
        with self.store.write() as db:
            assignments = ", ".join(f"{k} = ?" for k in fields)
            db.execute(f"UPDATE conversations SET {assignments}, updated_at = ? WHERE id = ?",
                       [*fields.values(), now(), conversation_id])
        return self.get(conversation_id)

    def rename(self, conversation_id: int, title: str) -> Conversation:
        return self.update(conversation_id, title=title.strip())

    def delete(self, conversation_id: int) -> None:
        """The conversation, its messages, and the images no other message shows."""
        self.get(conversation_id)
        with self.store.write() as db:
            shown = _images_of(db, "SELECT id FROM messages WHERE conversation_id = ?", [conversation_id])
            db.execute("DELETE FROM conversations WHERE id = ?", [conversation_id])
            _collect_images(db, shown)

    # Messages --------------------------------------------------------------------------

    def add_message(self, conversation_id: int, role: str, content: str, *, images: Sequence[ImageRef] = (),
                    **fields: Any) -> Message:
        """A new message; ``images``: stored images (``app.image_store``) it shows, in order."""
        stamp = now()
        values = {"conversation_id": conversation_id, "role": role, "content": content, "created_at": stamp,
                  "updated_at": stamp, **fields}
        if "sources" in values:
            values["sources"] = sources_json(values["sources"])
        with self.store.write() as db:
            new_id = _insert_message(db, values)
            _link_images(db, new_id, images)
            db.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", [stamp, conversation_id])
        return self.message(new_id)

    def replace_from(self, conversation_id: int, message_id: int, content: str,
                     images: Sequence[ImageRef]) -> Message:
        """Edit and resend: delete ``message_id`` and every later message, then add a user
        message with ``content`` and ``images`` (which may be the deleted message's: they are
        kept), in one transaction; images no message shows any more are deleted."""
        stamp = now()
        with self.store.write() as db:
            shown = _images_of(db, "SELECT id FROM messages WHERE conversation_id = ? AND id >= ?",
                               [conversation_id, message_id])
            db.execute("DELETE FROM messages WHERE conversation_id = ? AND id >= ?", [conversation_id, message_id])
            new_id = _insert_message(db, {"conversation_id": conversation_id, "role": "user", "content": content,
                                          "created_at": stamp, "updated_at": stamp})
            _link_images(db, new_id, images)
            db.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", [stamp, conversation_id])
            _collect_images(db, shown)
        return self.message(new_id)

    def update_message(self, message_id: int, **fields: Any) -> None:
        unknown = set(fields) - set(MESSAGE_FIELDS) | ((_COMPUTED | _LINKED) & set(fields))
        if unknown or {"id", "conversation_id"} & set(fields):
            raise ValueError(f"cannot update {set(fields) & ({'id', 'conversation_id'} | unknown)}")
        stamp = now()
        with self.store.write() as db:
            assignments = ", ".join(f"{k} = ?" for k in fields)
            db.execute(f"UPDATE messages SET {assignments}, updated_at = ? WHERE id = ?",
                       [*fields.values(), stamp, message_id])
            db.execute("UPDATE conversations SET updated_at = ? WHERE id = "
                       "(SELECT conversation_id FROM messages WHERE id = ?)", [stamp, message_id])

    def delete_messages_from(self, conversation_id: int, message_id: int) -> None:
        """Delete ``message_id`` and every later message of the conversation (and the images
        no message shows any more)."""
        with self.store.write() as db:
            shown = _images_of(db, "SELECT id FROM messages WHERE conversation_id = ? AND id >= ?",
                               [conversation_id, message_id])
            db.execute("DELETE FROM messages WHERE conversation_id = ? AND id >= ?", [conversation_id, message_id])
            _collect_images(db, shown)

    def delete_message(self, message_id: int) -> None:
        """Delete one message (a reply with nothing in it, which a regenerate replaces)."""
        with self.store.write() as db:
            shown = _images_of(db, "SELECT ?", [message_id])
            db.execute("DELETE FROM messages WHERE id = ?", [message_id])
            _collect_images(db, shown)

    def message(self, message_id: int) -> Message:
        rows = list(self.store.read().query(f"{_MESSAGE_SELECT} WHERE m.id = ?", [message_id]))
        if not rows:
            raise NotFound(f"There is no message {message_id}.")
        return self._with_images(rows)[0]

    def _with_images(self, rows: Sequence[dict[str, Any]]) -> list[Message]:
        """Messages from their rows, each with its images (one query for all of them)."""
        images: dict[int, list[MessageImage]] = {}
        ids = json.dumps([r["id"] for r in rows])
        for r in self.store.read().execute(
                f"{_IMAGES_SELECT} WHERE mi.message_id IN (SELECT value FROM json_each(?))"
                " ORDER BY mi.message_id, mi.position", [ids]).fetchall():
            images.setdefault(r[0], []).append(MessageImage(r[1], r[2], r[3], r[4]))
        return [_message(r, images) for r in rows]

    def messages(self, conversation_id: int, *, limit: int | None = None, before_id: int | None = None,
                 alternatives: bool = False) -> list[Message]:
        """The conversation's messages in order, as shown (one reply of each group of
        alternatives; ``alternatives``: every reply, for an export); with ``limit``, the
        last ``limit`` before ``before_id`` (a page of a long history, scrolling up)."""
        where, params = "m.conversation_id = ?", [conversation_id]
        if not alternatives:
            where += " AND m.shown = 1"
        if before_id is not None:
            where += " AND m.id < ?"
            params.append(before_id)
        if limit is None:
            rows = self.store.read().query(f"{_MESSAGE_SELECT} WHERE {where} ORDER BY m.id", params)
            return self._with_images(list(rows))
        rows = self.store.read().query(
            f"SELECT * FROM ({_MESSAGE_SELECT} WHERE {where} ORDER BY m.id DESC LIMIT ?) ORDER BY id",
            [*params, limit])
        return self._with_images(list(rows))

    def message_ids(self, conversation_id: int) -> list[int]:
        """Only the ids of the messages shown, for a lazy list view of a long conversation."""
        return [r[0] for r in self.store.read().execute(
            "SELECT id FROM messages WHERE conversation_id = ? AND shown = 1 ORDER BY id", [conversation_id]
        ).fetchall()]

    # Alternatives ----------------------------------------------------------------------

    def alternatives(self, message_id: int) -> list[Message]:
        """Every reply of ``message_id``'s group of alternatives, oldest first."""
        group = self.message(message_id).group
        rows = self.store.read().query(
            f"{_MESSAGE_SELECT} WHERE m.id = ? OR m.alternative_of = ? ORDER BY m.id", [group, group])
        return self._with_images(list(rows))

    def set_aside(self, message_id: int) -> int:
        """Hide a reply that a new alternative is about to replace; the id of its group,
        which the new reply joins (``add_message(..., alternative_of=group)``)."""
        group = self.message(message_id).group
        with self.store.write() as db:
            db.execute("UPDATE messages SET shown = 0 WHERE id = ?", [message_id])
        return group

    def show_alternative(self, message_id: int) -> Message:
        """Make ``message_id`` the shown reply of its group (the others hidden); kept."""
        group = self.message(message_id).group
        with self.store.write() as db:
            db.execute("UPDATE messages SET shown = (id = ?) WHERE id = ? OR alternative_of = ?",
                       [message_id, group, group])
        return self.message(message_id)

    def ensure_shown(self, group: int) -> None:
        """After a regenerate that added nothing (it failed before the reply began): the
        newest alternative of ``group`` is shown again, so a group is never all hidden."""
        with self.store.write() as db:
            db.execute("""UPDATE messages SET shown = 1 WHERE id = (
                              SELECT max(id) FROM messages WHERE id = ? OR alternative_of = ?)
                          AND NOT EXISTS (SELECT 1 FROM messages WHERE (id = ? OR alternative_of = ?) AND shown = 1)""",
                       [group, group, group, group])

    # Search ----------------------------------------------------------------------------

    def search(self, query: str, limit: int = 50) -> list[SearchHit]:
        """Full-text search over message content and conversation titles, newest matches
        first (FTS5 walks its index in rowid order, so a word found in every message
        costs no more than a rare one). The query is plain words: FTS syntax characters
        (quotes, *, -, NEAR, parentheses) are taken literally and never raise."""
        db = self.store.read()
        words = [w for w in query.replace('"', " ").split() if w]
        if not words:
            return []
        match = db.quote_fts(" ".join(words))
        hits = [
            SearchHit(r["conversation_id"], r["title"], r["id"], r["role"], r["snippet"], r["updated_at"])
            for r in db.query(
                """SELECT m.id, m.conversation_id, m.role, c.title, c.updated_at,
                          snippet(messages_fts, 0, '[', ']', '…', 12) AS snippet
                   FROM messages_fts JOIN messages m ON m.rowid = messages_fts.rowid
                   JOIN conversations c ON c.id = m.conversation_id
                   WHERE messages_fts MATCH ? ORDER BY messages_fts.rowid DESC LIMIT ?""", [match, limit])
        ]
        titles = [
            SearchHit(r["id"], r["title"], None, None, r["snippet"], r["updated_at"])
            for r in db.query(
                """SELECT c.id, c.title, c.updated_at, highlight(conversations_fts, 0, '[', ']') AS snippet
                   FROM conversations_fts JOIN conversations c ON c.rowid = conversations_fts.rowid
                   WHERE conversations_fts MATCH ? ORDER BY conversations_fts.rowid DESC LIMIT ?""",
                [match, limit])
        ]
        return titles + hits


def _insert_message(db: Database, values: dict[str, Any]) -> int:
    """One row of ``messages`` from column → value (raw SQL: it runs inside the caller's transaction)."""
    cursor = db.execute(f"INSERT INTO messages ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                        list(values.values()))
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def _link_images(db: Database, message_id: int, images: Sequence[ImageRef]) -> None:
    """``message_id`` shows ``images`` (already in ``images``), in order."""
    for position, (sha256, name) in enumerate(images):
        try:
            db.execute("INSERT INTO message_images (message_id, position, sha256, name) VALUES (?, ?, ?, ?)",
                       [message_id, position, sha256, name])
        except sqlcipher.INTEGRITY_ERRORS as exc:  # the foreign key: not (or no longer) stored
            raise ImageMissingError(f"The image {name or sha256[:12]} is no longer in Enclave's database (it was "
                                    "attached long ago and cleared away); attach it again.") from exc


def _images_of(db: Database, message_ids_sql: str, params: list[Any]) -> list[str]:
    """The images the messages ``message_ids_sql`` selects show (before they are deleted)."""
    return [r[0] for r in db.execute(
        f"SELECT DISTINCT sha256 FROM message_images WHERE message_id IN ({message_ids_sql})", params).fetchall()]


def _collect_images(db: Database, candidates: list[str]) -> None:
    """Messages showing ``candidates`` were deleted: delete the images no message shows any
    more (``app.image_store.delete_unused``: not one attached within the last hour, which may
    be in a message being written)."""
    if candidates:
        delete_unused(db)
