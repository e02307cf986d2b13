"""The API server inside a process that already has ``Services`` open: the desktop window.

``EmbeddedServer.start`` runs the same checks as ``enclave serve`` (``launch.prepare``), binds
the port itself (so "in use" is known before it says "serving"), then runs uvicorn on a thread
of its own with its own event loop. ``stop`` is graceful as the command's is (``GracefulServer``:
replies in flight get ``grace`` seconds, then end properly). ``status`` is cheap and safe from
any thread: the state, the URL to copy, a one-line reason when it failed, and the requests
served, in flight and waiting (sampled on the server's loop, which owns those counters).

The window's own model work (``TaskRunner``'s serial thread) and the server's (its runner's
thread) reach the same ``Runtime``. The worker process serialises single requests (its lock),
but not a sequence of them: one side's load, prompt-cache restore or ``cancel`` can land between
the other's load and its generation. Until the runtime serialises whole turns, the window should
not chat while the server answers.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import threading
from dataclasses import dataclass, replace
from enum import Enum

from app.server.config import ServeConfig
from app.server.graceful import GRACE_SECONDS, GracefulServer, uvicorn_config
from app.server.launch import Launch, finish, prepare
from app.server.routes import build_app
from app.services import Services
from inference.errors import EnclaveError

log = logging.getLogger(__name__)

START_SECONDS = 10.0  # uvicorn's start-up on a bound socket takes milliseconds
SAMPLE_SECONDS = 0.25
# The checks are the command's; their sentences name its flags, said here as the window's controls
_WINDOW_WORDS = (("give --cert FILE --key FILE for TLS", "choose a TLS certificate and key"),
                 ("(or --insecure to send", "(or tick “Without TLS” to send"),
                 ("TLS needs both --cert FILE and --key FILE", "TLS needs both a certificate and a key"),
                 ("choose another with --port", "choose another port"),
                 ("; use --host 127.0.0.1", "; choose “This computer only”"),
                 ("give one with --host (127.0.0.1 for this machine only)", "choose one of this computer's"))


class ServeState(str, Enum):
    STOPPED = "stopped"
    STARTING = "starting"
    SERVING = "serving"
    STOPPING = "stopping"
    FAILED = "failed"


@dataclass(frozen=True)
class ServeStatus:
    state: ServeState = ServeState.STOPPED
    url: str | None = None  # while serving
    reason: str | None = None  # why it failed, one line
    warning: str | None = None  # serving beyond this machine without TLS
    keys_required: bool = True
    served: int = 0  # requests answered since it started (any status)
    in_flight: int = 0  # admitted and not finished: waiting or running
    waiting: int = 0  # in line for the worker

    @property
    def running(self) -> bool:
        return self.state in (ServeState.STARTING, ServeState.SERVING, ServeState.STOPPING)


def window_words(message: str) -> str:
    """A check's sentence as the window says it: its controls instead of the command's flags."""
    for flag, words in _WINDOW_WORDS:
        message = message.replace(flag, words)
    return message[:1].upper() + message[1:]


def shared_url(config: ServeConfig) -> str:
    """The URL to give others: listening on every interface, this machine's name stands for the address."""
    if config.host.strip("[]") in ("0.0.0.0", "::"):
        return replace(config, host=socket.gethostname()).url
    return config.url


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (bound as uvicorn binds), or an ``EnclaveError`` in words."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise EnclaveError(f"port {port} on {host} is already in use (by another program, or another "
                               "Enclave); choose another port.") from None
        raise EnclaveError(f"cannot listen on {host}:{port}: {exc.strerror or exc}.") from None
    sock.set_inheritable(False)
    return sock


