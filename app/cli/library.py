"""``enclave library ...`` and ``enclave ask``: document libraries from the terminal."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TypeVar

import click

from app.cli.chat import note_guessed_format, show_reply
from app.cli.common import KV_TYPES, NO_DRAFT, Cancellable, ProgressLine, cli, fail, user_errors
from app.ingest import IngestProgress
from app.ingest_reasons import status_text
from app.services import Services
from app.warming import NOT_SAVED, Warmth
from inference.devices import format_size
from inference.errors import EnclaveError

T = TypeVar("T")


@cli.group()
def library() -> None:
    """Document libraries: folders of files a model reads whole."""


@library.command()
@click.argument("name")
@user_errors
def create(name: str) -> None:
    """Make an empty library called NAME."""
    with Services.open() as services:
        made = services.libraries.create(name)
    click.echo(f"Created library {made.name!r}. Add files with 'enclave library add {made.name} PATH...'.")


@library.command()
@click.argument("name")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--include", multiple=True, help="Only files matching this glob (e.g. '*.pdf'). Repeatable.")
@click.option("--exclude", multiple=True, help="Skip files matching this glob (e.g. 'drafts/*'). Repeatable.")
@click.option("--create", "create_missing", is_flag=True, help="Create the library if it does not exist.")
@user_errors
def add(name: str, paths: tuple[Path, ...], include: tuple[str, ...], exclude: tuple[str, ...],
        create_missing: bool) -> None:
    """Add files and folders (recursively) to library NAME. Ctrl-C stops cleanly."""
    with Services.open() as services:
        found = services.libraries.find(name)
        if found is None and create_missing:
            found = services.libraries.create(name)
        target = found or services.libraries.get(name)
        report = services.add_to_library(target.id, paths, include=include, exclude=exclude, on_progress=_progress)
        click.echo("\r\033[K" if sys.stderr.isatty() else "", err=True, nl=False)
        click.echo(f"{target.name}: {report.summary()}.")
        for path, _reason, message in report.failed:
            click.echo(f"  not read: {message}" if path in message else f"  not read: {path}: {message}")
        _count_for_default_model(services, target.id)


def _count_for_default_model(services: Services, library_id: int) -> None:
    """Exact token counts for the default model now, while the worker is free, so its first
    question is sized from them (the window does the same after a drop)."""
    if not services.current_settings().default_model:
        return
    try:
        tokens = services.library_tokens(library_id)
    except EnclaveError as exc:
        click.echo(f"(Tokens not counted now: {exc} The first question counts them.)", err=True)
        return
    click.echo(f"Counted with {tokens.model_name}. {tokens.describe()}.")


def _progress(p: IngestProgress) -> None:
    if sys.stderr.isatty() and p.detail:
        click.echo(f"\r\033[K{p.detail}", err=True, nl=False)
    elif sys.stderr.isatty() and p.current:
        click.echo(f"\r\033[KReading {p.files_done + 1}/{p.files_total} ({format_size(p.bytes_done)} of "
                   f"{format_size(p.bytes_total)}): {Path(p.current).name}", err=True, nl=False)


@library.command()
@click.argument("name")
@click.argument("model", required=False)
@click.option("--none", "nobody", is_flag=True, help="No vision model: scans and images are recorded as unread.")
@click.option("--reread/--no-reread", default=True, show_default=True,
              help="Transcribe now the documents recorded as unread for want of a vision model.")
@user_errors
def vision(name: str, model: str | None, nobody: bool, reread: bool) -> None:
    """Choose the vision model (one imported with its projector) that transcribes library NAME's
    scanned pages and images as they are added, and read the scans left unread so far. Ctrl-C
    stops between pages; what was read stays."""
    if (model is None) == (not nobody):
        fail("Give a MODEL that reads images, or --none to record scans as unread.")
    with Services.open() as services:
        lib = services.set_library_vision(name, None if nobody else model)
        chosen = services.vision_model_name(lib)
        if chosen is None:
            click.echo(f"{lib.name}: scanned pages and images will be recorded as unread.")
            return
        unread = services.libraries.unread_scans(lib.id)
        click.echo(f"{lib.name}: scanned pages and images will be transcribed by {chosen}.")
        if not unread or not reread:
            if unread:
                click.echo(f"{len(unread)} unread scans left as they are; 'enclave library vision {lib.name} "
                           f"{model}' reads them.")
            return
        click.echo(f"Transcribing {len(unread)} unread documents…", err=True)
        stream = Cancellable(_one(lambda: services.reread_scans(lib.id, on_progress=_progress,
                                                                cancelled=lambda: stream.interrupted)),
                             services.chat.cancel)
        (report,) = list(stream)
        click.echo("\r\033[K" if sys.stderr.isatty() else "", err=True, nl=False)
        click.echo(f"{lib.name}: {report.summary()}.")
        for path, _reason, message in report.failed:
            click.echo(f"  not read: {message}" if path in message else f"  not read: {path}: {message}")
        for d in services.libraries.documents(lib.id):
            if d.transcription_note and d.path in (*report.added, *report.updated):
                click.echo(f"  {Path(d.path).name}: {d.transcription_note}")


@library.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@user_errors
def list_command(as_json: bool) -> None:
    """Your libraries."""
    with Services.open(readonly=True) as services:
        libraries = services.libraries.all()
        vision = {lib.id: services.vision_model_name(lib) for lib in libraries}
    if as_json:
        click.echo(json.dumps([asdict(lib) for lib in libraries], indent=2))
        return
    if not libraries:
        click.echo("No libraries yet. 'enclave library create NAME' makes one.")
    for lib in libraries:
        failed = f", {lib.failed} not readable" if lib.failed else ""
        scans = f", scans transcribed by {vision[lib.id]}" if vision[lib.id] else ""
        click.echo(f"{lib.name}: {lib.documents} documents{failed}, {lib.chars:,} characters{scans}")


@library.command()
@click.argument("name")
@click.option("--model", default=None, help="Count tokens with this model and size the context it needs.")
@click.option("--kv-type", type=KV_TYPES, default=None, help="KV cache type (default: the model's profile).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@user_errors
def show(name: str, model: str | None, kv_type: str, as_json: bool) -> None:
    """The documents of library NAME, what could not be read and why; with --model, the
    context the whole library needs and whether this machine holds it."""
    with Services.open(readonly=model is None) as services:
        lib = services.libraries.get(name)
        documents = services.libraries.documents(lib.id)
        sizing, counts = None, {}
        if model:
            sized = services.size_library(lib.id, model, kv_type=kv_type)  # type: ignore[arg-type]
            sizing, counts = sized.sizing, sized.per_document
        warmth = _warmth(services, lib.id, model)
        vision = services.vision_model_name(lib)
    if as_json:
        click.echo(json.dumps({
            "library": asdict(lib),
            "documents": [{**asdict(d), "tokens": counts.get(d.sha256 or "")} for d in documents],
            "sizing": None if sizing is None else {
                "library_tokens": sizing.library_tokens, "exact": sizing.exact, "needed_ctx": sizing.needed_ctx,
                "fits": sizing.fits, "summary": sizing.describe(),
                "plan": sizing.plan.as_dict() if sizing.plan else None},
            "warmth": None if warmth is None else asdict(warmth),
        }, indent=2))
        return
    click.echo(f"{lib.name}: {lib.documents} documents, {lib.chars:,} characters")
    click.echo(f"Transcribes scans with {vision}." if vision else
               f"Scans and images are recorded as unread: 'enclave library vision {lib.name} MODEL' chooses a "
               "vision model to transcribe them.")
    for d in documents:
        tokens = f"{counts[d.sha256]:>9,} tokens" if d.sha256 in counts else f"{d.chars:>9,} chars "
        state = f"  {status_text(d.error, d.error_reason)}. {d.error}" if d.error else ""
        note = f"  ({d.transcription_note})" if d.transcription_note else ""
        click.echo(f"  [{d.id}] {d.kind or '?':<8} {tokens}  {d.title or Path(d.path).name}  {d.path}{note}{state}")
    if sizing is not None:
        click.echo(sizing.describe())
    if warmth is not None:
        click.echo(warmth.describe())


def _warmth(services: Services, library_id: int, model: str | None) -> Warmth | None:
    """Whether the library is warm for ``model`` (default: the default model); None when
    there is no model to tell it for, or its file cannot be read now."""
    if not (model or services.current_settings().default_model):
        return None
    try:
        return services.library_warmth(library_id, model)
    except EnclaveError:
        return None


@library.command()
@click.argument("name")
@click.argument("document", required=False)
@user_errors
def remove(name: str, document: str | None) -> None:
    """Delete library NAME, or only DOCUMENT (its id or path) from it."""
    with Services.open() as services:
        lib = services.libraries.get(name)
        if document is None:
            services.delete_library(lib.id)
            click.echo(f"Deleted library {lib.name!r}.")
            return
        docs = services.libraries.documents(lib.id)
        match = next((d for d in docs if str(d.id) == document or d.path == document
                      or d.path == str(Path(document).absolute())), None)
        if match is None:
            raise EnclaveError(f"Library {lib.name!r} has no document {document!r}; 'enclave library show "
                               f"{lib.name}' lists them.")
        services.libraries.remove_document(match.id)
        click.echo(f"Removed [{match.id}] {match.path} from {lib.name!r}.")


@library.command()
@click.option("--clear", is_flag=True, help="Delete every saved prompt cache.")
@user_errors
def cache(clear: bool) -> None:
    """Saved KV caches of library prompts (they make the next question fast): whole
    prefixes, and per-document blocks (library_attention = isolated) by library and model."""
    with Services.open() as services:
        if clear:
            count, size = services.prompt_cache.clear()
            click.echo(f"Deleted {count} saved prompt caches ({format_size(size)}).")
            return
        entries = services.prompt_cache.entries()
        groups = services.prompt_cache.block_groups()
        cap = services.current_settings().kv_cache_max_gb
    total = sum(e.bytes for e in entries)
    click.echo(f"{len(entries)} saved prompt caches, {format_size(total)} of at most {cap:g} GiB "
               "(setting kv_cache_max_gb).")
    prefixes = [e for e in entries if e.kind == "prefix"]
    if prefixes:
        click.echo("Libraries read in one pass:")
    for e in prefixes:
        click.echo(f"  {e.library or '(deleted library)'} with {e.model}: {e.tokens:,} tokens, "
                   f"{format_size(e.bytes)}, last used {_when(e.last_used_at)}")
    if groups:
        click.echo("Document blocks (library_attention = isolated):")
    for g in groups:
        click.echo(f"  {g.library or '(deleted library)'} with {g.model}: {g.blocks} documents, {g.tokens:,} tokens, "
                   f"{format_size(g.bytes)}, last used {_when(g.last_used_at)}")


def _when(stamp: str) -> str:
    return stamp[:16].replace("T", " ")


@library.command()
@click.argument("name")
@click.option("--model", default=None, help="The model to warm it for (default: the default_model setting).")
@user_errors
def warm(name: str, model: str | None) -> None:
    """Read library NAME into the model's KV cache now and save it, so that the first
    question evaluates only itself. Ctrl-C stops (the library stays cold)."""
    with Services.open() as services:
        lib = services.libraries.get(name)
        if not services.prompt_cache.persistent:
            raise EnclaveError(f"{NOT_SAVED} A warm-up here would end with this command: open the desktop app, "
                               "which warms libraries in the background.")
        progress = ProgressLine("Warming the library")
        stream = Cancellable(_one(lambda: services.warm_library(
            lib.id, model, on_progress=progress.show, cancelled=lambda: stream.interrupted)), services.chat.cancel)
        (report,) = list(stream)
        progress.clear()
    if report.cancelled:
        fail(report.describe())
    click.echo(report.describe())


def _one(run: Callable[[], T]) -> Iterator[T]:
    """``run()``'s result as a stream of one, for ``Cancellable`` to watch Ctrl-C around it."""
    yield run()


