"""The window and the API server inside it share one worker: one turn at a time.

A chat turn started while the server's batch streams waits for the worker instead of
loading or generating in between, and completes afterwards; the window's Stop while it waits
ends only its own turn — the server's reply streams on to its last token.
"""

from __future__ import annotations

import json
import socket
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.chat import ReplyFinished, WorkerBusy
from app.server.config import ServeConfig
from app.server.embedded import EmbeddedServer
from app.services import Services

pytestmark = pytest.mark.timeout(180)
SERVER_TOKENS = 1000  # long enough to be streaming still while the turn waits


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Stream(threading.Thread):
    """One streamed request to the server, read to its end."""

    def __init__(self, url: str) -> None:
        super().__init__()
        body = {"model": "tiny-moe", "stream": True, "max_tokens": SERVER_TOKENS, "temperature": 0,
                "stream_options": {"include_usage": True},
                "messages": [{"role": "user", "content": "Tell a long story."}]}
        self.request = urllib.request.Request(f"{url}/chat/completions", data=json.dumps(body).encode(),
                                              headers={"Content-Type": "application/json"})
        self.chunks: list[dict] = []
        self.started_streaming = threading.Event()

    def run(self) -> None:
        with urllib.request.urlopen(self.request, timeout=150) as response:
            for line in response:
                data = line.decode().strip().removeprefix("data: ")
                if line.startswith(b"data: ") and data != "[DONE]":
                    self.chunks.append(json.loads(data))
                    if len(self.chunks) > 3:
                        self.started_streaming.set()

    @property
    def usage(self) -> dict:
        return next(c["usage"] for c in self.chunks if c.get("usage"))


class Turn(threading.Thread):
    """The window's chat turn, in its own thread as the window's task runner runs it."""

    def __init__(self, services: Services, conversation_id: int) -> None:
        super().__init__()
        self.services, self.conversation_id = services, conversation_id
        self.finished: ReplyFinished | None = None
        self.events: list[object] = []

    def run(self) -> None:
        for event in self.services.chat.send(self.conversation_id, "hello"):
            self.events.append(event)
            if isinstance(event, ReplyFinished):
                self.finished = event


@pytest.fixture
def serving(services: Services, moe_model: Path) -> Iterator[tuple[Services, str]]:
    services.import_model(moe_model, "in_place")
    server = EmbeddedServer(services)
    status = server.start(ServeConfig(port=free_port(), model="tiny-moe"))
    assert status.url, status
    yield services, status.url
    server.stop()


def waiting_turn(services: Services, url: str) -> tuple[Stream, Turn]:
    """A server reply streaming, and a window's chat turn started meanwhile, waiting for the worker."""
    stream = Stream(url)
    stream.start()
    assert stream.started_streaming.wait(60)
    turn = Turn(services, services.chat.start(model="tiny-moe").id)
    turn.start()
    turn.join(0.3)
    assert turn.is_alive() and stream.is_alive()  # the turn waits while the batch streams
    return stream, turn


def test_a_chat_turn_waits_for_the_servers_batch_then_answers(serving: tuple[Services, str]) -> None:
    stream, turn = waiting_turn(*serving)
    stream.join(120)
    turn.join(60)
    assert stream.usage["completion_tokens"] == SERVER_TOKENS
    assert turn.finished is not None and turn.finished.message.status == "complete"
    assert turn.finished.message.content
    assert any(isinstance(e, WorkerBusy) for e in turn.events)  # the window says why it waits


def test_the_windows_stop_while_it_waits_ends_only_its_own_turn(serving: tuple[Services, str]) -> None:
    services, _url = serving
    stream, turn = waiting_turn(*serving)
    services.chat.cancel()  # the window's Stop, while its turn waits for the worker
    stream.join(120)
    turn.join(60)
    assert stream.usage["completion_tokens"] == SERVER_TOKENS  # the server's reply was not cut short
    assert stream.chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert turn.finished is not None and turn.finished.message.stop_reason == "cancelled"
    assert not turn.finished.message.content  # stopped before it began
