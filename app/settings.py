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
    max_document_mb: int = 50  # larger files are recorded with a reason, not read
    kv_cache_max_gb: float = 20.0  # saved library prompt caches; least recently used go first
    offline: bool = False  # refuse even the commands that go online (pull, search); ENCLAVE_OFFLINE=1 too
    # isolated: each library document's KV cache is encoded alone and kept as a block, so a
    # document added, removed or moved costs only itself; joint: the library in one pass
    library_attention: str = "isolated"

    def sampling(self, **overrides: Any) -> Sampling:
        base = Sampling(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p, min_p=self.min_p,
                        repeat_penalty=self.repeat_penalty, max_tokens=self.max_tokens)
        return replace(base, **overrides)


FIELD_TYPES = {f.name: f.type for f in fields(Settings)}
RANGES: dict[str, tuple[float, float]] = {
    "context_length": (512, 10_485_760), "threads": (1, 1024), "temperature": (0, 5), "top_k": (0, 100_000),
    "top_p": (0, 1), "min_p": (0, 1), "repeat_penalty": (0.1, 10), "max_tokens": (1, 10_485_760),
    "max_document_mb": (1, 100_000), "kv_cache_max_gb": (0, 100_000),
}

CHOICES: dict[str, tuple[str, ...]] = {"library_attention": ("isolated", "joint")}


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
                raise EnclaveError(f"{key} must be between {low:g} and {high:g}, not {text}.")
            return value
        if kind.startswith("bool"):
            if text.lower() not in ("true", "false", "yes", "no", "on", "off", "1", "0"):
                raise ValueError(text)
            return text.lower() in ("true", "yes", "on", "1")
    except ValueError:
        raise EnclaveError(f"{key} takes a {kind.split(' ')[0]}, not {text!r}.") from None
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
