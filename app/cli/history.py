"""``enclave history``: list, show, search, export, import and delete conversations."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import click

from app.cli.common import cli, user_errors
from app.export import export_markdown, import_json
from app.services import Services
from inference.errors import EnclaveError


@cli.group()
def history() -> None:
    """Your saved conversations."""


@history.command("list")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@user_errors
def list_command(limit: int, as_json: bool) -> None:
    """Conversations, the most recent first."""
    with Services.open(readonly=True) as services:
        conversations = services.conversations.recent(limit=limit)
    if as_json:
        click.echo(json.dumps([asdict(c) for c in conversations], indent=2))
        return
    if not conversations:
        click.echo("No conversations yet. Start one with 'enclave chat --model MODEL'.")
    for c in conversations:
        model = Path(c.model).name if c.model else "-"
        click.echo(f"{c.id:>5}  {c.updated_at[:16].replace('T', ' ')}  {c.message_count:>4} msgs  "
                   f"{c.title or '(untitled)'}  [{model}]")


@history.command()
@click.argument("conversation_id", type=int)
@user_errors
def show(conversation_id: int) -> None:
    """A conversation, as Markdown (the replies shown; a reply with alternatives says how many)."""
    with Services.open(readonly=True) as services:
        conversation = services.conversations.get(conversation_id)
        click.echo(export_markdown(conversation, services.conversations.messages(conversation_id)), nl=False)


@history.command()
@click.argument("query")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@user_errors
def search(query: str, limit: int, as_json: bool) -> None:
    """Find QUERY in every message and title (plain words; the match is [marked])."""
    with Services.open(readonly=True) as services:
        hits = services.conversations.search(query, limit=limit)
    if as_json:
        click.echo(json.dumps([asdict(h) for h in hits], indent=2, ensure_ascii=False))
        return
    if not hits:
        click.echo("Nothing found.")
    for hit in hits:
        where = "title" if hit.message_id is None else f"{hit.role} #{hit.message_id}"
        snippet = hit.snippet.replace("\n", " ")
        if sys.stdout.isatty():
            snippet = snippet.replace("[", "\033[1m").replace("]", "\033[0m")
        click.echo(f"{hit.conversation_id:>5}  {hit.conversation_title}  ({where}): {snippet}")


@history.command()
@click.argument("conversation_id", type=int)
@click.option("--format", "fmt", type=click.Choice(["md", "json"]), default="md", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to this file instead of stdout.")
@user_errors
def export(conversation_id: int, fmt: str, output: Path | None) -> None:
    """Export a conversation as Markdown (to read) or JSON (complete, re-importable)."""
    with Services.open(readonly=True) as services:
        text = services.export_conversation(conversation_id, fmt, str(output.absolute()) if output else "stdout")
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"Wrote {output}", err=True)


@history.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@user_errors
def import_command(file: Path) -> None:
    """Add a conversation exported with --format json."""
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise EnclaveError(f"{file} is not a JSON export (it is not UTF-8 text).") from None
    with Services.open() as services:
        conversation = import_json(services.conversations, text)
    click.echo(f"Imported as conversation {conversation.id} ({conversation.message_count} messages).")


@history.command()
@click.argument("conversation_id", type=int)
@click.argument("title")
@user_errors
def rename(conversation_id: int, title: str) -> None:
    """Give a conversation a new title."""
    with Services.open() as services:
        services.conversations.rename(conversation_id, title)


@history.command()
@click.argument("conversation_id", type=int)
@user_errors
def delete(conversation_id: int) -> None:
    """Delete a conversation and its messages."""
    with Services.open() as services:
        title = services.conversations.get(conversation_id).title
        services.conversations.delete(conversation_id)
    click.echo(f"Deleted conversation {conversation_id} ({title or 'untitled'}).")
