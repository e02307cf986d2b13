"""The one place that reads and writes the ``images`` table (migration 0016).

Each image is kept once, by the SHA-256 of the PNG Enclave re-encoded it as (``app.images``):
the user's file itself is never stored. Images live in the database, so an encrypted database
covers them too. Which message shows which image is ``message_images`` (``app.conversations``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlite_utils import Database

from app.images import SanitizedImage
from app.store import Store
from inference.errors import EnclaveError

# An image no message shows is deleted once it is this old: younger ones may be attached to a
# message being written (stored when attached, linked when sent).
UNUSED_GRACE = timedelta(hours=1)
_DELETE_UNUSED = """
    DELETE FROM images WHERE added_at < ?
    AND NOT EXISTS (SELECT 1 FROM message_images mi WHERE mi.sha256 = images.sha256)"""


class ImageMissingError(EnclaveError):
    """An image a conversation or a library refers to is not in the database."""


def _stamp(moment: datetime | None = None) -> str:
    return (moment or datetime.now(timezone.utc)).isoformat(timespec="seconds")


def delete_unused(db: Database) -> None:
    """Delete the images no message shows and none attached within ``UNUSED_GRACE``: those of
    deleted conversations, and attachments never sent. Inside the caller's transaction."""
    db.execute(_DELETE_UNUSED, [_stamp(datetime.now(timezone.utc) - UNUSED_GRACE)])


@dataclass(frozen=True)
class StoredImage:
    sha256: str  # of the sanitized PNG: the image's identity
    width: int
    height: int


class ImageStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def add(self, image: SanitizedImage) -> StoredImage:
        """Keep ``image`` (a sanitized PNG); adding the same image again keeps the one row and
        renews its time (it is attached again: not garbage for another hour)."""
        with self.store.write() as db:
            db.execute("INSERT INTO images (sha256, png, width, height, added_at) VALUES (?, ?, ?, ?, ?) "
                       "ON CONFLICT (sha256) DO UPDATE SET added_at = excluded.added_at",
                       [image.sha256, image.png, image.width, image.height, _stamp()])
        return StoredImage(image.sha256, image.width, image.height)

    def get(self, sha256: str) -> StoredImage | None:
        row = self.store.read().execute("SELECT sha256, width, height FROM images WHERE sha256 = ?",
                                        [sha256]).fetchone()
        return StoredImage(row[0], row[1], row[2]) if row is not None else None

    def png(self, sha256: str) -> bytes:
        """The image's PNG bytes; ``ImageMissingError`` when it is not in the database."""
        row = self.store.read().execute("SELECT png FROM images WHERE sha256 = ?", [sha256]).fetchone()
        if row is None:
            raise ImageMissingError(f"The image {sha256[:12]}… is not in Enclave's database (it was removed, or "
                                    "the conversation was imported without it); add the image again.")
        return bytes(row[0])

    def delete_unused(self) -> None:
        """``delete_unused`` on its own (when Enclave opens its database)."""
        with self.store.write() as db:
            delete_unused(db)
