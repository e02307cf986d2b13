"""User settings: a typed record kept in the app database, with versioned upgrades.

Stored as one JSON value per key in the ``settings`` table, plus ``schema_version``.
When a setting is renamed or its meaning changes, bump ``SETTINGS_VERSION`` and register
an upgrade function for the old version; upgrades run in order on load.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from app.store import Store
from inference.errors import EnclaveError
from inference.protocol import Sampling

SETTINGS_VERSION = 1
Upgrade = Callable[[dict[str, Any]], dict[str, Any]]
UPGRADES: dict[int, Upgrade] = {}  # from version N to N + 1


@dataclass(frozen=True)
class Settings:
    default_model: str | None = None
    context_length: int = 8192
    threads: int | None = None  # None: all cores
    temperature: float = 0.7
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    max_tokens: int = 2048
    system_prompt: str = ""
    show_reasoning: bool = True
    drafting: bool = True  # speculative decoding: tokens proposed (prompt lookup, a draft model) and checked at once
    max_document_mb: int = 50  # MiB (2**20 bytes); larger files are recorded with a reason, not read
    kv_cache_max_gb: float = 20.0  # GiB (2**30 bytes) of saved library prompt caches; least recently used go first
    offline: bool = False  # refuse even the commands that go online (pull, search); ENCLAVE_OFFLINE=1 too
    # isolated: each library document's KV cache is encoded alone and kept as a block, so a
    # document added, removed or moved costs only itself; joint: the library in one pass
    library_attention: str = "isolated"
    # Settings → "Serve on this network": the OpenAI-compatible API served by the window itself
    serve_at_start: bool = False  # start serving when Enclave opens
    serve_host: str = "127.0.0.1"  # loopback, "0.0.0.0" (every interface) or one address of this machine
    serve_port: int = 8080
    serve_cert: str | None = None  # TLS certificate (PEM): needed beyond loopback unless serve_insecure
    serve_key: str | None = None  # TLS private key (PEM)
    serve_insecure: bool = False  # beyond loopback without TLS (warned whenever it serves)

    def sampling(self, **overrides: Any) -> Sampling:
        base = Sampling(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p, min_p=self.min_p,
                        repeat_penalty=self.repeat_penalty, max_tokens=self.max_tokens, draft=self.drafting)
        return replace(base, **overrides)


FIELD_TYPES = {f.name: f.type for f in fields(Settings)}
RANGES: dict[str, tuple[float, float]] = {
    "context_length": (512, 10_485_760), "threads": (1, 1024), "temperature": (0, 5), "top_k": (0, 100_000),
    "top_p": (0, 1), "min_p": (0, 1), "repeat_penalty": (0.1, 10), "max_tokens": (1, 10_485_760),
    "max_document_mb": (1, 100_000), "kv_cache_max_gb": (0, 100_000), "serve_port": (1, 65535),
}

CHOICES: dict[str, tuple[str, ...]] = {"library_attention": ("isolated", "joint")}

# The unit a number is in, as the user reads it (the names keep their historical mb/gb: the
# values are MiB and GiB, 2**20 and 2**30 bytes, as everywhere else in Enclave)
UNITS: dict[str, str] = {"context_length": "tokens", "max_tokens": "tokens", "max_document_mb": "MiB",
                         "kv_cache_max_gb": "GiB", "threads": "threads"}

# What each setting does, in plain words: the desktop app's tooltips and `enclave settings`
DESCRIPTIONS: dict[str, str] = {
    "default_model": "The model a new conversation starts with. You can still pick another one in each chat.",
    "context_length": "How much text the model can keep in mind at once: the conversation, documents and its "
                      "reply together, in tokens (a token is about three quarters of a word). More context needs "
                      "more memory; a model's own profile or a library can ask for more.",
    "threads": "How many CPU cores generate text. All cores is usually fastest; use fewer to keep the computer "
               "responsive for other work.",
    "temperature": "How adventurous the wording is. Low (0.1–0.4): focused and repeatable, good for facts and "
                   "code. Higher (0.8–1.2): more varied, good for brainstorming. 0 always picks the likeliest word.",
    "top_k": "Only the k likeliest next tokens are considered. Lower is safer and more predictable, higher more "
             "varied. 40 suits most models; Off considers every token.",
    "top_p": "Only the likeliest tokens that together make up this share of the probability are considered "
             "(nucleus sampling). 0.9–0.95 is usual; 1 turns it off.",
    "min_p": "Tokens much less likely than the best one are dropped: 0.05 drops anything under 5% of the top "
             "token's chance. It cuts nonsense while keeping variety; 0 turns it off.",
    "repeat_penalty": "Makes words already used less likely, against loops. 1.0 is off; 1.05–1.15 helps a model "
                      "that repeats itself. Too high and it avoids words it needs.",
    "max_tokens": "The longest a reply may get, in tokens. A reply that reaches it stops mid-sentence; raise it "
                  "for long answers.",
    "system_prompt": "Instructions the model gets before every new conversation, for example the tone or language "
                     "to answer in. A model's own profile can replace it.",
    "show_reasoning": "Reasoning models think before they answer. On: their thinking is shown, folded, above the "
                      "answer. Off: only the answer.",
    "drafting": "Faster answers when the reply repeats text from the prompt (a library answer quoting its "
                "documents) or when the model's draft model guesses right: several words are proposed and "
                "checked at once. The model itself still chooses every word, so the reply says the same. "
                "Turn it off only to compare speeds or to save the draft model's memory.",
    "max_document_mb": "Files larger than this are listed in the library with the reason, but not read. Raise it "
                       "for very large PDFs or data files.",
    "kv_cache_max_gb": "Disk space for saved library prompts, which let a library answer at once instead of being "
                       "read again. When full, the least recently used are deleted. 0 keeps none.",
    "offline": "Never connect to the network, not even for downloads or catalog searches. Everything else works "
               "as before.",
    "library_attention": "Document by document: each document is read on its own and kept, so adding or changing "
                         "one re-reads only that one. All in one pass: documents can refer to each other while "
                         "being read, but any change re-reads the whole library.",
    "serve_at_start": "Serve the OpenAI-compatible API on this network as soon as Enclave opens (Settings → "
                      "Serve on this network).",
    "serve_host": "The address the API listens on: 127.0.0.1 is this machine only; 0.0.0.0 is every network "
                  "this machine is on; or one address of this machine.",
    "serve_port": "The port the API listens on (1–65535); 8080 unless another program uses it.",
    "serve_cert": "The TLS certificate file (PEM) the API uses beyond this machine, so prompts, replies and "
                  "keys travel encrypted.",
    "serve_key": "The TLS private key file (PEM, unencrypted) that belongs to the certificate.",
    "serve_insecure": "Serve beyond this machine without TLS: anyone on the network path can read prompts, "
                      "replies and API keys.",
}

_EXAMPLES = {"int": "a whole number", "float": "a number"}


def range_text(key: str) -> str:
    """'between 0 and 1', 'between 1 and 100,000 MiB': the values a number setting accepts."""
    low, high = (f"{n:,}" if float(n).is_integer() and abs(n) >= 1000 else f"{n:g}" for n in RANGES[key])
    unit = f" {UNITS[key]}" if key in UNITS else ""
    return f"between {low} and {high}{unit}"


def parse_value(key: str, text: str) -> Any:
    """A setting's value from the command line, checked against its type."""
    if key not in FIELD_TYPES:
        raise EnclaveError(f"There is no setting {key!r}. Settings: {', '.join(FIELD_TYPES)}.")
    kind = str(FIELD_TYPES[key])
    if text.lower() in ("none", "null", "") and "None" in kind:
        return None
    try:
        if kind.startswith(("int", "float")):
            value = int(text) if kind.startswith("int") else float(text)
            low, high = RANGES.get(key, (-math.inf, math.inf))
            if not low <= value <= high:
                raise EnclaveError(f"{key} must be {range_text(key)}, not {text}.")
            return value
        if kind.startswith("bool"):
            if text.lower() not in ("true", "false", "yes", "no", "on", "off", "1", "0"):
                raise ValueError(text)
            return text.lower() in ("true", "yes", "on", "1")
    except ValueError:
        if kind.startswith("bool"):
            raise EnclaveError(f"{key} is on or off (true or false), not {text!r}.") from None
        what = _EXAMPLES["int" if kind.startswith("int") else "float"]
        raise EnclaveError(f"{key} must be {what} {range_text(key)}, not {text!r}.") from None
    if key in CHOICES and text not in CHOICES[key]:
        raise EnclaveError(f"{key} is one of {', '.join(CHOICES[key])}, not {text!r}.")
    return text


class SettingsRepository:
    def __init__(self, store: Store) -> None:
        self.store = store

    def load(self) -> Settings:
        rows = {r["key"]: json.loads(r["value"]) for r in self.store.read().query("SELECT key, value FROM settings")}
        version = rows.pop("schema_version", SETTINGS_VERSION)
        while version < SETTINGS_VERSION:
            rows = UPGRADES[version](rows)
            version += 1
        known = {k: v for k, v in rows.items() if k in FIELD_TYPES}
        return Settings(**known)

    def save(self, settings: Settings) -> None:
        with self.store.write() as db:
            for key, value in {**asdict(settings), "schema_version": SETTINGS_VERSION}.items():
                db.execute("INSERT INTO settings (key, value) VALUES (?, ?) "
                           "ON CONFLICT(key) DO UPDATE SET value = excluded.value", [key, json.dumps(value)])

    def set(self, key: str, value: Any) -> Settings:
        updated = replace(self.load(), **{key: value})
        self.save(updated)
        return updated
