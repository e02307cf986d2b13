"""The body of ``Services.add_remote_model``: a remote model checked and registered.

The address is checked, the policy applied (``remote_hosts``), and — unless Enclave is
offline — the server asked once (``GET /v1/models``) that it answers, which model it serves
and, when it says, that model's context length.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.enforcement import Enforcer
from app.remote_backend import RemoteClient, RemoteError, ServedModel, admit
from app.remote_models import (
    ContextSource,
    RemoteModel,
    RemoteModelRegistry,
    base_url,
    check_env_name,
    check_name,
    netloc,
)
from inference.errors import EnclaveError

DEFAULT_CONTEXT = 4096  # a server that does not say its context, and no --context: a common size, said so


@dataclass(frozen=True)
class RemoteAdded:
    model: RemoteModel
    asked: bool  # the server was asked (False: offline, registered unchecked)
    served: tuple[str, ...]  # the models it serves


def add_remote(registry: RemoteModelRegistry, enforcer: Enforcer, *, offline: bool, name: str, url: str,
               key_env: str | None = None, model_id: str | None = None, context: int | None = None,
               taken: str | None = None) -> RemoteAdded:
    """``taken``: the local model that already answers to ``name`` (None: none does)."""
    check_name(name)
    check_env_name(key_env)
    url = base_url(url)
    if taken:
        raise EnclaveError(f"The local model {taken} already answers to {name!r}: choose another name for the "
                           "remote one, so that a prompt for one is never sent to the other.")
    if context is not None and context < 256:
        raise EnclaveError(f"--context {context} is too small for a conversation: give at least 256 tokens.")
    refusal = enforcer.policy.remote_host_refusal(url)
    if refusal is not None:
        enforcer.refuse("remote_hosts", refusal, host=netloc(url))
    draft = RemoteModel(name, url, model_id or "", key_env, context or DEFAULT_CONTEXT,
                        "given" if context else "default")
    if offline:
        if not model_id:
            admit(url, offline=True, enforcer=enforcer, what=f"remote model {name!r}")  # says why, one line
        added = registry.add(draft)
        enforcer.record("remote.added", name=name, host=added.where, model=added.model_id, checked=False)
        return RemoteAdded(added, asked=False, served=())
    served = RemoteClient(draft, enforcer, offline=False).list_models()
    chosen = _choose(served, model_id, draft)
    length, source = _context(chosen, context)
    added = registry.add(RemoteModel(name, url, chosen.id, key_env, length, source))
    enforcer.record("remote.added", name=name, host=added.where, model=added.model_id, checked=True)
    return RemoteAdded(added, asked=True, served=tuple(s.id for s in served))


def _choose(served: list[ServedModel], model_id: str | None, draft: RemoteModel) -> ServedModel:
    ids = ", ".join(s.id for s in served) or "none"
    if model_id:
        found = next((s for s in served if s.id == model_id), None)
        if found is None:
            raise RemoteError(f"The server at {draft.where} has no model {model_id!r} (it serves: {ids}).")
        return found
    if len(served) == 1:
        return served[0]
    if not served:
        raise RemoteError(f"The server at {draft.where} lists no models at /v1/models: name one with --model.")
    raise RemoteError(f"The server at {draft.where} serves several models ({ids}): choose one with --model.")


def _context(served: ServedModel, given: int | None) -> tuple[int, ContextSource]:
    """The server's word first (a --context beyond it could not be used), then --context, then the default."""
    if served.context_length:
        return (min(given, served.context_length), "given") if given else (served.context_length, "server")
    return (given, "given") if given else (DEFAULT_CONTEXT, "default")
