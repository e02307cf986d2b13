"""The app database at 100,000 messages: insert rate, and how long a search takes.

    python bench/store.py [--messages 100000]

Messages go in through the same repository the app uses (one transaction per batch of
conversation turns, as an import would), then a mix of one- and two-word queries runs
against the full-text index. The vocabulary is small, so most queries match most messages:
the worst case for a search. Target: median search under 20 ms at 100,000 messages.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from app.conversations import ConversationRepository, now
from app.store import Store, open_store

VOCABULARY = ("memory planner expert offload library document context token model answer question secure "
              "offline enclave attention cache quantization layer vram ram gpu prompt reply search history "
              "kyoto contract invoice patient report budget network policy audit").split()


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(VOCABULARY) for _ in range(words)) + "."


def fill(store: Store, messages: int, rng: random.Random, per_conversation: int = 50) -> None:
    """``messages`` messages of made-up words, ``per_conversation`` to a conversation, through
    the app's own tables (the FTS index kept by its triggers)."""
    repo = ConversationRepository(store)
    inserted = 0
    while inserted < messages:
        c = repo.create(title=sentence(rng, 4))
        stamp = now()
        batch = min(per_conversation, messages - inserted)
        rows = [(c.id, "user" if i % 2 == 0 else "assistant", sentence(rng, rng.randint(8, 80)), stamp, stamp)
                for i in range(batch)]
        with store.write() as db:
            db.conn.executemany("INSERT INTO messages (conversation_id, role, content, created_at, updated_at)"
                                " VALUES (?, ?, ?, ?, ?)", rows)
        inserted += batch


def search_times(repo: ConversationRepository, queries: list[str]) -> list[float]:
    """Seconds per search, after one search that warms the page cache."""
    repo.search(queries[0])
    times = []
    for q in queries:
        start = time.perf_counter()
        repo.search(q, limit=20)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--per-conversation", type=int, default=50)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp, open_store(Path(tmp) / "enclave.db") as store:
        repo = ConversationRepository(store)
        start = time.perf_counter()
        fill(store, args.messages, rng, args.per_conversation)
        insert_seconds = time.perf_counter() - start

        queries = [" ".join(rng.sample(VOCABULARY, rng.choice((1, 2)))) for _ in range(args.queries)]
        times = search_times(repo, queries)
        size = (Path(tmp) / "enclave.db").stat().st_size
    median_ms = statistics.median(times) * 1000
    p95_ms = sorted(times)[int(len(times) * 0.95)] * 1000
    print(f"messages: {args.messages:,}  database: {size / 2**20:.0f} MiB")
    print(f"insert: {args.messages / insert_seconds:,.0f} messages/s (FTS index kept by triggers)")
    print(f"search: median {median_ms:.2f} ms, p95 {p95_ms:.2f} ms over {len(times)} queries "
          f"(target: median < 20 ms)")


if __name__ == "__main__":
    main()
