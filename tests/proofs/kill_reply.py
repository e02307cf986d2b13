"""Kills during replies: the app killed (``chat``, ``ask``, ``run``), and the llama.cpp worker
killed inside a running app."""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path
from typing import NamedTuple

from app.chat import ReplyDelta, ReplyFinished
from app.conversations import Message
from app.paths import AppPaths
from app.services import Services
from inference.errors import EnclaveError
from tests.proofs.launch import Enclave, Ended
from tests.proofs.probes import (
    alive,
    children,
    database_problems,
    open_fds,
    snapshot_rows,
    still_running,
    store_problems,
)
from tests.proofs.scenario import Attempt, Scenario, ended_badly


class Row(NamedTuple):
    id: int
    conversation_id: int
    role: str
    content: str
    status: str
    error: str | None


def messages(database: Path) -> dict[int, Row]:
    rows = snapshot_rows(database, "SELECT id, conversation_id, role, content, status, error FROM messages")
    return {row[0]: Row(*row) for row in rows}


def lost(seen: dict[int, Row], after: dict[int, Row]) -> list[str]:
    """What a reader saw committed that is no longer there: messages gone or changed, and
    replies being written whose text got shorter."""
    problems = []
    for row in seen.values():
        now = after.get(row.id)
        if now is None:
            problems.append(f"{row.role} message {row.id}, committed before the kill, is gone")
        elif row.role == "assistant" and row.status == "partial":
            if not now.content.startswith(row.content):
                problems.append(f"the partial reply {row.id} lost text it had before the kill")
        elif now != row:
            problems.append(f"{row.role} message {row.id} changed after the kill: {row} -> {now}")
    return problems


def unmarked(after: dict[int, Row]) -> list[str]:
    """Replies that are neither complete nor marked partial (an app kill is not an error of the model)."""
    return [f"reply {r.id} is marked {r.status!r} ({r.error})" for r in after.values()
            if r.role == "assistant" and r.status not in ("complete", "partial")]


class ReplyKills(Scenario):
    OPS = ("chat", "continue", "ask", "run")

    def setup(self) -> None:
        self.app = Enclave(self.work / "home", self.work / "runs")
        self.tokens = 60 if self.quick else 400
        with Services.open(AppPaths.under(self.app.home)) as services:
            for key, value in (("max_tokens", self.tokens), ("context_length", 2048), ("threads", 1)):
                services.settings.set(key, value)
        docs = self.work / "notes"
        docs.mkdir(exist_ok=True)
        for i in range(4):
            (docs / f"note-{i}.txt").write_text(f"Note {i}: the secure library keeps memory of expert {i}.\n")
        self._must(self.app.run("library", "add", "notes", str(docs), "--create"))
        self.ops = ("continue", "ask") if self.quick else self.OPS
        self.windows = {}
        for op in self.ops:  # each works once, and its duration bounds the kill delays
            args, stdin = self._command(op, random.Random(0))
            self.windows[op] = self._must(self.app.run(*args, stdin=stdin)).seconds

    def _must(self, ended: Ended) -> Ended:
        if ended.code != 0:
            raise RuntimeError(f"setting up the reply kills failed: {ended.stderr.strip()[-500:]}")
        return ended

    def _command(self, op: str, rng: random.Random) -> tuple[tuple[str, ...], str | None]:
        model = str(self.model)
        plain = sorted({r[0] for r in snapshot_rows(self.app.database,
                                                    "SELECT id FROM conversations WHERE library_id IS NULL")})
        if op == "continue" and plain:
            return ("chat", "--conversation", str(rng.choice(plain))), "and what happened next?\n"
        if op in ("chat", "continue"):
            return ("chat", "--model", model), "tell me a long story about the library\nand then?\n"
        if op == "ask":
            return ("ask", "--library", "notes", "--model", model, "what do the notes say about memory?"), None
        return ("run", model, "a long story please", "--max-tokens", str(self.tokens), "--ctx", "1024",
                "--threads", "1", "--temperature", "0"), None

    def attempt(self, rng: random.Random) -> Attempt:
        op = rng.choice(self.ops)
        args, stdin = self._command(op, rng)
        database = self.app.database
        before = messages(database)
        ended = self.app.run_killed(*args, after=self.app.kill_delay(rng, self.windows[op]),
                                    observe=lambda: messages(database), stdin=stdin)
        problems = ended_badly(ended) + database_problems(database)
        after = messages(database)
        problems += lost(ended.seen if ended.seen is not None else before, after) + unmarked(after)
        if not ended.killed:  # faster than the run that set the window: aim earlier from now on
            self.windows[op] = min(self.windows[op], ended.seconds) * 0.9
        return Attempt(ended.killed, f"{op} {self._phase(op, before, ended)}", problems)

    @staticmethod
    def _phase(op: str, before: dict[int, Row], ended: Ended) -> str:
        if op == "run":
            return "replying" if ended.stdout.strip() else "before the first token"
        new = [r for r in (ended.seen or {}).values() if r.id not in before]
        if not new:
            return "starting"
        last = max(new, key=lambda r: r.id)
        if last.role == "user":
            return "reading the prompt"
        return "replying" if last.status == "partial" else "between turns"

    def finish(self) -> list[str]:
        """The last conversations the kills left (one cut mid-reply, most likely) can be continued,
        and the reply completes."""
        problems = []
        plain = sorted({r.conversation_id for r in messages(self.app.database).values()})
        for cid in plain[-1 if self.quick else -3:]:
            ended = self.app.run("chat", "--conversation", str(cid), stdin="one more, to the end\n")
            problems += ended_badly(ended)
            last = max((r for r in messages(self.app.database).values() if r.conversation_id == cid),
                       key=lambda r: r.id)
            if last.role != "assistant" or last.status != "complete" or not last.content:
                problems.append(f"the reply in conversation {cid} after the kills did not complete: {last}")
        return problems + database_problems(self.app.database)


