"""SIGKILL at random points, again and again, and what must hold after every kill.

Four scenarios, each repeated ``--kills`` times with delays from a seeded random generator
(the seed is printed, so a failure can be replayed):

* ``reply``: ``enclave chat`` (new and continued conversations), ``ask`` and ``run``
  killed at a random moment of their run — start-up, model load, prompt, streaming;
* ``ingest``: ``enclave library add`` of a folder of many small documents, some of them
  changed or new before every run;
* ``download``: ``enclave models pull`` from a loopback hub that serves slowly, so the
  kill lands mid-file; every next run must resume where the last one stopped;
* ``worker``: the llama.cpp worker process killed mid-reply inside a running app.

After each kill the database is opened as Enclave opens it (the instance lock must be free)
and passes ``integrity_check`` and ``foreign_key_check``; everything a reader saw committed
just before the kill is still there (a reply being written is still there, marked
``partial``, its text only ever longer); the killed app's worker process ends; and the next
run works. Each scenario ends with one run left to finish, checked in full.

    python -m tests.proofs.kills --kills 50 [--seed N] [--scenario reply ...]
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.proofs.kill_download import DownloadKills
from tests.proofs.kill_ingest import IngestKills
from tests.proofs.kill_reply import ReplyKills, WorkerKills
from tests.proofs.scenario import Attempt, Scenario
from tests.tiny_models import MOE, write_tiny_model


@dataclass
class Tally:
    scenario: str
    kills: int = 0
    survived: int = 0
    ended_first: int = 0  # runs that finished before their kill came
    phases: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    final_ok: bool = False
    seconds: float = 0.0
    figures: str = ""

    def add(self, attempt: Attempt) -> None:
        if attempt.killed:
            self.kills += 1
            self.phases[attempt.phase] += 1
            self.survived += not attempt.problems
        else:
            self.ended_first += 1
        label = f"kill {self.kills}" if attempt.killed else f"run after kill {self.kills}"
        self.problems += [f"{label}: {p}" for p in attempt.problems]

    @property
    def ok(self) -> bool:
        return self.final_ok and not self.problems and self.survived == self.kills

    def report(self) -> str:
        where = ", ".join(f"{n} {phase}" for phase, n in self.phases.most_common())
        lines = [f"{self.scenario}: kills survived: {self.survived}/{self.kills} (killed while: {where}; "
                 f"{self.ended_first} runs ended before their kill; final run "
                 f"{'ok' if self.final_ok else 'FAILED'}; {self.seconds:.0f} s)"]
        if self.figures:
            lines.append(f"  {self.figures}")
        lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)


SCENARIOS: dict[str, Callable[..., Scenario]] = {
    "reply": ReplyKills, "ingest": IngestKills, "download": DownloadKills, "worker": WorkerKills,
}


def prove(name: str, kills: int, seed: int, work: Path, model: Path, quick: bool = False) -> Tally:
    """Kill ``kills`` times in scenario ``name``; attempts that end before their kill do not
    count as kills (at most ``3 * kills`` attempts)."""
    started = time.monotonic()
    rng = random.Random(f"{seed}-{name}")
    scenario = SCENARIOS[name](work / name, model, quick=quick)
    tally = Tally(name)
    try:
        scenario.setup()
        attempts = 0
        while tally.kills < kills and attempts < 3 * kills:
            attempts += 1
            tally.add(scenario.attempt(rng))
        final = scenario.finish()
        tally.final_ok = not final
        tally.problems += [f"final run: {p}" for p in final]
        tally.figures = scenario.figures
    finally:
        scenario.close()
    tally.seconds = time.monotonic() - started
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=50, help="kills per scenario")
    parser.add_argument("--seed", type=int, default=None, help="seed of the random delays (default: random)")
    parser.add_argument("--scenario", action="append", choices=list(SCENARIOS), help="only these (repeatable)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    print(f"kill test: {args.kills} kills per scenario, seed {seed}", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="enclave-kills-") as tmp:
        work = Path(tmp)
        logging.basicConfig(filename=work / "kills.log", level=logging.INFO)  # the in-process app's log
        model = write_tiny_model(work / "tiny-moe.gguf", MOE)
        for name in args.scenario or list(SCENARIOS):
            tally = prove(name, args.kills, seed, work, model)
            print(tally.report(), flush=True)
            results.append(tally)
    survived, total = sum(t.survived for t in results), sum(t.kills for t in results)
    print(f"kills survived: {survived}/{total} (seed {seed})")
    return 0 if all(t.ok for t in results) else 1


if __name__ == "__main__":
    sys.exit(main())
