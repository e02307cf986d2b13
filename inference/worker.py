"""llama.cpp in a child process, so that a native crash never takes the app down.

The parent side, ``Worker``, sends one request at a time over a pipe and yields the
events that come back; the child side, ``serve``, runs an ``Engine``. A cancel travels
out of band (a shared event the child checks before every token), so it is seen while
the child is busy.

When the child dies (llama.cpp's ``GGML_ASSERT`` aborts, an out-of-memory kill) the
caller gets a ``Failed(kind="crash")`` event quoting the last lines llama.cpp wrote, the
worker is marked crashed, and the next request starts a fresh child, loading the last
model again first when one was loaded.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import multiprocessing
import os
import re
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from inference.errors import (
    ChatTemplateError,
    EnclaveError,
    ModelLoadError,
    NoModelLoaded,
    PromptTooLong,
    WorkerCrashed,
)
from inference.orphans import exit_with_parent
from inference.protocol import (
    TERMINAL,
    BatchClosed,
    BatchEvent,
    BatchOpened,
    BlockSaved,
    ChatMessage,
    CloseBatch,
    ComposeBlocks,
    Composed,
    CountTokens,
    Done,
    EncodeBlock,
    Event,
    Failed,
    Generate,
    Load,
    Loaded,
    ModelInfo,
    ModelSettings,
    OpenBatch,
    RenderChat,
    RenderSegments,
    Request,
    RestoreState,
    SaveState,
    Segments,
    StateRestored,
    StateSaved,
    Submit,
    TokenCounts,
    Tokenize,
    Tokens,
    Unload,
    Unloaded,
    Withdraw,
)

if TYPE_CHECKING:  # the parent never imports llama.cpp: only the child loads these
    from inference.batch import Batcher
    from inference.engine import Engine

log = logging.getLogger(__name__)
# The child's first word on every request (Unload aside): a child that dies before saying it
# never started the request, so the request is safely sent again to a new child.
ACCEPTED = "accepted"
LOG_ROTATE_BYTES = 20 * 1024 * 1024
CRASH_TAIL_LINES = 20


class WorkerState(enum.Enum):
    STOPPED = "stopped"  # no process
    READY = "ready"  # process up, no model
    LOADED = "loaded"
    BUSY = "busy"
    CRASHED = "crashed"  # the last process died; the next request starts a new one


E = TypeVar("E")


class Worker:
    """The parent's handle on the worker process. Not thread-safe except ``cancel``."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self._ctx = multiprocessing.get_context("spawn")
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        # a flag in shared memory: the child reads it before every token, at no cost
        self._cancel = self._ctx.RawValue("b", 0)
        self._lock = threading.Lock()
        self._log_offset = 0
        self._settings: ModelSettings | None = None  # what to load again after a crash
        self.info: ModelInfo | None = None
        self.state = WorkerState.STOPPED
        self.last_crash: Failed | None = None
        # Called before the model is loaded again after a crash, with the settings it will be
        # loaded with; an EnclaveError it raises refuses the reload (the file may have changed
        # since it was admitted). The app checks its policy here.
        self.before_reload: Callable[[ModelSettings], None] | None = None

    # Process lifetime -----------------------------------------------------------------

    @property
    def settings(self) -> ModelSettings | None:
        """The settings of the loaded model (kept across a crash, to load it again)."""
        return self._settings

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process and self._process.is_alive() else None

    def _start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self.log_path.exists() and self.log_path.stat().st_size > LOG_ROTATE_BYTES:
            self.log_path.replace(self.log_path.with_suffix(".log.1"))
        self.log_path.touch()
        self._log_offset = self.log_path.stat().st_size
        parent_conn, child_conn = self._ctx.Pipe()
        process = self._ctx.Process(
            target=serve, args=(child_conn, self._cancel, str(self.log_path)), name="enclave-llama", daemon=True
        )
        try:
            process.start()
        finally:
            child_conn.close()  # so that recv() sees EOF when the child dies
        self._process = process
        self._conn = parent_conn
        self.state = WorkerState.READY

    def _reap(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._process is not None:
            self._process.join(timeout=10)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
            self._process = None

    def close(self) -> None:
        """Stop the worker process (and free every byte the model held)."""
        with self._lock:
            self._reap_after_unload()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Requests ---------------------------------------------------------------------------

    def cancel(self) -> None:
        """Stop the running generation after at most one more token. Any thread."""
        self._cancel.value = 1

    def request(self, request: Request) -> Iterator[Event]:
        """Send ``request``; yield its events, the last one terminal. Never raises for a
        failure of the request itself: that is a ``Failed`` event."""
        with self._lock:
            yield from self._request(request)

    def _request(self, request: Request) -> Iterator[Event]:
        if isinstance(request, Unload):
            self._reap_after_unload()
            yield Unloaded()
            return
        for attempt in range(2):
            if self._process is not None and not self._process.is_alive():
                self._crashed(request)  # it died while idle: say so (in the log), and start afresh
            if self._process is None:
                reload = None if isinstance(request, Load) else self._settings  # the model to load again
                refused = self._refused_reload(reload) if reload is not None else None
                if refused is not None:
                    yield refused
                    return
                self._start()
                if reload is not None:
                    reloaded = yield from self._exchange(Load(reload), forward=False)
                    if isinstance(reloaded, Failed):  # already relayed by _exchange
                        return
            self._cancel.value = 0
            # A child that died between the check above and reading the request (killed while
            # idle) gets one more try, once: the request never ran, so it is not its crash.
            terminal = yield from self._exchange(request, forward=True, retry_if_unread=attempt == 0)
            if terminal is not None:
                break
        if isinstance(request, Load):
            # a failed load leaves no model behind: the old one was unloaded first
            self._settings = request.settings if isinstance(terminal, Loaded) else None

    def _refused_reload(self, settings: ModelSettings) -> Failed | None:
        if self.before_reload is None:
            return None
        try:
            self.before_reload(settings)
        except EnclaveError as exc:
            self._settings = None  # loaded again only by an explicit Load
            return Failed(str(exc))
        return None

    def _exchange(self, request: Request, forward: bool, retry_if_unread: bool = False) -> Iterator[Event]:
        """Send one request and relay its events until the terminal one, which is
        also returned. A dead child becomes a ``Failed(kind="crash")``; with
        ``retry_if_unread``, a child that died before reading the request returns None
        instead, for the caller to send it again."""
        assert self._conn is not None
        self.state = WorkerState.BUSY
        terminal: Event | None = None
        accepted = False
        try:
            with contextlib.suppress(OSError):  # died just now: recv below sees the EOF and reports it
                self._conn.send(request)
            while terminal is None:
                try:
                    event = self._conn.recv()
                except (EOFError, OSError):
                    terminal = self._crashed(request)
                    if retry_if_unread and not accepted:
                        log.warning("the worker had died before reading %s; sending it again to a new one",
                                    type(request).__name__)
                        return None
                    yield terminal
                    return terminal
                if event == ACCEPTED:
                    accepted = True
                    continue
                if isinstance(event, TERMINAL):
                    terminal = event
                    self._after(request, event)
                if forward or isinstance(event, Failed):
                    yield event
            return terminal
        finally:
            if terminal is None:  # the caller stopped listening mid-stream
                self._drain()

    def _after(self, request: Request, event: Event) -> None:
        if isinstance(event, Loaded):
            self.info = event.info
        elif isinstance(request, Load):
            self.info = None  # the child unloads the old model before loading a new one
        self.state = WorkerState.LOADED if self.info is not None else WorkerState.READY

    def _drain(self, until: type | tuple[type, ...] = TERMINAL) -> None:
        """Read and drop what the child still sends for a request no one listens to, up to
        its ``until`` event (a request's terminal event; ``BatchClosed`` for a batch)."""
        if until is TERMINAL:
            self._cancel.value = 1
        try:
            while self._conn is not None and not isinstance(self._conn.recv(), until):
                pass
        except (EOFError, OSError):
            self._reap()
            self.state = WorkerState.CRASHED
            return
        self.state = WorkerState.LOADED if self.info is not None else WorkerState.READY

    def _reap_after_unload(self) -> None:
        """Ask the child to unload and exit, then make sure it has."""
        if self._conn is not None and self._process is not None and self._process.is_alive():
            try:
                self._conn.send(Unload())
                self._conn.recv()
            except (EOFError, OSError):
                pass
        self._reap()
        self._settings = None
        self.info = None
        self.state = WorkerState.STOPPED

    def _crashed(self, request: Request) -> Failed:
        assert self._process is not None
        self._process.join(timeout=5)
        code = self._process.exitcode
        self._reap()
        self.info = None
        self.state = WorkerState.CRASHED
        lines = self.log_tail(n=None)
        if isinstance(request, Load):
            doing = f"loading {Path(request.settings.path).name}"
        elif isinstance(request, OpenBatch):
            doing = "answering a batch of requests"
        else:
            doing = f"running {type(request).__name__.lower()}"
        message = f"llama.cpp crashed while {doing}: the worker process {how_it_ended(code)}."
        cause = crash_cause(lines)
        if RPC_HOST_LOST in cause:
            message = (f"An RPC host stopped answering while {doing}; the model is unloaded. Enclave plans the "
                       "next load without that host while it stays away (llama.cpp: "
                       f"{cause.split(': ', 1)[-1].rstrip('.')}).")
        elif cause:
            message += f" It said: {cause.rstrip('.')}."
            if "GGML_ASSERT" in cause and isinstance(request, Load):
                message += " The model file is probably damaged or made for a newer llama.cpp."
        failure = Failed(message, kind="crash", log_tail=tuple(lines[-CRASH_TAIL_LINES:]))
        self.last_crash = failure
        log.error("%s", message)
        return failure

    def log_tail(self, n: int | None = CRASH_TAIL_LINES) -> list[str]:
        """The last ``n`` lines (all if None) the current or last child wrote to the log."""
        lines = log_lines_since(self.log_path, self._log_offset)
        return lines if n is None else lines[-n:]

    # Typed calls ------------------------------------------------------------------------

    def _call(self, request: Request, expected: type[E]) -> E:
        terminal = None
        for event in self.request(request):
            terminal = event
        if isinstance(terminal, expected):
            return terminal
        assert isinstance(terminal, Failed)
        raise _as_error(terminal)

    def load(self, settings: ModelSettings) -> ModelInfo:
        return self._call(Load(settings), Loaded).info

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = True) -> list[int]:
        return list(self._call(Tokenize(text, add_special, parse_special), Tokens).ids)

    def count_tokens(self, texts: list[str] | tuple[str, ...]) -> list[int]:
        return list(self._call(CountTokens(tuple(texts)), TokenCounts).counts)

    def render_chat(self, messages: tuple[ChatMessage, ...], add_generation_prompt: bool = True) -> Tokens:
        return self._call(RenderChat(messages, add_generation_prompt), Tokens)

    def render_segments(self, messages: tuple[ChatMessage, ...], slot: str, segments: tuple[str, ...]) -> Segments:
        return self._call(RenderSegments(messages, slot, segments), Segments)

    def generate(self, request: Generate) -> Iterator[Event]:
        return self.request(request)

    def encode_block(self, head: tuple[int, ...], tokens: tuple[int, ...], path: Path) -> Iterator[Event]:
        return self.request(EncodeBlock(head, tokens, str(path)))

    def compose_blocks(self, head: tuple[int, ...], blocks: tuple[tuple[str, tuple[int, ...]], ...]) -> int:
        return self._call(ComposeBlocks(head, blocks), Composed).n_tokens

    def save_state(self, path: Path, n_tokens: int | None = None) -> int:
        return self._call(SaveState(str(path), n_tokens), StateSaved).n_tokens

    def restore_state(self, path: Path) -> int:
        return self._call(RestoreState(str(path)), StateRestored).n_tokens

    def unload(self) -> None:
        self._call(Unload(), Unloaded)

    def open_batch(self) -> BatchSession:
        """Start a continuous batch over the loaded model (see ``BatchSession``). The worker
        takes no other request until the session is closed."""
        self._lock.acquire()
        try:
            terminal: Event | None = None
            for event in self._request(OpenBatch()):
                terminal = event
            if not isinstance(terminal, BatchOpened):
                assert isinstance(terminal, Failed)
                raise _as_error(terminal)
            self.state = WorkerState.BUSY
        except BaseException:
            self._lock.release()
            raise
        return BatchSession(self, terminal.slots)


