"""What the fuzz tests share: how many cases to run, a count of the cases run, and a guard
that turns a hang into a failure.

``make test`` runs ``DEFAULT_EXAMPLES`` cases per fuzz test; ``make fuzz FUZZ_EXAMPLES=N``
runs N, and the session ends with the number of cases run per category (see conftest).
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from hypothesis import HealthCheck, settings

DEFAULT_EXAMPLES = 60
HANG_SECONDS = 30  # far beyond what one case takes; only a hang gets here

cases_run: Counter[str] = Counter()
slowest_case: dict[str, float] = {}  # seconds, per category


def examples(default: int = DEFAULT_EXAMPLES) -> int:
    return int(os.environ.get("FUZZ_EXAMPLES") or default)


def fuzz_settings(default: int = DEFAULT_EXAMPLES) -> settings:
    return settings(max_examples=examples(default), deadline=None, derandomize=False, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])


class Hung(AssertionError):
    pass


@contextmanager
def case(category: str) -> Iterator[None]:
    """One fuzz case of ``category``: counted, and failed if it runs ``HANG_SECONDS``."""
    def hung(signum: int, frame: object) -> None:
        raise Hung(f"a {category} fuzz case ran for {HANG_SECONDS} s: it hangs")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(HANG_SECONDS)
    start = time.perf_counter()
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        cases_run[category] += 1
        slowest_case[category] = max(slowest_case.get(category, 0.0), time.perf_counter() - start)
