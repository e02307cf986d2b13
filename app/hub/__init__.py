"""Downloads from the Hugging Face hub, only when asked.

Nothing here touches the network at import (huggingface_hub itself is imported on first
use), every entry point refuses before opening a socket when Enclave works offline, and
huggingface_hub's telemetry is switched off for the process.

    repo = list_gguf("Qwen/Qwen3-30B-A3B-GGUF")          # GGUF files, sizes, SHA-256, pinned commit
    choice = choose(repo, quant="Q4_K_M")                  # one model: a file, or all its shards
    got = download(repo, choice, folder, on_progress=..., cancelled=...)   # verified, resumable
"""

from app.hub.api import endpoint, list_gguf, search
from app.hub.errors import DownloadCancelled, HubError, OfflineError, offline_enabled, refuse_if_offline
from app.hub.fetch import check_disk_space, download, safe_target
from app.hub.repos import DEFAULT_QUANT, Choice, Downloaded, HubFile, HubRepo, choose, quant_label, shard_of
from app.hub.tokens import delete_token, get_token, save_token

__all__ = [
    "DEFAULT_QUANT",
    "Choice",
    "DownloadCancelled",
    "Downloaded",
    "HubError",
    "HubFile",
    "HubRepo",
    "OfflineError",
    "check_disk_space",
    "choose",
    "delete_token",
    "download",
    "endpoint",
    "get_token",
    "list_gguf",
    "offline_enabled",
    "quant_label",
    "refuse_if_offline",
    "safe_target",
    "save_token",
    "search",
    "shard_of",
]