class EmbeddedServer:
    def __init__(self, services: Services, grace: int = GRACE_SECONDS) -> None:
        self.services = services
        self.grace = grace
        self._lock = threading.Lock()  # guards _status, _served, _launch, _uvicorn, _thread
        self._status = ServeStatus()
        self._served = 0
        self._launch: Launch | None = None
        self._uvicorn: GracefulServer | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._abandoned = threading.Event()  # stop() came while start() was still checking

    def status(self) -> ServeStatus:
        with self._lock:
            return replace(self._status, served=self._served)

    def _set(self, **changes: object) -> ServeStatus:
        with self._lock:
            self._status = replace(self._status, **changes)  # type: ignore[arg-type]
            return replace(self._status, served=self._served)

    def _count(self, _line: str) -> None:
        """``Server.log``: called once per finished request."""
        with self._lock:
            self._served += 1

    # Starting ----------------------------------------------------------------------------

    def start(self, asked: ServeConfig) -> ServeStatus:
        """Check, bind and serve; returns once it serves or failed (blocking: call it off the GUI
        thread). Never raises for what a user can cause: that is a FAILED status with its reason."""
        with self._lock:  # checked and claimed at once: a second start returns what the first does
            if self._status.running:
                return replace(self._status, served=self._served)
            self._served = 0
            self._status = ServeStatus(ServeState.STARTING)
        self._started.clear()
        self._abandoned.clear()
        try:
            launch = prepare(self.services, replace(asked, model=None), self._count)
        except EnclaveError as exc:
            return self._set(state=ServeState.FAILED, reason=window_words(str(exc)))
        try:
            sock = listen(launch.config.host.strip("[]"), launch.config.port)
        except EnclaveError as exc:  # taken between the check and now
            finish(self.services, launch)
            return self._set(state=ServeState.FAILED, reason=window_words(str(exc)))
        config = uvicorn_config(build_app(launch.server), launch.config, self.grace)
        server = GracefulServer(config, launch.server.runner.stop_all)
        thread = threading.Thread(target=self._serve, args=(server, sock, launch.server.runner.queue),
                                  name="enclave-api", daemon=True)
        with self._lock:
            abandoned = self._abandoned.is_set()  # checked where stop() looks: no stop falls in between
            if not abandoned:
                thread.start()  # before stop() can see it: it joins it
                self._launch, self._uvicorn, self._thread = launch, server, thread
        if abandoned:
            sock.close()
            finish(self.services, launch)
            return self._set(state=ServeState.STOPPED)
        self._started.wait(START_SECONDS)
        if self.status().state == ServeState.STARTING:
            self._set(state=ServeState.SERVING, url=shared_url(launch.config), warning=launch.warning,
                      keys_required=launch.config.keys_required)
        return self.status()

    def _serve(self, server: GracefulServer, sock: socket.socket, queue: object) -> None:
        """The server's thread: its own event loop until uvicorn stops."""
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._main(server, sock, queue))
        except BaseException as exc:  # uvicorn ends a failed start with SystemExit
            log.exception("the embedded API server failed")
            reason = str(exc) if isinstance(exc, (EnclaveError, OSError)) else "see Enclave's log for details"
            self._set(state=ServeState.FAILED, url=None, reason=f"The server stopped: {reason}")
        finally:
            sock.close()
            loop.close()
            self._started.set()

    async def _main(self, server: GracefulServer, sock: socket.socket, queue: object) -> None:
        sampler = asyncio.ensure_future(self._sample(server, queue))
        try:
            await server.serve(sockets=[sock])
        finally:
            sampler.cancel()

    async def _sample(self, server: GracefulServer, queue: object) -> None:
        """The queue's counters (``FairQueue``), read on the loop that changes them."""
        while True:
            if server.started:
                self._started.set()
            self._set(in_flight=getattr(queue, "in_flight", 0), waiting=getattr(queue, "waiting", 0))
            await asyncio.sleep(SAMPLE_SECONDS)

    # Stopping ----------------------------------------------------------------------------

    def stop(self) -> ServeStatus:
        """Stop listening, give replies in flight the grace, end the server's thread (blocking)."""
        with self._lock:
            launch, server, thread = self._launch, self._uvicorn, self._thread
            self._launch = self._uvicorn = self._thread = None
            if launch is None:
                self._abandoned.set()
        if launch is None or server is None or thread is None:
            return self.status() if self.status().state == ServeState.FAILED else self._set(state=ServeState.STOPPED)
        failed = self.status().state == ServeState.FAILED
        self._set(state=ServeState.STOPPING)
        server.should_exit = True
        thread.join(self.grace + START_SECONDS)
        finish(self.services, launch)
        if failed:
            return self._set(state=ServeState.FAILED)
        return self._set(state=ServeState.STOPPED, url=None, warning=None, in_flight=0, waiting=0)
