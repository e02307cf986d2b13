"""Images for vision models, through llama.cpp's multimodal library (libmtmd).

A vision model is a language model plus a *projector* (``mmproj-*.gguf``): an image
encoder whose output is a run of embeddings the language model reads like tokens. ``Vision``
holds the projector beside the engine's model. The chat template is rendered with a marker
where each image goes (a random one per model load, so no text a user writes can place an
image); the rendered prompt is cut at the markers and handed to libmtmd as text and image
parts, which gives text tokens and image chunks.

In the engine's token list each image is a run of its *image token*
(inference/image_tokens.py). An image's run is evaluated by libmtmd's helper (encode, then
decode the embeddings; Gemma 3's image tokens attend to each other both ways).

Projectors whose image positions are 2-D (M-RoPE: Qwen2-VL, Qwen2.5-VL, Qwen3-VL) give an
image fewer positions than tokens; the engine's positions are its token indices, so those
projectors are refused at load with a sentence saying so.
"""

from __future__ import annotations

import ctypes
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

import llama_cpp
from llama_cpp import mtmd_cpp as mtmd

from inference.errors import EnclaveError, ModelLoadError
from inference.image_tokens import FIRST_IMAGE_TOKEN
from inference.llama_log import LlamaLog
from inference.protocol import ChatMessage, ImageInput

_CHUNK_IMAGE = 1  # MTMD_INPUT_CHUNK_TYPE_IMAGE


