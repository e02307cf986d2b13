"""The app's handle on inference: one worker process and the model loaded in it.

The CLI and the GUI both go through ``Runtime``; neither talks to the worker protocol
directly, so what a model load or a reply means is decided in one place.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from app.paths import AppPaths
from inference.engine import check_gguf_file
from inference.protocol import ChatMessage, Event, Generate, ModelInfo, ModelSettings, Sampling
from inference.worker import Worker, WorkerState


def resolve_model(model: str) -> Path:
    """The model file a user named. A path for now; the model registry adds ids."""
    path = Path(model).expanduser()
    check_gguf_file(path)
    return path.resolve()


class Runtime:
    def __init__(self, paths: AppPaths) -> None:
        self.paths = paths
        self.worker = Worker(paths.llama_log)

    @property
    def model(self) -> ModelInfo | None:
        return self.worker.info

    @property
    def state(self) -> WorkerState:
        return self.worker.state

    def load(self, model: str, settings: ModelSettings | None = None) -> ModelInfo:
        """Load ``model`` (skipped when the same file with the same settings is loaded)."""
        path = resolve_model(model)
        wanted = replace(settings or ModelSettings(path=str(path)), path=str(path))
        if self.worker.info is not None and self.worker.settings == wanted:
            return self.worker.info
        return self.worker.load(wanted)

    def chat(self, messages: Sequence[ChatMessage], sampling: Sampling) -> Iterator[Event]:
        return self.worker.generate(Generate(messages=tuple(messages), sampling=sampling))

    def complete(self, prompt: str, sampling: Sampling) -> Iterator[Event]:
        return self.worker.generate(Generate(prompt=prompt, sampling=sampling))

    def cancel(self) -> None:
        self.worker.cancel()

    def unload(self) -> None:
        self.worker.unload()

    def close(self) -> None:
        self.worker.close()
