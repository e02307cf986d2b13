"""What isolated attention costs in answers: facts found in a library read jointly vs. in KV blocks.

*joint*: the whole library prompt is evaluated in one pass, every document attending to the
ones before it (Enclave's usual mode). *isolated*: each document is encoded alone after the
shared head (chat-template start, instructions), saved as a KV block, and the blocks are
composed into one sequence by moving them to their positions; the question attends to every
document, but no document ever attended to another.

Libraries of generated documents (seeded, so every run asks the same things): each document
has filler prose on its own topic and three planted facts: a reference code ("KX-4821"), a
signing date ("14 March 2019") and a responsible person ("Marta Okafor"). Each question asks
for one fact of one document, by its title, completion-style: after the chat prompt, the start
of the answer is appended, repeating the start of the statement that holds the fact ("The
reference code of the Nefdralo Beekeeping Cooperative Proposal is"), and the greedy continuation
(up to 24 tokens, ended at the first line or sentence end) counts as a hit when it contains the
fact. Every document states the same three kinds of fact in the same words, so a miss is
usually another document's value: the question has to find its document by the title.

    python bench/library_quality.py MODEL.gguf [--docs 10 50 200] [--questions-per-library K] [--ctx N]

Reading the table: ``found`` is the share of questions answered right, per fact kind and in
all; isolated close to joint means composing blocks costs little quality. ``encode s`` is
the time to get the library into the KV cache: joint, the one pass over head and documents;
isolated, every block's encoding plus composing them. Its ratio isolated / joint is printed
per size (below 1: blocks are cheaper, since no document attends to the others). Sizes are
skipped, with a line saying so, when the library and a question do not fit the context.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

if not __package__:  # run as a file rather than with -m: the repository root holds app/ and inference/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.libraries import Content, Document
from app.library_blocks import SLOT
from app.prompting import INSTRUCTION, document_block
from inference.engine import Engine
from inference.llama_log import LlamaLog
from inference.protocol import ChatMessage, ModelSettings, Sampling, Segments, Token

SEED = 20261202
ANSWER_TOKENS = 24
KINDS = ("code", "date", "name")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
FIRST_NAMES = ("Marta", "Jonas", "Aiko", "Rafael", "Ingrid", "Tomasz", "Leila", "Oskar", "Priya", "Matteo",
               "Sofia", "Kwame", "Elena", "Dmitri", "Hana", "Lucas", "Nadia", "Felix", "Amara", "Viktor")
LAST_NAMES = ("Okafor", "Lindqvist", "Tanaka", "Moreau", "Novak", "Castillo", "Haddad", "Brennan", "Iyer",
              "Kowalski", "Achebe", "Fischer", "Rossi", "Nakamura", "Petrov", "Mendes", "Olsen", "Varga",
              "Duarte", "Sorensen")
# a topic and the words its filler draws on, so documents differ in what they talk about
TOPICS: dict[str, tuple[str, ...]] = {
    "harbour dredging": ("silt", "barge", "channel", "tide", "quay", "sediment", "pilot", "buoy"),
    "orchard irrigation": ("pear", "drip line", "reservoir", "blossom", "pump", "soil", "frost", "harvest"),
    "railway signalling": ("interlocking", "track circuit", "signal box", "junction", "relay", "timetable",
                           "points", "level crossing"),
    "museum lighting": ("gallery", "lux level", "fixture", "canvas", "conservator", "lamp", "display case",
                        "visitor"),
    "bakery equipment": ("oven", "proofer", "dough", "mixer", "flour silo", "conveyor", "crust", "baker"),
    "wind farm upkeep": ("turbine", "blade", "gearbox", "nacelle", "anemometer", "crane", "cable", "substation"),
    "school catering": ("menu", "allergen", "kitchen", "canteen", "supplier", "portion", "pupil", "freezer"),
    "bridge inspection": ("girder", "bearing", "corrosion", "deck", "pier", "rivet", "load test", "expansion joint"),
    "library digitisation": ("scanner", "manuscript", "catalogue", "archive", "metadata", "volume", "binding",
                             "reading room"),
    "hospital laundry": ("linen", "washer", "detergent", "trolley", "ward", "dryer", "sterile pack", "rota"),
    "vineyard pest control": ("vine", "mildew", "trap", "grape", "spray", "canopy", "row", "beetle"),
    "fleet maintenance": ("van", "tyre", "brake pad", "mileage", "garage", "service log", "fuel card", "depot"),
    "data centre cooling": ("chiller", "rack", "airflow", "server hall", "humidity", "raised floor", "fan wall",
                            "setpoint"),
    "forest fire watch": ("lookout", "ridge", "smoke", "patrol", "firebreak", "pine", "radio", "drought"),
    "theatre renovation": ("stage", "curtain", "balcony", "rigging", "seat", "acoustics", "foyer", "dressing room"),
    "beekeeping cooperative": ("hive", "queen", "honey", "frame", "swarm", "apiary", "smoker", "pollen"),
    "water meter rollout": ("meter", "household", "valve", "reading", "leak", "installer", "district", "billing"),
    "ferry timetable review": ("crossing", "vessel", "terminal", "passenger", "car deck", "crew", "weather",
                               "sailing"),
    "glacier survey": ("ice", "crevasse", "moraine", "drill core", "camp", "melt", "snowline", "theodolite"),
    "textile dye works": ("indigo", "vat", "fabric", "rinse", "effluent", "loom", "batch", "colourfast"),
}
SYLLABLES = ("ka", "lo", "mer", "vin", "dra", "tes", "bor", "qui", "sal", "nef", "ru", "gam", "pol", "zet",
             "hal", "win", "cor", "dun", "ya", "fel")
KINDS_OF_PAPER = ("report", "memo", "survey", "review", "briefing", "minutes", "assessment", "proposal")
TEMPLATES = (
    "The {w0} at {place} was checked again after the {w1} showed signs of wear.",
    "Staff noted that the {w0} and the {w1} need attention before the next season.",
    "A contractor proposed replacing the {w0}, although the {w1} is still in fair condition.",
    "The budget for the {w0} was discussed at length, and the {w1} was left for a later meeting.",
    "Several residents of {place} asked whether the {w0} would affect the {w1}.",
    "During the site visit the team measured the {w0} twice and photographed the {w1}.",
    "It was agreed that the {w0} should be logged weekly, together with any change in the {w1}.",
    "The previous year's notes mention trouble with the {w0} whenever the {w1} was neglected.",
    "Training on the {w0} will be offered to new staff, with a short session on the {w1}.",
    "Nobody objected to moving the {w0} closer to the {w1}, provided access stays clear.",
    "The supplier in {place} delivered the {w0} late, so work on the {w1} was postponed.",
    "An outside expert reviewed the {w0} and found the {w1} acceptable for now.",
)


@dataclass(frozen=True)
class Fact:
    kind: str
    value: str
    sentence: str  # as planted in the document
    question: str
    answer_start: str  # appended after the chat prompt; the model continues it


@dataclass(frozen=True)
class LibraryDoc:
    id: int
    title: str
    text: str
    facts: tuple[Fact, ...]


@dataclass
class Result:
    mode: str
    encode_seconds: float
    hits: dict[str, int]
    asked: dict[str, int]


# Documents -------------------------------------------------------------------------


def titles(n: int, rng: random.Random) -> list[str]:
    """``n`` titles, each with a place of its own (an invented word), then a topic and a kind of paper."""
    places: set[str] = set()
    while len(places) < n:
        places.add("".join(rng.choice(SYLLABLES) for _ in range(3)).title())
    return [f"{place} {rng.choice(list(TOPICS))} {rng.choice(KINDS_OF_PAPER)}".title()
            for place in sorted(places, key=lambda _: rng.random())]


def facts_for(title: str, rng: random.Random, taken: set[str]) -> tuple[Fact, ...]:
    """The document's code, date and person, each stated with its title: the answer's start
    repeats that statement's start, so a model that finds the statement can copy the value."""
    letters = "ABCDEFGHJKLMNPRSTVWXZ"
    code = name = ""
    while not code or code in taken:
        code = f"{rng.choice(letters)}{rng.choice(letters)}-{rng.randint(1000, 9999)}"
    date = f"{rng.randint(1, 28)} {rng.choice(MONTHS)} {rng.randint(2005, 2024)}"
    while not name or name in taken:
        name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
    taken.update((code, name))
    return (
        fact("code", code, f"The reference code of the {title} is", f"What is the reference code of the {title}?"),
        fact("date", date, f"The {title} was signed on", f"On what date was the {title} signed?"),
        fact("name", name, f"The officer responsible for the {title} is", f"Who is responsible for the {title}?"),
    )


