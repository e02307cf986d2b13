"""Kills during ``enclave models pull`` from a hub on 127.0.0.1 that sends files slowly."""

from __future__ import annotations

import hashlib
import json
import random

from app.hub.fetch import PARTIAL_DIR
from app.paths import AppPaths
from app.services import Services
from tests.fake_hub import HUB_ENVIRONMENT, FakeHub, FakeRepo
from tests.proofs.launch import Enclave, Ended
from tests.proofs.probes import database_problems, snapshot_rows
from tests.proofs.scenario import Attempt, Scenario, ended_badly

REPO = "org/Tiny-GGUF"
FILE = "tiny-Q8_0.gguf"
SECONDS_PER_FILE = 2.0  # how long the hub takes to send the whole file


class DownloadKills(Scenario):
    def setup(self) -> None:
        self.data = self.model.read_bytes()
        self.sha = hashlib.sha256(self.data).hexdigest()
        self.seconds = SECONDS_PER_FILE / 2 if self.quick else SECONDS_PER_FILE
        self.hub = FakeHub(rate=int(len(self.data) / self.seconds))
        self.hub.__enter__()
        self.hub.add(FakeRepo(REPO, {FILE: self.data}))
        env = {"HF_ENDPOINT": self.hub.url}
        self.app = Enclave(self.work / "home", self.work / "runs", env)
        for var in HUB_ENVIRONMENT:
            self.app.env.pop(var, None)
        self.folder = self.app.home / "data" / "models" / REPO.replace("/", "--")
        self.partial = self.folder / PARTIAL_DIR / f"{self.sha}.part"
        self.window = 2 * self.app.startup + self.seconds  # start, ask the hub, the file, verify and register
        self.completed = 0
        self.resumed = 0  # runs that went on from the bytes an earlier, killed run kept

    def _pull(self, after: float | None = None) -> Ended:
        args = ("models", "pull", REPO, "--quant", "Q8_0")
        if after is None:
            return self.app.run(*args)
        return self.app.run_killed(*args, after=after, observe=self._registered)

    def _registered(self) -> list[tuple]:
        return snapshot_rows(self.app.database, "SELECT id, source FROM models")

    def _start_over(self) -> None:
        """Forget the downloaded model and delete its file, so that the next run downloads again."""
        with Services.open(AppPaths.under(self.app.home)) as services:
            for model in services.models.all():
                services.models.remove(model, delete_files=True)

    def _partial_size(self) -> int:
        return self.partial.stat().st_size if self.partial.exists() else 0

    def attempt(self, rng: random.Random) -> Attempt:
        had = self._partial_size()
        asked = len(self.hub.requests)
        ended = self._pull(after=self.app.kill_delay(rng, self.window))
        problems = ended_badly(ended) + database_problems(self.app.database)
        gets = [r for r in self.hub.requests[asked:] if r.method == "GET" and r.path.endswith("/" + FILE)]
        if gets and had and gets[0].headers.get("range") == f"bytes={had}-":
            self.resumed += 1
        elif gets and had:
            problems.append(f"the download did not resume from the {had:,} bytes kept: asked "
                            f"{gets[0].headers.get('range')!r}")
        if self._partial_size() > len(self.data):
            problems.append(f"the partial file is larger than the file ({self._partial_size():,} bytes)")
        problems += self._check_registered(must=not ended.killed)
        if not ended.killed:  # faster than the run that set the window: aim earlier from now on
            self.window = min(self.window, ended.seconds) * 0.9
        if not ended.killed or self._registered():
            self.completed += 1
            self._start_over()
        if not gets:
            phase = "before the file's GET (start-up, listing, checking kept bytes)"
        else:
            phase = "mid-file" if self._partial_size() else "verifying or registering"
        return Attempt(ended.killed, phase, problems)

    def _check_registered(self, must: bool) -> list[str]:
        """A registered download is the whole file, with the hub's SHA-256."""
        registered = self._registered()
        if must and not registered:
            return ["the download finished but the model is not registered"]
        problems = []
        for model_id, source in registered:
            target = self.folder / FILE
            if not target.is_file() or hashlib.sha256(target.read_bytes()).hexdigest() != self.sha:
                problems.append(f"{model_id} is registered but its file is missing or not the hub's bytes")
            if json.loads(source).get("repo") != REPO:
                problems.append(f"{model_id} is registered with a wrong source: {source}")
        return problems

    def finish(self) -> list[str]:
        """Interrupted downloads leave nothing in the way: one more download completes and verifies."""
        ended = self._pull()
        problems = ended_badly(ended) + self._check_registered(must=True)
        verified = self.app.run("models", "verify")
        if verified.code != 0:
            problems.append(f"'enclave models verify' failed: {verified.stderr.strip()[-300:]}")
        self.figures = (f"{self.resumed} runs resumed a file from the bytes a killed run kept; {self.completed} "
                        "downloads completed between kills, the last one verified")
        return problems + database_problems(self.app.database)

    def close(self) -> None:
        hub = getattr(self, "hub", None)
        if hub is not None:
            hub.__exit__(None, None, None)