class BatchSession:
    """An open continuous batch. Any thread may ``submit`` and ``withdraw``; one thread reads
    ``events`` — (id, event) pairs, each reply's last a ``Done`` or ``Failed`` — until the
    session ends: after ``close`` (replies still running are withdrawn), or when the worker
    dies (every running reply then gets the crash's ``Failed``, id None). The worker is
    free again once ``events`` has ended."""

    def __init__(self, worker: Worker, slots: int) -> None:
        self._worker = worker
        self.slots = slots
        self._send_lock = threading.Lock()
        self._ended = False

    def submit(self, rid: int, request: Generate) -> None:
        self._send(Submit(rid, request))

    def withdraw(self, rid: int) -> None:
        self._send(Withdraw(rid))

    def close(self) -> None:
        self._send(CloseBatch())

    def _send(self, message: object) -> None:
        conn = self._worker._conn
        with self._send_lock:
            if conn is not None and not self._ended:
                with contextlib.suppress(OSError):  # died: the reader sees the EOF and reports it
                    conn.send(message)

    def events(self) -> Iterator[tuple[int | None, Event]]:
        worker = self._worker
        ended = False
        try:
            while not ended:
                assert worker._conn is not None
                try:
                    message = worker._conn.recv()
                except (EOFError, OSError):
                    ended = True
                    yield None, worker._crashed(OpenBatch())
                    return
                if isinstance(message, BatchClosed):
                    ended = True
                    worker.state = WorkerState.LOADED if worker.info is not None else WorkerState.READY
                elif isinstance(message, BatchEvent):
                    yield message.id, message.event
        finally:
            if not ended:  # the reader stopped early: close the batch, so the worker is usable again
                self.close()
                worker._drain(BatchClosed)
            with self._send_lock:
                self._ended = True
            worker._lock.release()