def fact(kind: str, value: str, stem: str, question: str) -> Fact:
    return Fact(kind, value, f"{stem} {value}.", question, stem)


def body(title: str, facts: Sequence[Fact], sentences: int, rng: random.Random) -> str:
    """Filler on the title's topic with the facts planted at random places."""
    topic = next(t for t in TOPICS if t.title() in title)
    place = title.split()[0]
    words = TOPICS[topic]
    lines = [rng.choice(TEMPLATES).format(w0=w0, w1=w1, place=place)
             for w0, w1 in (rng.sample(words, 2) for _ in range(sentences))]
    for f in facts:
        lines.insert(rng.randint(1, len(lines)), f.sentence)
    paragraphs = [" ".join(lines[i : i + 4]) for i in range(0, len(lines), 4)]
    return f"{title}\n\n" + "\n\n".join(paragraphs)


def make_library(n: int, sentences: tuple[int, int], seed: int = SEED) -> list[LibraryDoc]:
    rng = random.Random(seed * 1000 + n)
    taken: set[str] = set()
    docs = []
    for i, title in enumerate(titles(n, rng), start=1):
        facts = facts_for(title, rng, taken)
        docs.append(LibraryDoc(i, title, body(title, facts, rng.randint(*sentences), rng), facts))
    return docs


