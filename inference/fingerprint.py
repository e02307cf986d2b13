"""A cheap identity for a model file's exact bytes, without hashing gigabytes.

SHA-256 of the size and the first and last MiB: the header (metadata, tensor table) and
the tail of the tensor data. Two files that agree on those are, in practice, the same
weights; the model registry's full SHA-256 is the proof, this is the everyday key for
caches (token counts, saved KV states) that must never mix two models up.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

FINGERPRINT_BYTES = 1 << 20


def model_fingerprint(path: Path) -> str:
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        digest.update(f.read(FINGERPRINT_BYTES))
        f.seek(max(0, size - FINGERPRINT_BYTES))
        digest.update(f.read(FINGERPRINT_BYTES))
    return digest.hexdigest()[:32]