class Vision:
    """A projector loaded for ``model`` (a llama.cpp model pointer)."""

    def __init__(self, projector: Path, model: ctypes.c_void_p, *, n_threads: int, use_gpu: bool,
                 log: LlamaLog) -> None:
        if not projector.is_file():
            raise ModelLoadError(f"The vision projector {projector} is missing. Import the model again with its "
                                 "projector (enclave models import MODEL --mmproj FILE).")
        params = mtmd.mtmd_context_params_default()
        params.use_gpu = use_gpu
        params.n_threads = n_threads
        params.print_timings = False
        params.warmup = True
        mark = log.mark()
        self._ctx = mtmd.mtmd_init_from_file(os.fsencode(projector), model, params)
        if not self._ctx:
            said = [line for line in log.since(mark) if "error" in line.lower() or "hint" in line.lower()]
            reason = "; ".join(line.split(": ", 1)[-1].strip() for line in said[-2:]) or "see the log"
            raise ModelLoadError(f"llama.cpp could not load the vision projector {projector.name}: {reason}. "
                                 "Use the projector made for this model.", tuple(log.since(mark)[-20:]))
        self._runs: dict[int, mtmd.mtmd_input_chunk_p] = {}  # image token -> its chunk (last tokenize)
        self.lengths: dict[int, int] = {}  # image token -> how many tokens its chunk takes
        self.image_of: dict[int, str] = {}  # image token -> the image (and its occurrence) it is part of
        try:
            if not mtmd.mtmd_support_vision(self._ctx):
                raise ModelLoadError(f"{projector.name} is a projector for sound, not images: Enclave reads images "
                                     "only.")
            if mtmd.mtmd_decode_use_mrope(self._ctx):
                raise ModelLoadError(
                    f"{projector.name} places image tokens in two dimensions (M-RoPE, as Qwen2-VL and its successors "
                    "do), which Enclave does not support yet. Load the model without its projector to use it for "
                    "text, or use a vision model of another family (Gemma 3, Mistral Small 3.1, Llama 4, SmolVLM, "
                    "InternVL, LLaVA)."
                )
        except ModelLoadError:
            self.close()
            raise
        self.marker = f"<__enclave_image_{secrets.token_hex(8)}__>"
        self._ids: dict[str, int] = {}  # image SHA-256 -> its image token, for this load

    def close(self) -> None:
        self._free_runs()
        if self._ctx:
            mtmd.mtmd_free(self._ctx)
            self._ctx = None

    def _free_runs(self) -> None:
        for chunk in self._runs.values():
            mtmd.mtmd_input_chunk_free(chunk)
        self._runs = {}

    def mark(self, message: ChatMessage) -> ChatMessage:
        """``message`` with a marker for each of its images before its text (where llama.cpp's
        server puts them too); the images themselves stay on the message."""
        if not message.images:
            return message
        marks = "".join(self.marker + "\n" for _ in message.images)
        return ChatMessage(message.role, marks + message.content, message.reasoning, message.images)

    def _image_token(self, key: str) -> int:
        return self._ids.setdefault(key, FIRST_IMAGE_TOKEN - len(self._ids))

    def tokenize(self, text: str, images: Sequence[ImageInput], *, add_special: bool) -> list[int]:
        """``text`` (a rendered prompt holding one marker per image, in order) as tokens. An
        image is one chunk of image tokens, or several when its projector cuts large images
        into tiles (SmolVLM, Llama 4, InternVL, MiniCPM-V: an overview, then each tile); each
        chunk is a run of its own image token, named by the image's SHA-256, which time the
        image appears in the prompt, and which chunk of it this is."""
        pieces = text.split(self.marker)
        if len(pieces) != len(images) + 1:
            raise EnclaveError(f"The chat template kept {len(pieces) - 1} of the {len(images)} images in the prompt; "
                               "this model's template cannot show images.")
        keep: list[object] = []  # ctypes objects libmtmd reads until tokenize returns
        parts: list[mtmd.mtmd_input_part] = []
        bitmaps: list[int] = []
        seen: dict[str, int] = {}  # times each image appeared before in this prompt
        chunks = mtmd.mtmd_input_chunks_init()
        try:
            for i, piece in enumerate(pieces):
                if piece:
                    data = piece.encode()
                    entry = mtmd.mtmd_input_text()
                    entry.text, entry.text_len = data, len(data)
                    entry.add_special, entry.parse_special = False, True
                    keep += [data, entry]
                    parts.append(mtmd.mtmd_input_part(ctypes.pointer(entry), None))
                if i < len(images):
                    occurrence = seen[images[i].sha256] = seen.get(images[i].sha256, -1) + 1
                    bitmap = self._bitmap(images[i], i, f"{images[i].sha256}#{occurrence}")
                    bitmaps.append(bitmap)
                    parts.append(mtmd.mtmd_input_part(None, bitmap))
            pointers = (ctypes.POINTER(mtmd.mtmd_input_part) * len(parts))(*(ctypes.pointer(p) for p in parts))
            rc = mtmd.mtmd_tokenize_from_parts(self._ctx, chunks, pointers, len(parts), add_special)
            if rc != 0:
                raise EnclaveError(f"llama.cpp could not prepare the images of this prompt (mtmd_tokenize returned "
                                   f"{rc}).")
            return self._tokens(chunks)
        finally:
            mtmd.mtmd_input_chunks_free(chunks)
            for bitmap in bitmaps:
                mtmd.mtmd_bitmap_free(bitmap)

    def _bitmap(self, image: ImageInput, index: int, name: str) -> int:
        buffer = (ctypes.c_uint8 * len(image.png)).from_buffer_copy(image.png)
        bitmap = mtmd.mtmd_helper_bitmap_init_from_buf(self._ctx, buffer, len(image.png), False)
        if not bitmap:
            raise EnclaveError(f"Image {index + 1} of this prompt could not be decoded; add it to the chat again.")
        mtmd.mtmd_bitmap_set_id(bitmap, name.encode())  # every chunk made of the image carries it
        return bitmap

    def _tokens(self, chunks: mtmd.mtmd_input_chunks_p) -> list[int]:
        self._free_runs()
        self.image_of = {}
        tokens: list[int] = []
        chunks_of: dict[str, int] = {}  # image chunks seen so far of each image occurrence
        for i in range(mtmd.mtmd_input_chunks_size(chunks)):
            chunk = mtmd.mtmd_input_chunks_get(chunks, i)
            if mtmd.mtmd_input_chunk_get_type(chunk) == _CHUNK_IMAGE:
                name = (mtmd.mtmd_input_chunk_get_id(chunk) or b"").decode()
                index = chunks_of[name] = chunks_of.get(name, -1) + 1
                token = self._image_token(f"{name}/{index}")
                self._runs[token] = mtmd.mtmd_input_chunk_copy(chunk)
                self.lengths[token] = mtmd.mtmd_input_chunk_get_n_tokens(chunk)
                self.image_of[token] = name
                tokens += [token] * self.lengths[token]
            else:
                count = ctypes.c_size_t(0)
                ids = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(count))
                text = ids[: count.value]
                if any(t < 0 for t in text):  # llama.cpp's lookup of a marker token found none
                    raise EnclaveError("This model's vocabulary lacks the tokens its projector marks images with: "
                                       "the projector was made for another model.")
                tokens += text
        return tokens

    def evaluate(self, lctx: ctypes.c_void_p, token: int, first_pos: int, n_batch: int) -> int:
        """Encode the image of ``token`` and decode its embeddings into sequence 0 from
        ``first_pos``; returns how many positions it took."""
        chunk = self._runs.get(token)
        if chunk is None:
            raise EnclaveError("An image of this prompt was not prepared; send the message again.")
        end = llama_cpp.llama_pos(0)
        rc = mtmd.mtmd_helper_eval_chunk_single(self._ctx, lctx, chunk, first_pos, 0, n_batch, False,
                                                ctypes.byref(end))
        if rc != 0:
            raise EnclaveError(f"llama.cpp could not evaluate an image (returned {rc}).")
        return end.value - first_pos
