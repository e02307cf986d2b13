"""Kills during ``enclave library add`` of a folder of many small documents."""

from __future__ import annotations

import json
import random
from pathlib import Path

from app.hashing import sha256_file
from tests.proofs.launch import Enclave
from tests.proofs.probes import database_problems, snapshot_rows
from tests.proofs.scenario import Attempt, Scenario, ended_badly
from tests.tiny_models import WORDS

LIBRARY = "papers"
DOCUMENTS_SQL = (f"SELECT d.path, d.sha256, d.error_reason FROM documents d JOIN libraries l ON l.id = d.library_id "
                 f"WHERE l.name = '{LIBRARY}'")


def documents(database: Path) -> dict[str, tuple[str | None, str | None]]:
    """path -> (sha256, error_reason) of the library's documents."""
    return {path: (sha, error) for path, sha, error in snapshot_rows(database, DOCUMENTS_SQL)}


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def write_document(path: Path, rng: random.Random) -> None:
    """A small document of the kind its name says, with random words."""
    body = _text(rng, rng.randint(50, 400))
    if path.suffix == ".html":
        path.write_text(f"<html><head><title>{_text(rng, 3)}</title></head><body><p>{body}</p></body></html>")
    elif path.suffix == ".json":
        path.write_text(json.dumps({"title": _text(rng, 3), "body": body}))
    elif path.suffix == ".csv":
        path.write_text("name,value\n" + "\n".join(f"{w},{i}" for i, w in enumerate(body.split())))
    elif path.suffix == ".md":
        path.write_text(f"# {_text(rng, 3)}\n\n{body}\n")
    else:
        path.write_text(body + "\n")


class IngestKills(Scenario):
    KINDS = (".txt", ".md", ".html", ".json", ".csv")

    def setup(self) -> None:
        self.folder = self.work / "folder"
        self.files = 80 if self.quick else 1000
        self.made = 0
        rng = random.Random(1)
        for _ in range(self.files):
            self._new_file(rng)
        self.app = Enclave(self.work / "home", self.work / "runs")
        timing = Enclave(self.work / "timing-home", self.work / "timing-runs").run("library", "add", LIBRARY,
                                                                                 str(self.folder), "--create")
        if timing.code != 0:
            raise RuntimeError(f"the ingest does not work: {timing.stderr.strip()[-500:]}")
        self.window = timing.seconds

    def _new_file(self, rng: random.Random) -> None:
        path = self.folder / f"part-{self.made % 7}" / f"doc-{self.made:04d}{self.KINDS[self.made % len(self.KINDS)]}"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_document(path, rng)
        self.made += 1

    def _change_some(self, rng: random.Random) -> None:
        """Work for the next run: some files rewritten, a few new."""
        existing = sorted(self.folder.rglob("doc-*"))
        for path in rng.sample(existing, k=len(existing) // 6):
            write_document(path, rng)
        for _ in range(rng.randint(1, 5)):
            self._new_file(rng)

    def attempt(self, rng: random.Random) -> Attempt:
        self._change_some(rng)
        database = self.app.database
        before = documents(database)
        ended = self.app.run_killed("library", "add", LIBRARY, str(self.folder), "--create",
                                    after=self.app.kill_delay(rng, self.window), observe=lambda: documents(database))
        after = documents(database)
        problems = ended_badly(ended) + database_problems(database)
        seen = ended.seen if ended.seen is not None else before
        for path, (sha, _error) in seen.items():
            if path not in after:
                problems.append(f"document {path}, stored before the kill, is gone")
            elif after[path][0] != sha and after[path][0] != sha256_file(Path(path)):
                problems.append(f"document {path} changed after the kill to bytes it never had")
        if not ended.killed:  # faster than the run that set the window: aim earlier from now on
            self.window = min(self.window, ended.seconds) * 0.9
        changed = sum(1 for path, row in (ended.seen or {}).items() if before.get(path) != row)
        return Attempt(ended.killed, "before the first file was stored" if not changed else "mid-folder", problems)

    def finish(self) -> list[str]:
        """A run to the end stores every file once, as it is now."""
        ended = self.app.run("library", "add", LIBRARY, str(self.folder), "--create")
        problems = ended_badly(ended) + database_problems(self.app.database)
        stored = documents(self.app.database)
        files = {str(p): sha256_file(p) for p in self.folder.rglob("doc-*")}
        if set(stored) != set(files):
            problems.append(f"{len(stored)} documents for {len(files)} files (missing "
                            f"{sorted(set(files) - set(stored))[:3]}, extra {sorted(set(stored) - set(files))[:3]})")
        wrong = [p for p, sha in files.items() if p in stored and stored[p] != (sha, None)]
        if wrong:
            problems.append(f"{len(wrong)} documents do not hold their file's current bytes, e.g. {wrong[:2]}")
        duplicates = snapshot_rows(self.app.database, "SELECT path, count(*) FROM documents GROUP BY library_id, "
                                                      "path HAVING count(*) > 1")
        if duplicates:
            problems.append(f"documents stored twice: {duplicates[:3]}")
        return problems