def delimited(doc: LibraryDoc) -> str:
    """The document as the library prompt holds it (``app.prompting.document_block``)."""
    document = Document(id=doc.id, library_id=1, path=f"/library/{doc.id:03}.txt", title=doc.title, kind="txt",
                        size=len(doc.text), mtime=None, sha256=f"{doc.id:064x}", error=None, error_reason=None,
                        added_at="", updated_at="", chars=len(doc.text))
    return document_block(document, Content(document.sha256 or "", doc.text, (), "txt", doc.title))[0]


# Asking ----------------------------------------------------------------------------


def segments(engine: Engine, docs: Sequence[LibraryDoc], question: str) -> Segments:
    messages = [ChatMessage("system", INSTRUCTION + "\n\n" + SLOT), ChatMessage("user", question)]
    return engine.render_segments(messages, SLOT, [delimited(d) for d in docs])


def answer(engine: Engine, prompt: Sequence[int], composed: bool) -> str:
    sampling = Sampling(temperature=0, max_tokens=ANSWER_TOKENS, stop=("\n", ". "))  # its first sentence
    events: Iterator[object] = engine.generate(list(prompt), sampling, composed=composed)
    return "".join(e.text for e in events if isinstance(e, Token))


def completion_prompt(engine: Engine, docs: Sequence[LibraryDoc], fact: Fact) -> list[int]:
    seg = segments(engine, docs, fact.question)
    return list(seg.ids) + engine.tokenize(" " + fact.answer_start, add_special=False, parse_special=False)


def clear(engine: Engine, seg: Segments) -> None:
    """Start a mode cold: a one-token prompt keeps nothing of the cache (its last token is
    always evaluated again), so the head is timed in both modes."""
    for _ in engine.ingest(seg.head[:1]):
        pass


def encode_joint(engine: Engine, seg: Segments) -> float:
    """The library prefix (head and documents) in one pass, from an empty cache."""
    clear(engine, seg)
    started = time.perf_counter()
    for _ in engine.ingest(list(seg.head) + [t for part in seg.parts for t in part]):
        pass
    return time.perf_counter() - started


def encode_isolated(engine: Engine, seg: Segments, folder: Path) -> float:
    """Every document's block after the head, then composing them; the head's pass counts too."""
    clear(engine, seg)
    started = time.perf_counter()
    blocks = []
    for i, part in enumerate(seg.parts):
        path = folder / f"{i}.kv"
        saved = yield_all(engine.encode_block(seg.head, part, path))
        if saved is not True:
            raise RuntimeError(f"block {i} was not saved")
        blocks.append((path, part))
    engine.compose(seg.head, blocks)
    return time.perf_counter() - started


def yield_all(generator: Iterator[object]) -> object:
    """Drive a generator to its end and return its return value."""
    while True:
        try:
            next(generator)
        except StopIteration as stop:
            return stop.value


def ask_all(engine: Engine, docs: Sequence[LibraryDoc], facts: Sequence[Fact], mode: str, encode_seconds: float,
            verbose: bool) -> Result:
    result = Result(mode, encode_seconds, dict.fromkeys(KINDS, 0), dict.fromkeys(KINDS, 0))
    for fact in facts:
        text = answer(engine, completion_prompt(engine, docs, fact), composed=mode == "isolated")
        hit = fact.value in text
        result.asked[fact.kind] += 1
        result.hits[fact.kind] += hit
        if verbose:
            print(f"  [{mode}] {'HIT ' if hit else 'miss'} {fact.value!r:>20} <- {text.strip()[:70]!r}", flush=True)
    return result


