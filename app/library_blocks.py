"""A library prompt composed from per-document KV blocks (``library_attention = isolated``).

Each document is encoded once, alone, right after the library's head (the chat template's
start, the system prompt, the citation instructions), and its KV cells are saved as a block
(``PromptCache.block_key``: the weights, the cache types, the head's and the document's
tokens). A question's prompt is then composed in the worker: every block's cells loaded and
moved to their place (RoPE position shift), so the question and the answer attend to every
document while no document attended to another. Adding, removing or reordering documents
encodes only the documents new to this model; the attention work of encoding a library falls
from (Σ Lᵢ)² to Σ Lᵢ².

``joint`` — the whole library evaluated in one pass (``LibraryChat._ensure_prefix``) — is
used instead, said once, when the model's blocks cannot move (no RoPE, recurrent or hybrid
layers), when blocks cannot be saved (an encrypted database keeps no document-derived state
on disk), and silently for a library of one document, where the two are the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from app.kv_cache import PromptCache
from app.libraries import Document, document_version
from app.runtime import Runtime
from inference.errors import EnclaveError
from inference.protocol import BlockSaved, Failed, Progress, Segments

Attention = Literal["isolated", "joint"]
# Stands where the documents go in the rendered prompt (an invisible separator around a
# name): the text before it is the head every block is encoded after.
SLOT = "\u2063ENCLAVE-LIBRARY-DOCUMENTS\u2063"


class ReadingStopped(EnclaveError):
    """The user stopped the evaluation of a library prefix (a question's or a warm-up's);
    ``kept``: the documents read before the stop are kept (isolated attention)."""

    def __init__(self, message: str, *, kept: bool = False) -> None:
        super().__init__(message)
        self.kept = kept


@dataclass(frozen=True)
class AttentionChoice:
    mode: Attention
    note: str = ""  # why isolated was asked for but joint is used ("" when as asked)


class BlockComposer:
    def __init__(self, cache: PromptCache, runtime: Runtime, asked: Callable[[], str]) -> None:
        """``asked``: the ``library_attention`` setting."""
        self.cache = cache
        self.runtime = runtime
        self._asked = asked
        self._told: set[tuple[str, str]] = set()  # (model fingerprint, reason) already said

    def attention(self, documents: int) -> AttentionChoice:
        """How the loaded model reads a library of ``documents``; a fallback's reason is
        given once per model and reason, then the choice is quiet."""
        loaded = self.runtime.model
        assert loaded is not None, "load the model first"
        if self._asked() != "isolated" or documents < 2:
            return AttentionChoice("joint")
        reason = ""
        if loaded.blocks_unmovable:
            reason = f"{loaded.blocks_unmovable}"
        elif not self.cache.persistent:
            reason = "the database is encrypted, so no document's cache is saved to disk"
        if not reason:
            return AttentionChoice("isolated")
        told = (loaded.fingerprint, reason) in self._told
        self._told.add((loaded.fingerprint, reason))
        name = loaded.path.rsplit("/", 1)[-1]
        return AttentionChoice("joint", "" if told else (
            f"Read the library in one pass rather than document by document (library_attention = isolated) "
            f"with {name}: {reason}."))

    def encode_missing(self, scope: str, library_id: int, documents: Sequence[Document], segments: Segments,
                       ) -> Iterator[Progress]:
        """Encode the blocks of ``documents`` (the parts of ``segments``, in order) that
        are not saved yet, with progress over their tokens; each is saved and recorded as
        it finishes, so a stop keeps what was done. Returns the blocks' keys."""
        settings = self.runtime.worker.settings
        loaded = self.runtime.model
        assert settings is not None and loaded is not None
        keys = [PromptCache.block_key(loaded.fingerprint, settings, segments.head, part) for part in segments.parts]
        missing = []
        for key, document, part in zip(keys, documents, segments.parts, strict=True):
            if self.cache.lookup(key) is None:
                missing.append((key, document, part))
            else:
                self.cache.use_block(key, scope=scope, document=document_version(document))
        total, done = sum(len(part) for _, _, part in missing), 0
        if missing:
            yield Progress(0, total)
        self.cache.folder.mkdir(parents=True, exist_ok=True)
        for key, document, part in missing:
            for event in self.runtime.encode_block(segments.head, part, self.cache.path_for(key)):
                if isinstance(event, Progress):
                    yield Progress(done + event.done, total)
                elif isinstance(event, Failed):
                    raise EnclaveError(event.message)
                elif isinstance(event, BlockSaved) and event.cancelled:
                    raise ReadingStopped("Stopped while reading the library; the documents read so far are kept.",
                                         kept=True)
            self.cache.record_block(key, scope=scope, document=document_version(document), library_id=library_id,
                                    model=loaded.path.rsplit("/", 1)[-1], tokens=len(part))
            done += len(part)
        return keys

    def hold(self, scope: str, library_id: int, documents: Sequence[Document], segments: Segments
             ) -> Iterator[Progress]:
        """Make the worker hold the library prefix (head and every document) composed from
        blocks, encoding the missing ones first. Returns the composed prefix's key."""
        key = self.prefix_key(segments)
        if self.runtime.holds_prefix(key):
            return key
        keys = yield from self.encode_missing(scope, library_id, documents, segments)
        try:
            self._compose(keys, segments, key)
        except EnclaveError:  # a block damaged or made by another build: encode them again, once
            for block_key in keys:
                self.cache.forget(block_key)
            keys = yield from self.encode_missing(scope, library_id, documents, segments)
            self._compose(keys, segments, key)
        return key

    def prefix_key(self, segments: Segments) -> str:
        """The key of the library prefix (head and every document) composed from blocks."""
        settings, loaded = self.runtime.worker.settings, self.runtime.model
        assert settings is not None and loaded is not None
        prefix = segments.head + tuple(t for part in segments.parts for t in part)
        return PromptCache.composed_key(loaded.fingerprint, settings, prefix)

    def _compose(self, keys: Sequence[str], segments: Segments, prefix_key: str) -> None:
        blocks = [(self.cache.path_for(k), part) for k, part in zip(keys, segments.parts, strict=True)]
        self.runtime.compose_blocks(segments.head, blocks, prefix_key)