class WorkerKills(Scenario):
    """The app lives on when its worker is killed mid-reply: the reply is marked, the next works."""

    PER_CONVERSATION = 10

    def setup(self) -> None:
        self.services = Services.open(AppPaths.under(self.work / "home"))
        self.tokens = 60 if self.quick else 200
        for key, value in (("max_tokens", self.tokens), ("context_length", 1024), ("threads", 1),
                           ("temperature", 0.0)):
            self.services.settings.set(key, value)
        self.conversation = self.services.chat.start(model=str(self.model)).id
        self.sent = 0
        warm = self._reply("warm up")
        if warm.status != "complete":
            raise RuntimeError(f"the first reply did not complete: {warm.error}")
        self.fds, self.children = open_fds(), len(children())

    def _reply(self, text: str) -> Message:
        return self._send(text)[0]

    def _send(self, text: str, kill_after: int | None = None) -> tuple[Message, int | None]:
        """Send ``text``; with ``kill_after``, SIGKILL the worker at that streamed token.
        Returns the stored reply and the pid killed (None: the reply ended first)."""
        self.sent += 1
        if self.sent % self.PER_CONVERSATION == 0:
            self.conversation = self.services.chat.start(model=str(self.model)).id
        killed, deltas, reply = None, 0, None
        for event in self.services.chat.send(self.conversation, text):
            if isinstance(event, ReplyDelta):
                deltas += 1
                if deltas == kill_after and (pid := self.services.runtime.worker.pid) is not None:
                    os.kill(pid, signal.SIGKILL)
                    killed = pid
            elif isinstance(event, ReplyFinished):
                reply = event.message
        assert reply is not None
        return reply, killed

    def attempt(self, rng: random.Random) -> Attempt:
        text = f"question {self.sent}"
        reply, killed = self._send(text, kill_after=rng.randint(1, self.tokens - 1))
        if killed is None or reply.status == "complete":
            # the reply was whole before the kill landed: the worker dies idle, which the next request sees
            still_running([killed] if killed else [], 10)
            return Attempt(False, "", self._next_reply_works())
        problems = []
        if reply.status != "error" or "SIGKILL" not in (reply.error or ""):
            problems.append(f"the reply whose worker was killed is marked {reply.status!r}: {reply.error}")
        user = self.services.conversations.messages(self.conversation, limit=2)[0]
        if user.role != "user" or user.content != text:
            problems.append(f"the message sent before the worker was killed is not stored: {user}")
        if alive(killed) or killed in children():
            problems.append(f"the killed worker {killed} was not reaped")
        return Attempt(True, "streaming", problems + self._next_reply_works())

    def _next_reply_works(self) -> list[str]:
        try:
            following = self._reply(f"after kill {self.sent}")
        except EnclaveError as exc:
            return [f"the reply after the kill failed: {exc}"]
        if following.status != "complete" or following.completion_tokens != self.tokens:
            return [f"the reply after the kill did not complete: {following.status} {following.error}"]
        return []

    def finish(self) -> list[str]:
        problems = store_problems(self.services.store)
        fds, kids = open_fds(), len(children())
        self.figures = f"open files {self.fds} -> {fds}, child processes {self.children} -> {kids}"
        if fds > self.fds or kids > self.children:
            problems.append(f"the app leaked across worker kills: {self.figures}")
        return problems

    def close(self) -> None:
        services = getattr(self, "services", None)
        if services is not None:
            services.close()
