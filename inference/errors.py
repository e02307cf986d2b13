"""Errors a user can cause or meet. Each message says what happened and what to do."""

from __future__ import annotations


class EnclaveError(Exception):
    """Base of every error Enclave shows to a user as one line (CLI) or a dialog (GUI)."""


class ModelFileError(EnclaveError):
    """The model file is missing, not a GGUF, truncated or otherwise unusable."""


class GGUFError(ModelFileError):
    """A GGUF file is missing, not a GGUF, truncated, damaged or incomplete."""


class ModelLoadError(EnclaveError):
    """llama.cpp refused or failed to load the model."""

    def __init__(self, message: str, log_tail: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.log_tail = log_tail


class WorkerCrashed(ModelLoadError):
    """The worker process died (a llama.cpp abort, an out-of-memory kill)."""


class NoModelLoaded(EnclaveError):
    """A request needs a model and none is loaded."""


class ChatTemplateError(EnclaveError):
    """The model's chat template is hostile or broken."""


class PromptTooLong(EnclaveError):
    """A prompt the loaded model's context cannot hold."""
