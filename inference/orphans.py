"""A child process that ends when its parent does.

A child of ours learns that the app died only when it next talks to it: a worker in the
middle of loading a model, or a document reader deep in a hostile PDF, would go on holding
gigabytes for minutes after the app was killed. ``exit_with_parent`` watches the parent's
sentinel (which multiprocessing gives every spawned child, on every platform) from a daemon
thread and ends the child as soon as the parent is gone.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from multiprocessing.connection import wait


def exit_with_parent() -> None:
    """In a child started by multiprocessing: exit at once when the parent process ends."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        wait([parent.sentinel])
        os._exit(0)

    threading.Thread(target=watch, name="enclave-exit-with-parent", daemon=True).start()