def sample_facts(docs: Sequence[LibraryDoc], k: int | None, n_docs: int) -> list[Fact]:
    facts = [f for d in docs for f in d.facts]
    if k is None:
        k = len(facts) if n_docs <= 50 else 60
    return facts if k >= len(facts) else random.Random(SEED + n_docs).sample(facts, k)


# Report ----------------------------------------------------------------------------


def share(hits: int, asked: int) -> str:
    return f"{hits / asked:6.0%} ({hits}/{asked})" if asked else "-"


def print_header() -> None:
    kinds = "".join(f"{k + ' found':>16}" for k in KINDS)
    print(f"{'docs':>5}{'library tok':>13}{'mode':>10}{kinds}{'total found':>18}{'encode s':>10}", flush=True)


def print_row(n: int, library_tokens: int, r: Result) -> None:
    kinds = "".join(f"{share(r.hits[k], r.asked[k]):>16}" for k in KINDS)
    total = share(sum(r.hits.values()), sum(r.asked.values()))
    print(f"{n:>5}{library_tokens:>13,}{r.mode:>10}{kinds}{total:>18}{r.encode_seconds:>10.1f}", flush=True)


def run_size(engine: Engine, n: int, sentences: tuple[int, int], k: int | None, verbose: bool) -> list[str]:
    docs = make_library(n, sentences)
    facts = sample_facts(docs, k, n)
    seg = segments(engine, docs, facts[0].question)
    library_tokens = sum(len(p) for p in seg.parts)
    longest = max(len(completion_prompt(engine, docs, f)) for f in facts) + ANSWER_TOKENS
    n_ctx = engine.info.n_ctx
    if longest >= n_ctx:
        return [f"{n} documents: skipped, the library and a question need {longest:,} tokens, "
                f"the context holds {n_ctx:,}"]
    joint = ask_all(engine, docs, facts, "joint", encode_joint(engine, seg), verbose)
    print_row(n, library_tokens, joint)
    with tempfile.TemporaryDirectory() as tmp:
        isolated = ask_all(engine, docs, facts, "isolated", encode_isolated(engine, seg, Path(tmp)), verbose)
    print_row(n, library_tokens, isolated)
    return [f"{n} documents ({library_tokens:,} tokens, {library_tokens // n} a document, {len(facts)} questions): "
            f"encode isolated / joint = {isolated.encode_seconds / joint.encode_seconds:.2f}"]


def sentences_for(n: int, short_from: int) -> tuple[int, int]:
    """Filler sentences per document (about 15-16 tokens each): ~150-400 tokens a document,
    shorter from ``short_from`` documents on so that the library fits the context."""
    return (1, 3) if n >= short_from else (9, 24)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("--docs", type=int, nargs="+", default=[10, 50, 200])
    parser.add_argument("--questions-per-library", type=int, default=None,
                        help="facts asked per library (default: all up to 50 documents, 60 beyond)")
    parser.add_argument("--ctx", type=int, default=32768)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--short-from", type=int, default=100,
                        help="libraries of this many documents or more get shorter documents (default 100)")
    parser.add_argument("--verbose", action="store_true", help="print every question's answer")
    args = parser.parse_args()

    log = LlamaLog()
    log.install()
    settings = ModelSettings(path=str(args.model), n_ctx=args.ctx, n_threads=args.threads, n_batch=512, n_ubatch=512)
    started = time.perf_counter()
    with Engine(settings, log) as engine:
        print(f"model: {args.model.name}  context: {engine.info.n_ctx:,} (trained {engine.info.n_ctx_train:,})  "
              f"threads: {args.threads}  "
              f"answer: greedy, up to {ANSWER_TOKENS} tokens, to the first line or sentence end",
              flush=True)
        if any(n >= args.short_from for n in args.docs):
            print(f"libraries of {args.short_from}+ documents use shorter documents "
                  f"({sentences_for(args.short_from, args.short_from)} filler sentences instead of "
                  f"{sentences_for(0, args.short_from)}) to fit the context", flush=True)
        print_header()
        notes = [note for n in args.docs
                 for note in run_size(engine, n, sentences_for(n, args.short_from), args.questions_per_library,
                                      args.verbose)]
    for note in notes:
        print(note)
    print(f"total time: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
