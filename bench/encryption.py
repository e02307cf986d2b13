"""Encryption at rest: how long encrypting and decrypting a database takes, and what it
costs a search.

    python bench/encryption.py [--messages 50000]

The database is filled as bench/store.py fills it; a keyring in memory holds the key (this
never touches the machine's keyring). Every row is checked by the commands themselves.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

if not __package__:  # run as a file rather than with -m: the repository root holds bench/ and tests/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import keyring

from app.conversations import ConversationRepository
from app.encryption import decrypt_database, encrypt_database
from app.store import open_store
from bench.store import VOCABULARY, fill, search_times
from tests.memory_keyring import MemoryKeyring


def fill_database(path: Path, messages: int, rng: random.Random) -> None:
    with open_store(path) as store:
        fill(store, messages, rng)


def median_search_ms(path: Path, queries: list[str]) -> float:
    with open_store(path, readonly=True) as store:
        return statistics.median(search_times(ConversationRepository(store), queries)) * 1000


def timed(action: Callable[[Path], object], path: Path) -> float:
    start = time.perf_counter()
    action(path)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--queries", type=int, default=100)
    args = parser.parse_args()
    keyring.set_keyring(MemoryKeyring())
    rng = random.Random(7)
    queries = [" ".join(rng.sample(VOCABULARY, rng.choice((1, 2)))) for _ in range(args.queries)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "enclave.db"
        fill_database(path, args.messages, rng)
        size = path.stat().st_size / 2**20
        plain_ms = median_search_ms(path, queries)
        encrypt_s = timed(encrypt_database, path)
        encrypted_ms = median_search_ms(path, queries)
        decrypt_s = timed(decrypt_database, path)
    print(f"database: {args.messages:,} messages, {size:.1f} MiB")
    print(f"encrypt (export, check every table, switch): {encrypt_s:.2f} s; decrypt: {decrypt_s:.2f} s")
    print(f"median search: plain {plain_ms:.2f} ms, encrypted {encrypted_ms:.2f} ms")


if __name__ == "__main__":
    main()