@cli.command()
@click.argument("question")
@click.option("--library", "library_name", required=True, help="The library to answer from.")
@click.option("--model", default=None, help="The model file (default: the default_model setting).")
@click.option("--no-reasoning", is_flag=True, help="Hide a reasoning model's thinking.")
@NO_DRAFT
@user_errors
def ask(question: str, library_name: str, model: str | None, no_reasoning: bool, no_draft: bool) -> None:
    """Answer QUESTION from a whole library, with citations; saved as a conversation."""
    with Services.open() as services:
        if no_draft:
            services.session_settings["drafting"] = False
        lib = services.libraries.get(library_name)
        conversation = services.chat.start(model=model, library_id=lib.id)
        if not conversation.model:
            services.conversations.delete(conversation.id)
            raise EnclaveError("No model chosen. Pass --model PATH, or set a default with "
                               "'enclave settings set default_model PATH'.")
        show_reasoning = not no_reasoning and services.current_settings().show_reasoning
        reply = show_reply(services.chat.send(conversation.id, question), services.chat.cancel, show_reasoning)
        note_guessed_format(services, conversation.model, noted=set())
        if reply is not None and reply.status == "error":
            raise SystemExit(2)
        click.echo(f"(Saved as conversation {conversation.id}; continue with 'enclave chat --conversation "
                   f"{conversation.id}'.)", err=True)
