"""``enclave models add-remote``: a model served elsewhere (an OpenAI-compatible /v1), used by name."""

from __future__ import annotations

import click

from app.cli.common import user_errors
from app.cli.registry import models
from app.services import Services


@models.command("add-remote")
@click.argument("name")
@click.argument("url")
@click.option("--key-env", metavar="VAR", default=None,
              help="The environment variable holding the server's API key (the key itself is never stored).")
@click.option("--model", "model_id", metavar="REMOTE_MODEL_ID", default=None,
              help="The model's id on the server (default: the one it serves).")
@click.option("--context", type=click.IntRange(min=1), default=None,
              help="Its context length in tokens, when the server does not say it.")
@user_errors
def add_remote(name: str, url: str, key_env: str | None, model_id: str | None, context: int | None) -> None:
    """Use a model served elsewhere — another Enclave (enclave serve), llama-server, vLLM,
    llama-cpp-python's server — as NAME. URL is its OpenAI-compatible address, e.g.
    http://gpu-box:8080 (/v1 is added). Chat, 'run' and library questions then stream from it;
    nothing is loaded here. The offline setting and the policy's remote_hosts apply."""
    with Services.open() as services:
        added = services.add_remote_model(name, url, key_env=key_env, model_id=model_id, context=context)
    m = added.model
    if not added.asked:
        click.echo(f"Added {m.name}: {m.model_id} on {m.where}, not checked (Enclave is offline).")
    else:
        click.echo(f"Added {m.name}: {m.model_id} on {m.where}.")
    if m.context_source == "server":
        click.echo(f"Context: {m.context_length:,} tokens, as the server says.")
    elif m.context_source == "given":
        click.echo(f"Context: {m.context_length:,} tokens, as given.")
    else:
        click.echo(f"Context: {m.context_length:,} tokens — the server does not say its context, so this is a "
                   "default; add it again with --context N if it differs.")