def log_lines_since(log_path: Path, offset: int) -> list[str]:
    """The non-blank lines written to ``log_path`` after byte ``offset``."""
    try:
        with log_path.open("rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return [ln for ln in text.splitlines() if ln.strip()]


def how_it_ended(exitcode: int | None) -> str:
    """A dead child's end for people: 'was stopped by SIGKILL (...)', 'exited with code 1'."""
    if exitcode is not None and exitcode < 0:
        how = f"was stopped by {signal.Signals(-exitcode).name}"
        if -exitcode == signal.SIGKILL:
            how += " (most often: the system ran out of memory)"
        return how
    return f"exited with code {exitcode}"


RPC_HOST_LOST = "Remote RPC server"  # llama.cpp's RPC client aborts with this when a host goes away


def crash_cause(lines: list[str]) -> str:
    """The line that best explains a crash: a failed assert, else the last error."""
    for needle in ("GGML_ASSERT", "GGML_ABORT", RPC_HOST_LOST, "error"):
        for line in reversed(lines):
            if needle.lower() in line.lower() and not line.startswith("Fatal Python error"):
                return re.sub(r"^.*?(?=GGML_)|^\S*/", "", line.strip()) if needle != "error" else line.strip()
    return ""


def _as_error(failed: Failed) -> EnclaveError:
    if failed.kind == "crash":
        return WorkerCrashed(failed.message, failed.log_tail)
    if failed.kind == "no_model":
        return NoModelLoaded(failed.message)
    if failed.kind == "template":
        return ChatTemplateError(failed.message)
    return ModelLoadError(failed.message, failed.log_tail) if failed.log_tail else EnclaveError(failed.message)


# The child ------------------------------------------------------------------------------


def redirect_output(log_path: str) -> None:
    """Send this child process's own stdout and stderr (native writes included: an assert's
    message, a backtrace) to ``log_path`` instead of the user's terminal. The worker, the
    device probe and the document reader call it first thing."""
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115


def _prompt_tokens(engine: Engine, request: Generate) -> list[int]:
    """A ``Generate``'s prompt as tokens: given, a text, or chat messages rendered."""
    if request.tokens is not None:
        return list(request.tokens)
    if request.prompt is not None:
        return engine.tokenize_prompt(request.prompt)
    return engine.chat_tokens(request.messages)


def serve(conn: Connection, cancel: Synchronized, log_path: str) -> None:
    """The child's main loop: one request at a time until Unload or the pipe closes."""
    import faulthandler

    redirect_output(log_path)
    # Ctrl-C in a terminal reaches the whole process group: the parent turns it into a
    # cancel; the worker must not die of it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ["GGML_NO_BACKTRACE"] = "1"  # ggml would attach gdb to print one; useless to users
    faulthandler.enable(file=sys.stderr, all_threads=False)  # the thread running llama.cpp, not the watcher
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format=f"%(asctime)s [{os.getpid()}] %(name)s: %(message)s"
    )
    from inference.llama_log import LlamaLog

    exit_with_parent()
    llama_log = LlamaLog()
    llama_log.install()
    handler = _Handler(conn, cancel, llama_log)
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            break
        if isinstance(request, Unload):
            handler.close()
            conn.send(Unloaded())
            break
        conn.send(ACCEPTED)
        if isinstance(request, OpenBatch):
            if not handler.run_batch():
                break
        else:
            handler.handle(request)
    handler.close()


