"""Enclave's headless core: paths, settings, storage, services and the CLI. No Qt widgets."""

__version__ = "0.1.0"
