"""Remote models: models served elsewhere through an OpenAI-compatible ``/v1`` (another
Enclave's ``enclave serve``, llama-server, vLLM, llama-cpp-python's server), used by name
like a local model but never loaded here.

The list lives in the database (``remote_models``, migration 0014). An API key is never
stored: only the name of the environment variable holding it, read at each request.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal
from urllib.parse import urlsplit

from app.store import Store
from inference.errors import EnclaveError

ContextSource = Literal["server", "given", "default"]
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class RemoteModel:
    name: str  # what the user calls it here
    url: str  # the server's base URL, ending in /v1
    model_id: str  # what the server calls it
    key_env: str | None  # the environment variable holding its API key (None: no key)
    context_length: int
    context_source: ContextSource
    added_at: str = ""

    @property
    def where(self) -> str:
        """Where it runs, as the window and ``enclave models list`` say it: "host:port"."""
        return netloc(self.url)

    def api_key(self) -> str | None:
        """The key, read now from ``key_env``; a variable named but unset is an error a user can fix."""
        if self.key_env is None:
            return None
        key = os.environ.get(self.key_env, "").strip()
        if not key:
            raise EnclaveError(f"Remote model {self.name!r} takes its API key from ${self.key_env}, which is not set "
                               "here: set it, or add the model again with another --key-env.")
        return key


def netloc(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def base_url(url: str) -> str:
    """``url`` as the API's base: scheme, host and port checked, "/v1" added when it is not there.
    The policy's ``remote_host_refusal`` checks the same address first. An address with a user
    name or password is refused (it would be stored, listed and audited): a key goes in an
    environment variable, named with --key-env; no message repeats what came before the "@"."""
    shown = without_userinfo(url.strip())
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as exc:
        raise EnclaveError(f"{shown!r} is not a server's address ({exc}).") from None
    if "@" in parts.netloc:
        raise EnclaveError("Do not put a user name or password in the server's address: Enclave would store and "
                           "show them. Put the key in an environment variable and add the model with --key-env VAR "
                           f"(the variable's name) and the address {shown}.")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EnclaveError(f"{shown!r} is not a server's address: give it as http://HOST:PORT or https://HOST:PORT.")
    path = parts.path.rstrip("/")
    if not path.endswith("/v1"):
        path += "/v1"
    return f"{parts.scheme}://{parts.netloc}{path}"


def without_userinfo(url: str) -> str:
    """``url`` with any "user:password@" before its host taken out, to be shown."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)?[^/?#]*@", lambda m: m.group(1) or "", url, count=1)


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise EnclaveError(f"{name!r} cannot name a remote model: use letters, digits, '.', '_' or '-' "
                           "(up to 64, starting with a letter or digit).")
    return name


def check_env_name(var: str | None) -> str | None:
    if var is not None and not ENV_NAME.fullmatch(var):
        raise EnclaveError(f"{var!r} is not an environment variable's name: --key-env takes the NAME of the "
                           "variable that holds the key (e.g. GPU_BOX_KEY), never the key itself.")
    return var


class RemoteModelRegistry:
    def __init__(self, store: Store) -> None:
        self.store = store

    def all(self) -> list[RemoteModel]:
        rows = self.store.read().query("SELECT * FROM remote_models ORDER BY name")
        return [RemoteModel(**row) for row in rows]

    def find(self, name: str | None) -> RemoteModel | None:
        if not name:
            return None
        row = next(iter(self.store.read().query("SELECT * FROM remote_models WHERE name = ?", [name])), None)
        return RemoteModel(**row) if row else None

    def add(self, model: RemoteModel) -> RemoteModel:
        """Register ``model``, or replace the one of that name."""
        added = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self.store.write() as db:
            db.execute("INSERT OR REPLACE INTO remote_models (name, url, model_id, key_env, context_length, "
                       "context_source, added_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       [model.name, model.url, model.model_id, model.key_env, model.context_length,
                        model.context_source, added])
        found = self.find(model.name)
        assert found is not None
        return found

    def remove(self, name: str) -> RemoteModel:
        model = self.find(name)
        if model is None:
            known = ", ".join(m.name for m in self.all()) or "none"
            raise EnclaveError(f"No remote model {name!r} was added (remote models: {known}).")
        with self.store.write() as db:
            db.execute("DELETE FROM remote_models WHERE name = ?", [name])
        return model
