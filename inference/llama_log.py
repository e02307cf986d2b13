"""Route llama.cpp's log into Python ``logging``, once, in the process that runs it.

llama.cpp sends its log in fragments (a line may come in several calls, the later ones
with level CONT). ``LlamaLog`` joins them into whole lines, hands each to the
``enclave.llama`` logger and keeps the recent ones so that the engine can read what
llama.cpp said about a load (buffer sizes, tensor placement) and a crash report can
quote the last lines.
"""

from __future__ import annotations

import collections
import ctypes
import logging
import threading

logger = logging.getLogger("enclave.llama")

# ggml_log_level: NONE, INFO, WARN, ERROR, DEBUG, CONT
_LEVELS = {0: logging.CRITICAL, 1: logging.INFO, 2: logging.WARNING, 3: logging.ERROR, 4: logging.DEBUG}
_CONT = 5


class LlamaLog:
    """Collects llama.cpp log lines; install() makes it llama.cpp's log callback."""

    def __init__(self, keep: int = 2000) -> None:
        self._recent: collections.deque[str] = collections.deque(maxlen=keep)
        self._partial = ""
        self._level = logging.INFO
        self._lock = threading.Lock()
        self._marks = 0  # lines ever completed, for since()
        self._callback = None

    def install(self) -> None:
        import llama_cpp

        @llama_cpp.llama_log_callback
        def callback(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
            self.feed(level, text.decode("utf-8", errors="replace"))

        self._callback = callback  # keep a reference: llama.cpp holds only the pointer
        llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
        try:  # the multimodal library (vision projectors) logs through its own setter
            from llama_cpp import mtmd_cpp
        except (ImportError, OSError):  # a build without libmtmd: no vision models, nothing to route
            return
        mtmd_cpp.mtmd_log_set(callback, ctypes.c_void_p(0))
        mtmd_cpp.mtmd_helper_log_set(callback, ctypes.c_void_p(0))

    def feed(self, level: int, text: str) -> None:
        with self._lock:
            if level != _CONT:
                self._level = _LEVELS.get(level, logging.INFO)
            self._partial += text
            *lines, self._partial = self._partial.split("\n")
            for line in lines:
                self._recent.append(line)
                self._marks += 1
                logger.log(self._level, "%s", line)

    def mark(self) -> int:
        """A position in the log; lines logged after it come back from since()."""
        with self._lock:
            return self._marks

    def since(self, mark: int) -> list[str]:
        with self._lock:
            count = min(self._marks - mark, len(self._recent))
            return list(self._recent)[len(self._recent) - count :] if count > 0 else []

    def tail(self, n: int = 20) -> list[str]:
        with self._lock:
            return list(self._recent)[-n:]