class _Handler:
    def __init__(self, conn: Connection, cancel: Synchronized, llama_log: object) -> None:
        self._conn = conn
        self._cancel = cancel
        self._log = llama_log
        self._engine = None
        self._batcher = None  # the engine's continuous batch, kept while the engine is (its slots' cells)

    def close(self) -> None:
        self._batcher = None
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def run_batch(self) -> bool:
        """The batch's loop (``OpenBatch`` … ``CloseBatch``): messages are read whenever they
        come, between decode steps; blocks only when no reply is left. False when the pipe
        closed (the parent is gone)."""
        from inference.batch import Batcher

        try:
            engine = self._need_engine()
        except NoModelLoaded as exc:
            self._conn.send(Failed(str(exc), kind="no_model"))
            return True
        if self._batcher is None:
            self._batcher = Batcher(engine)
        batcher = self._batcher
        self._conn.send(BatchOpened(batcher.slots))
        closing = False
        try:
            while True:
                while self._conn.poll(0 if batcher.busy or closing else None):
                    message = self._conn.recv()
                    if isinstance(message, Submit):
                        self._send_batch(self._submitted(batcher, engine, message))
                    elif isinstance(message, Withdraw):
                        self._send_batch(batcher.withdraw(message.id))
                    elif isinstance(message, CloseBatch):
                        closing = True
                        self._send_batch(batcher.withdraw_all())
                    if closing and not batcher.busy:
                        break
                if closing and not batcher.busy:
                    self._conn.send(BatchClosed())
                    return True
                # (the shared cancel flag is not read here: a batch's replies stop by Withdraw, each
                # its own; one flag would stop them all, and every later one, until the next request)
                self._send_batch(batcher.step())
        except (EOFError, OSError):
            return False

    @staticmethod
    def _submitted(batcher: Batcher, engine: Engine, message: Submit) -> list[tuple[int, Event]]:
        if any(m.images for m in message.request.messages):  # image runs are evaluated by sequence 0 only
            return [(message.id, Failed("Images are answered one chat at a time, not in the server's batch."))]
        try:
            prompt = _prompt_tokens(engine, message.request)
        except ChatTemplateError as exc:
            return [(message.id, Failed(str(exc), kind="template"))]
        except EnclaveError as exc:
            return [(message.id, Failed(str(exc)))]
        return batcher.add(message.id, prompt, message.request.sampling)

    def _send_batch(self, emitted: Sequence[tuple[int, Event]]) -> None:
        for rid, event in emitted:
            self._conn.send(BatchEvent(rid, event))

    def handle(self, request: Request) -> None:
        try:
            for event in self._dispatch(request):
                self._conn.send(event)
        except ChatTemplateError as exc:
            self._conn.send(Failed(str(exc), kind="template"))
        except NoModelLoaded as exc:
            self._conn.send(Failed(str(exc), kind="no_model"))
        except PromptTooLong as exc:
            self._conn.send(Failed(str(exc), kind="too_long"))
        except ModelLoadError as exc:
            self._conn.send(Failed(str(exc), log_tail=exc.log_tail))
        except EnclaveError as exc:
            self._conn.send(Failed(str(exc)))
        except Exception as exc:
            logging.getLogger(__name__).error("request failed:\n%s", traceback.format_exc())
            self._conn.send(Failed(f"Unexpected error in the worker: {type(exc).__name__}: {exc}"))

    def _free_batch_cells(self) -> None:
        """Sequence 0 is about to grow: the batch's idle slots give their cells back."""
        if self._batcher is not None:
            self._batcher.forget_cells()

    def _cancelled(self) -> bool:
        return self._cancel.value != 0

    def _need_engine(self):
        if self._engine is None:
            raise NoModelLoaded("No model is loaded. Load a model first.")
        return self._engine

    def _dispatch(self, request: Request) -> Iterator[Event]:
        from inference.engine import Engine
        from inference.protocol import Stats

        if isinstance(request, Load):
            self.close()
            self._engine = Engine(request.settings, self._log)
            yield Loaded(self._engine.info)
        elif isinstance(request, Tokenize):
            engine = self._need_engine()
            yield Tokens(tuple(engine.tokenize(request.text, request.add_special, request.parse_special)))
        elif isinstance(request, CountTokens):
            engine = self._need_engine()
            yield TokenCounts(tuple(len(engine.tokenize(t, add_special=False, parse_special=False))
                                    for t in request.texts))
        elif isinstance(request, RenderChat):
            engine = self._need_engine()
            text = engine.render_chat(request.messages, request.add_generation_prompt)
            yield Tokens(tuple(engine.chat_tokens(request.messages, request.add_generation_prompt)), text)
        elif isinstance(request, Generate):
            engine = self._need_engine()
            prompt = _prompt_tokens(engine, request)
            self._free_batch_cells()
            for item in engine.generate(prompt, request.sampling, self._cancelled, composed=request.composed):
                if isinstance(item, Stats):
                    yield Done(item)
                else:
                    yield item
        elif isinstance(request, RenderSegments):
            yield self._need_engine().render_segments(request.messages, request.slot, request.segments)
        elif isinstance(request, EncodeBlock):
            self._free_batch_cells()
            blocks = self._need_engine().encode_block(request.head, request.tokens, Path(request.path), self._cancelled)
            saved = yield from blocks
            yield BlockSaved(request.path, len(request.tokens), cancelled=not saved)
        elif isinstance(request, ComposeBlocks):
            blocks = [(Path(path), tokens) for path, tokens in request.blocks]
            self._free_batch_cells()
            yield Composed(self._need_engine().compose(request.head, blocks))
        elif isinstance(request, SaveState):
            engine = self._need_engine()
            yield StateSaved(request.path, engine.save_state(Path(request.path), request.n_tokens))
        elif isinstance(request, RestoreState):
            self._free_batch_cells()
            yield StateRestored(self._need_engine().restore_state(Path(request.path)))
        else:
            raise EnclaveError(f"Unknown request {type(request).__name__}")
