"""A soak run of the desktop app: many streamed replies through the real chat page, then
many model load/unload cycles, in one GUI process (offscreen). What it measures is this
process's resident memory after a warm-up, its open file handles and its child processes:
memory may grow by less than 50 MB, and handles and children must come back to where
they were.

    python -m tests.proofs.soak --replies 1000 --cycles 100
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QtMsgType, qInstallMessageHandler
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from app.paths import AppPaths
from app.services import Services
from inference.protocol import ModelSettings
from tests.proofs.probes import children, open_fds, rss_bytes
from tests.tiny_models import MOE, write_tiny_model
from ui.chat_view import ChatPage
from ui.tasks import TaskRunner

MAX_GROWTH = 50 * 2**20
PER_CONVERSATION = 10  # replies per conversation, as a user starts new chats
REPLY_TIMEOUT = 120.0


@dataclass(frozen=True)
class Sample:
    rss: int
    fds: int
    children: int

    @classmethod
    def now(cls) -> Sample:
        return cls(rss_bytes(), open_fds(), len(children()))


@dataclass
class SoakResult:
    replies: int
    cycles: int
    warm_up: int
    before: Sample  # after the warm-up, a model loaded
    after_replies: Sample
    after: Sample  # after the cycles, the model loaded again
    unloaded: tuple[tuple[int, int], tuple[int, int]]  # (fds, children) after the first and the last unload
    complete: int  # replies stored complete
    seconds: float

    @property
    def growth(self) -> int:
        return max(self.after_replies.rss, self.after.rss) - self.before.rss

    def problems(self) -> list[str]:
        problems = []
        if self.growth >= MAX_GROWTH:
            problems.append(f"GUI memory grew by {self.growth / 2**20:.1f} MB (limit {MAX_GROWTH // 2**20} MB)")
        # fewer open files is fine: Qt ends pool threads idle for 30 s, and with them their event fds
        if self.after.fds > self.before.fds or self.after.children != self.before.children:
            problems.append(f"open files or child processes leaked: {self.before} -> {self.after}")
        if self.unloaded[1][0] > self.unloaded[0][0] or self.unloaded[1][1] != self.unloaded[0][1]:
            problems.append(f"after unloading, (open files, children) went from {self.unloaded[0]} to "
                            f"{self.unloaded[1]}")
        if self.complete != self.replies + self.warm_up:
            problems.append(f"{self.complete} replies stored complete of {self.replies + self.warm_up}")
        return problems

    def report(self) -> str:
        mb = 2**20
        return (f"soak: {self.replies} replies, {self.cycles} load/unload cycles, GUI RSS "
                f"{self.growth / mb:+.1f} MB after a warm-up of {self.warm_up} replies "
                f"({self.before.rss / mb:.1f} -> {self.after_replies.rss / mb:.1f} MB after the replies, "
                f"{self.after.rss / mb:.1f} MB after the cycles), open files {self.before.fds} before / "
                f"{self.after.fds} after, child processes {self.before.children} before / {self.after.children} "
                f"after (with the model unloaded: {self.unloaded[0]} after the first cycle, {self.unloaded[1]} after "
                f"the last), {self.complete} replies stored complete, {self.seconds:.0f} s")


def _wait_until_idle(page: ChatPage) -> None:
    deadline = time.monotonic() + REPLY_TIMEOUT
    while page.busy:
        if time.monotonic() > deadline:
            raise TimeoutError("a reply took longer than two minutes")
        QTest.qWait(5)


def _send(page: ChatPage, count: int) -> None:
    for _ in range(count):
        if page.conversation is not None and page.model.rowCount() >= 2 * PER_CONVERSATION:
            page.new_conversation()
        page.composer.setPlainText(f"tell me about the secure library, part {page.model.rowCount() // 2}")
        page.submit()
        _wait_until_idle(page)


def _cycle(services: Services, model: str, settings: ModelSettings) -> tuple[int, int]:
    """Unload and load again; (open files, children) while unloaded."""
    services.runtime.unload()
    unloaded = (open_fds(), len(children()))
    services.runtime.load(model, settings)
    return unloaded


def soak(home: Path, model: Path, replies: int, cycles: int, warm_up: int) -> SoakResult:
    """Run the soak in this process (which must have a QApplication)."""
    started = time.monotonic()
    with Services.open(AppPaths.under(home)) as services:
        registered = services.models.import_files([model], "in_place")
        for key, value in {"default_model": registered.id, "max_tokens": 16, "temperature": 0.0,
                           "context_length": 1024, "threads": 1}.items():
            services.settings.set(key, value)
        tasks = TaskRunner()
        page = ChatPage(services, tasks)
        page.resize(900, 700)
        page.show()
        try:
            _send(page, warm_up)
            before = Sample.now()
            _send(page, replies)
            after_replies = Sample.now()
            settings = services.runtime.worker.settings
            assert settings is not None
            unloaded = [_cycle(services, registered.id, settings) for _ in range(cycles)]
            after = Sample.now()
        finally:
            services.chat.cancel()
            tasks.wait(60_000)
            page.close()
            page.deleteLater()
        complete = services.store.read().execute(
            "SELECT count(*) FROM messages WHERE role = 'assistant' AND status = 'complete'").fetchone()[0]
    return SoakResult(replies, cycles, warm_up, before, after_replies, after, (unloaded[0], unloaded[-1]),
                      complete, time.monotonic() - started)


def _quiet_offscreen(kind: QtMsgType, context: object, message: str) -> None:
    """Qt's offscreen platform warns about every window it cannot size; the rest is shown."""
    if "propagateSizeHints" not in message:
        print(message, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replies", type=int, default=1000)
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--warm-up", type=int, default=100, help="replies before memory is first measured")
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    qInstallMessageHandler(_quiet_offscreen)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    with tempfile.TemporaryDirectory(prefix="enclave-soak-") as tmp:
        work = Path(tmp)
        logging.basicConfig(filename=work / "soak.log", level=logging.INFO)
        model = write_tiny_model(work / "tiny-moe.gguf", MOE)
        result = soak(work / "home", model, args.replies, args.cycles, args.warm_up)
    del app
    print(result.report())
    for problem in result.problems():
        print(f"  {problem}")
    return 1 if result.problems() else 0


if __name__ == "__main__":
    sys.exit(main())
