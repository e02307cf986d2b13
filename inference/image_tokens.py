"""Image tokens: how a prompt's images stand in the engine's list of token ids.

Each image's run of positions holds one negative id that stands for that image for the
whole load (inference/vision.py gives them out), so prompts stay lists of ints and the KV
cache's prefix reuse works across turns with images: the same picture at the same place is
the same run, and its cells are reused instead of encoded again. Pure: no llama.cpp here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

FIRST_IMAGE_TOKEN = -1000  # below llama.cpp's LLAMA_TOKEN_NULL (-1) and any other sentinel


def is_image_token(token: int) -> bool:
    return token <= FIRST_IMAGE_TOKEN


def text_tokens(tokens: Sequence[int]) -> list[int]:
    """``tokens`` without image tokens: what samplers and draft models may be shown."""
    return [t for t in tokens if t > FIRST_IMAGE_TOKEN]


def image_runs(prompt: Sequence[int], lengths: Mapping[int, int]) -> dict[int, int]:
    """Where each image's run starts in ``prompt`` and how long it is (``lengths``: each
    image token's run length; the same image twice in a row is two runs)."""
    runs: dict[int, int] = {}
    i = 0
    while i < len(prompt):
        if is_image_token(prompt[i]):
            runs[i] = lengths[prompt[i]]
            i += runs[i]
        else:
            i += 1
    return runs


def run_start(runs: Mapping[int, int], index: int) -> int:
    """``index`` moved back to the start of the image run it falls inside (a cache keeps
    whole images only), else ``index`` itself."""
    for start, length in runs.items():
        if start < index < start + length:
            return start
    return index
