"""Images: the cost of reading one through Enclave against plain libmtmd, and of asking again.

Both sides load the same model and projector in this process with the same context settings
and read the same prompt (a chat turn with one image): plain is llama-cpp-python's libmtmd
bindings as its own example uses them (``mtmd_tokenize`` + ``mtmd_helper_eval_chunks``);
Enclave is ``Engine.chat_tokens`` + ``Engine.generate`` (a prefill: ``max_tokens=0``). Runs
alternate, so machine noise hits both alike. Printed:

1. prompt seconds through Enclave ÷ plain (target: <= 1.05);
2. a second question about the same image ÷ the first (the image's KV cells are kept from
   turn to turn instead of encoding it again; target: well under 0.5).

    python bench/vision.py [--runs 5]

It writes the benchmark model of ``tests/tiny_models.py`` and a projector of its width with
784 patches (196 image tokens) and 4 transformer blocks (``tests/tiny_projector.py``): random weights, so the
cost is real and the answers are not.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

if not __package__:  # run as a file rather than with -m: the repository root holds tests/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import llama_cpp
import numpy as np
from llama_cpp import mtmd_cpp as mtmd
from PIL import Image

from inference.engine import Engine
from inference.llama_log import LlamaLog
from inference.protocol import ChatMessage, ImageInput, ModelSettings, Sampling, Stats
from tests.tiny_models import BENCH, write_tiny_model
from tests.tiny_projector import write_tiny_projector

N_CTX = 2048
THREADS = 2
PREFILL = Sampling(temperature=0, max_tokens=0, draft=False)


def photo(seed: int) -> ImageInput:
    pixels = np.random.default_rng(seed).integers(0, 255, (392, 392, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return ImageInput(buffer.getvalue(), hashlib.sha256(buffer.getvalue()).hexdigest())


def enclave_seconds(engine: Engine, messages: tuple[ChatMessage, ...]) -> tuple[float, int]:
    """Seconds from the messages to the prompt in the KV cache (the image decoded and
    prepared, as plain's time counts it too), and the prompt's tokens found cached."""
    started = time.perf_counter()
    *_, stats = engine.generate(engine.chat_tokens(messages), PREFILL)
    assert isinstance(stats, Stats)
    return time.perf_counter() - started, stats.cached_tokens


def plain_seconds(model_path: Path, projector: Path, prompt: str, image: ImageInput) -> float:
    """libmtmd as llama-cpp-python exposes it, on a fresh context (nothing cached)."""
    params = llama_cpp.llama_model_default_params()
    model = llama_cpp.llama_model_load_from_file(str(model_path).encode(), params)
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx, cparams.n_batch, cparams.n_threads, cparams.n_threads_batch = N_CTX, 512, THREADS, THREADS
    cparams.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
    ctx = llama_cpp.llama_init_from_model(model, cparams)
    mparams = mtmd.mtmd_context_params_default()
    mparams.use_gpu, mparams.n_threads, mparams.print_timings = False, THREADS, False
    mctx = mtmd.mtmd_init_from_file(str(projector).encode(), model, mparams)
    try:
        started = time.perf_counter()
        buffer = (ctypes.c_uint8 * len(image.png)).from_buffer_copy(image.png)
        bitmap = mtmd.mtmd_helper_bitmap_init_from_buf(mctx, buffer, len(image.png), False)
        text = mtmd.mtmd_input_text()
        data = prompt.encode()
        text.text, text.text_len, text.add_special, text.parse_special = data, len(data), True, True
        chunks = mtmd.mtmd_input_chunks_init()
        assert mtmd.mtmd_tokenize(mctx, chunks, ctypes.byref(text), (ctypes.c_void_p * 1)(bitmap), 1) == 0
        end = llama_cpp.llama_pos(0)
        assert mtmd.mtmd_helper_eval_chunks(mctx, ctx, chunks, 0, 0, 512, True, ctypes.byref(end)) == 0
        seconds = time.perf_counter() - started
        mtmd.mtmd_input_chunks_free(chunks)
        mtmd.mtmd_bitmap_free(bitmap)
        return seconds
    finally:
        mtmd.mtmd_free(mctx)
        llama_cpp.llama_free(ctx)
        llama_cpp.llama_model_free(model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    log = LlamaLog()
    log.install()
    with tempfile.TemporaryDirectory() as folder:
        model = write_tiny_model(Path(folder) / "bench-moe.gguf", BENCH)
        projector = write_tiny_projector(Path(folder) / "mmproj-bench.gguf", BENCH.n_embd, image_size=392,
                                         patch_size=14, pool=2, vision_embd=384, blocks=4)
        settings = ModelSettings(str(model), n_ctx=N_CTX, n_threads=THREADS, flash_attn=False,
                                 projector_path=str(projector), projector_gpu=False)
        enclave, plain, again = [], [], []
        with Engine(settings, log) as engine:
            for run in range(args.runs):
                image = photo(run)  # a new image each run: nothing cached from the run before
                first = (ChatMessage("user", "What is in this picture?", images=(image,)),)
                # the same text with libmtmd's own marker where Enclave puts its (marker, newline, text)
                marked = ChatMessage("user", mtmd.mtmd_default_marker().decode() + "\nWhat is in this picture?")
                prompt = engine.render_chat((marked,))
                plain.append(plain_seconds(model, projector, prompt, image))
                enclave.append(enclave_seconds(engine, first)[0])
                second = (*first, ChatMessage("assistant", "A picture."), ChatMessage("user", "And its colours?"))
                seconds, cached = enclave_seconds(engine, second)
                again.append(seconds)
                print(f"run {run + 1}: plain {plain[-1]:.3f} s, Enclave {enclave[-1]:.3f} s, again {seconds:.3f} s "
                      f"({cached} tokens cached)", flush=True)
        print(f"image prompt, median of {args.runs}: Enclave {statistics.median(enclave):.3f} s, "
              f"plain libmtmd {statistics.median(plain):.3f} s")
        print(f"ratio Enclave / plain: {statistics.median(enclave) / statistics.median(plain):.3f}")
        print(f"second question about the same image: {statistics.median(again):.3f} s = "
              f"{statistics.median(again) / statistics.median(enclave):.3f} of the first")


if __name__ == "__main__":
    main()
