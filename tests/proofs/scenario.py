"""What every kill scenario has: set up, one attempt at a time, a final run, clean up."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from tests.proofs.launch import Ended


@dataclass
class Attempt:
    """One run: killed (``phase`` says where it was) or ended by itself; what was wrong after."""

    killed: bool
    phase: str
    problems: list[str] = field(default_factory=list)


class Scenario:
    def __init__(self, work: Path, model: Path, *, quick: bool = False) -> None:
        self.work = work
        self.model = model
        self.quick = quick  # the small version run by the test suite
        self.figures = ""  # what the scenario measured besides the kills, for the report
        work.mkdir(parents=True, exist_ok=True)

    def setup(self) -> None:
        """Make what the runs need, and time a run to know when to kill."""

    def attempt(self, rng: random.Random) -> Attempt:
        raise NotImplementedError

    def finish(self) -> list[str]:
        """One last run left to end; what is wrong afterwards."""
        return []

    def close(self) -> None:
        pass


def ended_badly(ended: Ended) -> list[str]:
    """What is wrong with a run that ended by itself (it must succeed) or was killed (its
    worker must not outlive it)."""
    if ended.killed:
        return [f"the killed app's worker processes {list(ended.orphans)} were still running"] if ended.orphans else []
    if ended.code != 0:
        return [f"exited with {ended.code}: {ended.stderr.strip()[-300:]}"]
    return []
