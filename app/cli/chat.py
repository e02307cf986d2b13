"""``enclave chat``: an interactive chat in the terminal, stored like any other."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from app.chat import (
    ContextRaised,
    ContextTrimmed,
    LibraryNote,
    ModelLoaded,
    ModelLoading,
    PromptProgress,
    ReplyDelta,
    ReplyFinished,
)
from app.cli.common import NO_DRAFT, Cancellable, cli, note_guessed_chat_format, user_errors
from app.cli.run import IMAGE, PromptLine
from app.conversations import Conversation, ImageRef, Message
from app.library_chat import LibraryCounting
from app.services import Services
from inference.errors import EnclaveError

HELP = "Type a message and press Enter. /image PATH attaches an image to your next message, /new starts a new " \
       "chat, /regen answers again, /exit leaves. Ctrl-C stops a reply."


@cli.command()
@click.option("--model", default=None, help="The model file (default: the default_model setting).")
@click.option("--conversation", "conversation_id", type=int, default=None, help="Continue this conversation.")
@click.option("--system", default=None, help="A system prompt for a new conversation.")
@click.option("--library", "library_name", default=None, help="Chat about a document library.")
@click.option("--no-reasoning", is_flag=True, help="Hide a reasoning model's thinking.")
@IMAGE
@NO_DRAFT
@user_errors
def chat(model: str | None, conversation_id: int | None, system: str | None, library_name: str | None,
         no_reasoning: bool, image_files: tuple[Path, ...], no_draft: bool) -> None:
    """Chat with a model in the terminal. The conversation is saved as you go. --image files
    go with your first message; /image PATH attaches one to the next."""
    with Services.open() as services:
        if no_draft:
            services.session_settings["drafting"] = False
        attached: list[ImageRef] = services.add_images(image_files)  # for the next message
        library_id = services.libraries.get(library_name).id if library_name else None
        conversation = _open_conversation(services, model, conversation_id, system, library_id)
        click.echo(f"Chat {conversation.id} with {conversation.model}. {HELP}", err=True)
        show_reasoning = not no_reasoning and services.current_settings().show_reasoning
        noted: set[str] = set()  # models whose guessed chat format was pointed out
        while True:
            try:
                line = input("> " if sys.stdin.isatty() else "")
            except (EOFError, KeyboardInterrupt):
                click.echo("", err=True)
                return
            text = line.strip()
            if not text:
                continue
            if text in ("/exit", "/quit"):
                return
            if text == "/new":
                conversation = services.chat.start(model=conversation.model, system_prompt=conversation.system_prompt,
                                                   library_id=conversation.library_id)
                click.echo(f"New chat {conversation.id}.", err=True)
                continue
            if text == "/image" or text.startswith("/image "):
                attached += attach_image(services, text.removeprefix("/image").strip())
                continue
            if text == "/regen":
                events = services.chat.regenerate(conversation.id)
            else:
                events = services.chat.send(conversation.id, text, images=attached)
                attached = []
            try:
                show_reply(events, services.chat.cancel, show_reasoning)
            except EnclaveError as exc:  # one turn failed: say so, keep chatting
                click.echo(f"enclave: error: {exc}", err=True)
            note_guessed_format(services, conversation.model, noted)


def attach_image(services: Services, path: str) -> list[ImageRef]:
    """``/image PATH``: the image read and kept for the next message, or why not (the chat goes on)."""
    if not path:
        click.echo("Type /image and the path of an image file.", err=True)
        return []
    file = Path(path.strip("'\"")).expanduser()
    if not file.is_file():
        click.echo(f"enclave: error: there is no file {file}.", err=True)
        return []
    try:
        images = services.add_images([file])
    except EnclaveError as exc:
        click.echo(f"enclave: error: {exc}", err=True)
        return []
    click.echo(f"(Attached {', '.join(image.name for image in images)}: it goes with your next message.)",
               err=True)
    return images


def note_guessed_format(services: Services, model: str, noted: set[str]) -> None:
    """Say once per model (``noted``) that the loaded model's chat format is a guess."""
    loaded = services.runtime.model
    if loaded is not None and loaded.chat_format_guessed and model not in noted:
        noted.add(model)
        note_guessed_chat_format(model, guessed=True)


def _open_conversation(services: Services, model: str | None, conversation_id: int | None,
                       system: str | None, library_id: int | None) -> Conversation:
    if conversation_id is not None:
        conversation = services.conversations.get(conversation_id)
        if model and model != conversation.model:
            conversation = services.conversations.update(conversation_id, model=model)
        for message in services.conversations.messages(conversation_id, limit=6):
            click.echo(f"{message.role}: {message.content}", err=True)
        return conversation
    conversation = services.chat.start(model=model, system_prompt=system, library_id=library_id)
    if not conversation.model:
        services.conversations.delete(conversation.id)
        raise EnclaveError("No model chosen. Pass --model PATH, or set a default with "
                           "'enclave settings set default_model PATH'.")
    return conversation


def show_counting(event: LibraryCounting) -> None:
    """'Counting the library's tokens 3 / 8 documents' on a terminal as it goes; elsewhere
    one line when done."""
    if sys.stderr.isatty():
        click.echo(f"\r\033[K{event.describe()}", err=True, nl=event.done >= event.total)
    elif event.done >= event.total:
        click.echo(f"({event.describe()})", err=True)


def show_reply(events: object, cancel: object, show_reasoning: bool) -> Message | None:
    """Stream a reply to the terminal; returns the stored reply."""
    progress = PromptLine()
    in_reasoning = False
    finished: Message | None = None
    stream = Cancellable(events, cancel)  # type: ignore[arg-type]
    for event in stream:
        if isinstance(event, LibraryNote):
            click.echo(f"({event.text})", err=True)
        elif isinstance(event, LibraryCounting):
            show_counting(event)
        elif isinstance(event, ModelLoading | ModelLoaded):
            show_loading(event)
        elif isinstance(event, ContextRaised):
            click.echo(f"({event.describe()} To keep it: enclave models config {event.model} --ctx {event.n_ctx})",
                       err=True)
        elif isinstance(event, ContextTrimmed):
            click.echo(f"(Left out {event.dropped} earlier messages so the chat fits the model's "
                       f"{event.n_ctx:,}-token context.)", err=True)
        elif isinstance(event, PromptProgress):
            progress.show(event)
        elif isinstance(event, ReplyDelta):
            progress.clear()
            if event.reasoning and show_reasoning:
                click.echo(click.style(event.reasoning, dim=True), nl=False)
                in_reasoning = True
            if event.answer:
                if in_reasoning:
                    click.echo("\n")
                    in_reasoning = False
                click.echo(event.answer, nl=False)
        elif isinstance(event, ReplyFinished):
            finished = message = event.message
            click.echo("")
            if message.status == "error":
                click.echo(f"enclave: error: {message.error}", err=True)
            elif message.stop_reason == "cancelled" or stream.interrupted:
                click.echo("[stopped]", err=True)
            if message.alternatives > 1:
                click.echo(f"(Reply {message.alternative} of {message.alternatives}: the earlier ones are kept; "
                           "the window switches between them.)", err=True)
    return finished


def show_loading(event: ModelLoading | ModelLoaded) -> None:
    """'Loading model.gguf…' on a terminal while the model loads, gone once it has."""
    if not sys.stderr.isatty():
        return
    if isinstance(event, ModelLoading):
        click.echo(f"\r\033[KLoading {Path(event.model).name}…", err=True, nl=False)
    else:
        click.echo("\r\033[K", err=True, nl=False)
