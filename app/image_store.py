"""The one place that reads and writes the ``images`` table (migration 0016).

Each image is kept once, by the SHA-256 of the PNG Enclave re-encoded it as (``app.images``):
the user's file itself is never stored. Images live in the database, so an encrypted database
covers them too. Which message shows which image is ``message_images`` (``app.conversations``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from app.images import SanitizedImage
from app.store import Store
from inference.errors import EnclaveError


class ImageMissingError(EnclaveError):
    """An image a conversation or a library refers to is not in the database."""


@dataclass(frozen=True)
class StoredImage:
    sha256: str  # of the sanitized PNG: the image's identity
    width: int
    height: int


class ImageStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def add(self, image: SanitizedImage) -> StoredImage:
        """Keep ``image`` (a sanitized PNG); adding the same image again keeps the one row."""
        added_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self.store.write() as db:
            db.execute("INSERT OR IGNORE INTO images (sha256, png, width, height, added_at) VALUES (?, ?, ?, ?, ?)",
                       [image.sha256, image.png, image.width, image.height, added_at])
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
