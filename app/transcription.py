"""Scanned pages and images read by a library's vision model while they are added.

The isolated reader hands ``ingest`` a document's pages without text as sanitized PNGs
(``Extracted.pages_to_transcribe``); here each one goes to the library's vision model in its
own request (``Generate`` with the image and ``INSTRUCTION``, greedy), and the text that comes
back takes the page's place in the document, so page markers and citations by page work as
for any PDF. The model is loaded by its profile, once for the whole ingest; the worker's turn is
held only while a page is read, so a chat can answer between two pages (and then the model is
loaded again if the chat used another). A page the worker fails on is a warning with the reason;
the other pages still count. Cancel is asked between pages and at every event within one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

from app.extract import Extracted
from app.extract.pdf import PAGE_SEPARATOR
from app.reasoning import ReasoningSplitter
from inference.errors import EnclaveError
from inference.protocol import ChatMessage, Done, Failed, ImageInput, Sampling, Token

if TYPE_CHECKING:
    from app.images import SanitizedImage
    from app.profiles import ModelProfile
    from app.runtime import Runtime
    from app.settings import Settings

INSTRUCTION = ("Transcribe all the text on this page exactly as it is written, in reading order. Write tables as "
               "Markdown tables and keep headings, lists and line breaks. Do not translate, summarise, describe "
               "the page or add any comment: write only the page's text. If the page has no text, write nothing.")
MAX_TOKENS = 1024  # a dense page of text; a longer reply is cut, with a warning
IMAGE_SEPARATOR = "\n\n"  # between the transcriptions of several images on one page

Cancelled = Callable[[], bool]


class TranscriptionCancelled(Exception):
    """The user cancelled while a page was being read: the document is not stored."""


class PageTranscriber(Protocol):
    """Reads the text of one page image; raises ``EnclaveError`` (the reason) when it cannot."""

    model_name: str

    def transcribe(self, image: SanitizedImage, cancelled: Cancelled) -> str: ...


@dataclass
class VisionTranscriber:
    """A registered vision model reading pages through the app's one worker (``Runtime``)."""

    runtime: Callable[[], Runtime]  # asked only when a page needs reading: no worker for a text-only ingest
    model: str  # the registered model's id
    model_name: str
    profile: Callable[[], ModelProfile]
    settings: Callable[[], Settings]
    _refusal: str | None = None  # a load that failed once is not tried again for every page

    def transcribe(self, image: SanitizedImage, cancelled: Cancelled) -> str:
        if self._refusal is not None:
            raise EnclaveError(self._refusal)
        runtime = self.runtime()
        with runtime.turn():  # held for this page only
            try:
                outcome = runtime.load_profile(self.model, self.profile(), self.settings())
            except EnclaveError as exc:
                self._refusal = f"{self.model_name} could not be loaded: {exc}"
                raise EnclaveError(self._refusal) from exc
            if not outcome.info.reads_images:
                self._refusal = (f"{self.model_name} was loaded without its vision projector (its profile turns "
                                 "vision off), so it cannot read images.")
                raise EnclaveError(self._refusal)
            message = ChatMessage("user", INSTRUCTION, images=(ImageInput(image.png, image.sha256),))
            return self._read(runtime, message, cancelled)

    def _read(self, runtime: Runtime, message: ChatMessage, cancelled: Cancelled) -> str:
        splitter = ReasoningSplitter()  # a reasoning model's thinking is not the page's text
        answer: list[str] = []
        stopped = False
        for event in runtime.chat([message], Sampling(temperature=0.0, max_tokens=MAX_TOKENS)):
            if not stopped and cancelled():
                runtime.cancel()  # the worker stops at its next token
                stopped = True
            if isinstance(event, Token):
                answer.append(splitter.push(event.text).answer)
            elif isinstance(event, Failed):
                raise EnclaveError(event.message)
            elif isinstance(event, Done):
                if stopped or event.stats.stop_reason == "cancelled":
                    raise TranscriptionCancelled
                if event.stats.stop_reason == "length":
                    answer.append(splitter.finish().answer)
                    return "".join(answer).strip() + "\n\n[…]"
        if stopped:
            raise TranscriptionCancelled
        answer.append(splitter.finish().answer)
        return "".join(answer).strip()


@dataclass(frozen=True)
class Transcribed:
    document: Extracted  # with the pages' text in place and warnings for pages that failed
    pages: tuple[int, ...]  # the pages the model wrote text for


def transcribe_document(doc: Extracted, name: str, transcriber: PageTranscriber, say: Callable[[str], None],
                        cancelled: Cancelled) -> Transcribed:
    """``doc`` with each page in ``pages_to_transcribe`` read by ``transcriber`` and its text put
    at its page's place. ``say`` gets "Transcribing scan.pdf, page 3 of 12" before each page.
    Raises ``TranscriptionCancelled``."""
    by_page: dict[int, list[SanitizedImage]] = {}
    for item in doc.pages_to_transcribe:
        by_page.setdefault(item.page, []).append(item.image)
    page_count = len(doc.pages) if doc.kind == "pdf" and doc.pages else max(by_page, default=1)
    texts: dict[int, str] = {}
    warnings = list(doc.warnings)
    for number, images in by_page.items():
        if cancelled():
            raise TranscriptionCancelled
        say(f"Transcribing {name}, page {number} of {page_count}")
        parts: list[str] = []
        for image in images:
            try:
                parts.append(transcriber.transcribe(image, cancelled))
            except EnclaveError as exc:
                warnings.append(f"page {number} was not transcribed: {exc}")
        if text := IMAGE_SEPARATOR.join(p for p in parts if p):
            texts[number] = text
        elif parts:
            warnings.append(f"{transcriber.model_name} found no text on page {number}")
    text, pages = _place(doc, texts)
    return Transcribed(replace(doc, text=text, pages=pages, warnings=tuple(warnings), pages_to_transcribe=()),
                       tuple(sorted(texts)))


def _place(doc: Extracted, texts: dict[int, str]) -> tuple[str, tuple[int, ...]]:
    """The document's text with ``texts`` (page number → text) at their pages, and where each page
    now starts. A PDF keeps its text pages as they were; an image file is its pages in order."""
    if doc.kind == "pdf" and doc.pages:
        bodies = [_page_body(doc, i) for i in range(len(doc.pages))]
        bodies = [body or texts.get(n, "") for n, body in enumerate(bodies, start=1)]
    else:
        count = max(texts, default=0)
        bodies = [texts.get(n, "") for n in range(1, count + 1)]
    starts: list[int] = []
    length = 0
    for index, body in enumerate(bodies):
        if index:
            length += len(PAGE_SEPARATOR)
        starts.append(length)
        length += len(body)
    text = PAGE_SEPARATOR.join(bodies)
    return text, tuple(starts) if doc.kind == "pdf" or len(bodies) > 1 else ()


def _page_body(doc: Extracted, index: int) -> str:
    """The text of page ``index`` (0-based) without the separator before the next page."""
    start = doc.pages[index]
    end = doc.pages[index + 1] - len(PAGE_SEPARATOR) if index + 1 < len(doc.pages) else len(doc.text)
    return doc.text[start:end]
