"""Libraries, measured in one run:

1. ingestion throughput: MB/s of plain text, and PDF pages/s;
2. prompt assembly for a library of about 1 million tokens, token counts cached
   (target: under 1 s);
3. time to first token of a second question about a 20,000-token library, divided by the
   first question's (target <= 0.05), and the same after a restart, with the library's KV
   state restored from disk (target <= 0.2);
4. per-document KV blocks (library_attention = isolated), on a 20-document library of
   about 20,000 tokens: the first question after a warm-up ÷ a cold first question (target
   <= 0.05); a 1,000-token document added to the warm library, then a question ÷ a question
   on that document alone (target <= 1.5); encoding the library isolated ÷ joint (printed:
   well under 1 where attention dominates, long libraries); composing a library of 100
   cached blocks (target under 1 s plus the question).

    python bench/library.py [MODEL.gguf]

Without MODEL it writes the benchmark model of ``tests/tiny_models.py`` (6 layers, 1024
wide, 8 experts) to a temporary folder. Everything runs under a temporary ENCLAVE_HOME.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

if not __package__:  # run as a file rather than with -m: the repository root holds tests/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.chat import ReplyDelta, ReplyFinished
from app.ingest import ingest
from app.prompting import LibraryPromptBuilder
from app.services import Services
from inference.fingerprint import model_fingerprint
from inference.protocol import ModelSettings
from tests.docs_samples import write_pdf
from tests.tiny_models import BENCH, write_tiny_model

WORDS = ("the enclave library keeps every contract report and letter on this machine so a model can read "
         "all of them at once and answer questions with citations to the page").split()


def text_of(n_words: int, seed: int) -> str:
    """Distinct for every seed (identical files would be stored, and counted, once)."""
    body = " ".join(WORDS[(i * 7 + seed) % len(WORDS)] for i in range(n_words))
    return f"Document {seed}. {body} (end of document {seed})\n"


def bench_ingest(services: Services, root: Path) -> None:
    texts = root / "texts"
    texts.mkdir()
    for i in range(200):
        (texts / f"{i:03}.txt").write_text(text_of(40_000, i) * 1)  # ~250 KB each, 50 MB in all
    pdfs = root / "pdfs"
    pdfs.mkdir()
    for i in range(10):
        write_pdf(pdfs / f"{i}.pdf", pages=tuple(text_of(300, 100 * i + p) for p in range(30)))
    size = sum(f.stat().st_size for f in texts.iterdir())
    lib = services.libraries.create("ingest")
    start = time.perf_counter()
    ingest(services.libraries, lib, [texts])
    text_seconds = time.perf_counter() - start
    start = time.perf_counter()
    ingest(services.libraries, lib, [pdfs])
    pdf_seconds = time.perf_counter() - start
    print(f"ingest: {size / 2**20 / text_seconds:.1f} MB/s of text ({size / 2**20:.0f} MB in 200 files), "
          f"{300 / pdf_seconds:.0f} PDF pages/s (300 pages)")


def bench_assembly(services: Services, root: Path, model: Path) -> None:
    folder = root / "million"
    folder.mkdir()
    for i in range(100):  # ~1 million tokens with the benchmark model's character-level vocabulary
        (folder / f"{i:03}.txt").write_text(text_of(1_700, i))
    lib = services.libraries.create("million")
    ingest(services.libraries, lib, [folder])
    services.runtime.load(str(model), ModelSettings(path=str(model), vocab_only=True))
    builder = LibraryPromptBuilder(services.libraries, services.runtime.count_tokens, model_fingerprint(model))
    start = time.perf_counter()
    first = builder.build(services.libraries.get(lib.id), 10**8, "which contract?")
    counting = time.perf_counter() - start
    start = time.perf_counter()
    again = builder.build(services.libraries.get(lib.id), 10**8, "which report?")
    cached = time.perf_counter() - start
    assert again.system_text == first.system_text
    print(f"prompt assembly: {first.library_tokens:,} tokens in {len(first.units)} documents: "
          f"{cached:.3f} s with cached counts (target < 1 s); {counting:.2f} s counting them the first time")


def time_to_first_token(services: Services, library_id: int, model: Path, question: str) -> float:
    conversation = services.chat.start(model=str(model), library_id=library_id)
    start = time.perf_counter()
    for event in services.chat.send(conversation.id, question):
        if isinstance(event, ReplyDelta | ReplyFinished):
            return time.perf_counter() - start
    raise RuntimeError("no reply")


def bench_reuse(root: Path, model: Path) -> None:
    """One joint prefix (library_attention = joint; the blocks are bench_blocks'). The model is
    loaded before each timing, so the ratios compare reading the library with not reading it."""
    settings = ModelSettings(path=str(model), n_ctx=32768)
    with _configured("joint") as services:
        services.runtime.load(str(model), settings)
        lib_id = _library(services, root, "twenty", _texts(services, 10, 2000, 0))  # ~20,000 tokens
        first = time_to_first_token(services, lib_id, model, "What does document 3 say?")
        second = time_to_first_token(services, lib_id, model, "And document 7?")
        tokens = services.prompt_cache.entries()[0].tokens
    with _configured("joint") as services:
        services.runtime.load(str(model), settings)
        restored = time_to_first_token(services, lib_id, model, "And document 5?")
    print(f"library of {tokens:,} tokens: time to first token {first:.2f} s, second question {second:.3f} s "
          f"(ratio {second / first:.3f}, target <= 0.05), after a restart {restored:.3f} s "
          f"(ratio {restored / first:.3f}, target <= 0.2)")


def _configured(attention: str = "isolated") -> Services:
    services = Services.open()
    for key, value in (("max_tokens", 4), ("context_length", 32768), ("temperature", 0.0),
                       ("library_attention", attention)):
        services.settings.set(key, value)
    return services


def _library(services: Services, root: Path, name: str, texts: list[str]) -> int:
    folder = root / name
    folder.mkdir()
    for i, text in enumerate(texts):
        (folder / f"{i:03}.txt").write_text(text)
    lib = services.libraries.create(name)
    ingest(services.libraries, lib, [folder])
    return lib.id


def _texts(services: Services, count: int, tokens_each: int, seed: int) -> list[str]:
    """``count`` distinct documents of about ``tokens_each`` tokens with the loaded model's tokenizer."""
    sample = text_of(200, seed)
    per_word = services.runtime.count_tokens([sample])[0] / 200
    words = max(10, int(tokens_each / per_word))
    return [text_of(words, seed + i) for i in range(count)]


def _timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def bench_blocks(root: Path, model: Path) -> None:
    with _configured() as services:
        services.runtime.load(str(model), ModelSettings(path=str(model), n_ctx=32768))
        texts = _texts(services, 21, 1000, 500)
        # the same documents in another library are other blocks (a document's id is in its text);
        # the first warm-up loads the model with the context these libraries need, the rest reuse it
        services.warm_library(_library(services, root, "blocks-load", texts[:20]), str(model))
        warm_id = _library(services, root, "blocks-warm", texts[:20])
        isolated = _timed(lambda: services.warm_library(warm_id, str(model)))
        cold_id = _library(services, root, "blocks-cold", texts[:20])
        cold = time_to_first_token(services, cold_id, model, "What does document 3 say?")
        warm = time_to_first_token(services, warm_id, model, "What does document 3 say?")
        tokens = services.library_warmth(warm_id, str(model)).tokens or 0
        (root / "blocks-warm" / "020.txt").write_text(texts[20])
        ingest(services.libraries, services.libraries.get(warm_id), [root / "blocks-warm"])
        added = time_to_first_token(services, warm_id, model, "What does document 20 say?")
        alone_conversation = services.chat.start(model=str(model))
        start = time.perf_counter()
        for event in services.chat.send(alone_conversation.id, texts[20] + "\nWhat does this document say?"):
            if isinstance(event, ReplyDelta | ReplyFinished):
                break
        alone = time.perf_counter() - start

        many_id = _library(services, root, "blocks-100", _texts(services, 100, 200, 900))
        services.warm_library(many_id, str(model))
        composed = time_to_first_token(services, many_id, model, "What does document 42 say?")
        question_only = time_to_first_token(services, many_id, model, "And document 43?")
    with _configured("joint") as services:
        services.runtime.load(str(model), ModelSettings(path=str(model), n_ctx=32768))
        services.warm_library(_library(services, root, "joint-load", texts[:20]), str(model))
        joint_id = _library(services, root, "blocks-joint", texts[:20])
        joint = _timed(lambda: services.warm_library(joint_id, str(model)))
    print(f"document blocks, library of 20 documents, {tokens:,} tokens: first question after a warm-up "
          f"{warm:.2f} s ÷ cold first question {cold:.2f} s = {warm / cold:.3f} (target <= 0.05)")
    print(f"  a document of about 1,000 tokens added, then a question: {added:.2f} s ÷ that document alone "
          f"{alone:.2f} s = {added / alone:.2f} (target <= 1.5)")
    print(f"  encoding the library isolated {isolated:.1f} s ÷ joint {joint:.1f} s = {isolated / joint:.2f}")
    print(f"  100 cached blocks composed, then a question: {composed:.2f} s; the question alone "
          f"{question_only:.2f} s (target: under 1 s more)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, nargs="?")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["ENCLAVE_HOME"] = str(root / "home")
        model = args.model or write_tiny_model(root / "bench.gguf", replace(BENCH, context_length=65536))
        with Services.open() as services:
            bench_ingest(services, root)
            bench_assembly(services, root, model)
        bench_reuse(root, model)
        bench_blocks(root, model)


if __name__ == "__main__":
    main()
