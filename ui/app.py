"""Start the desktop app: ``enclave``, ``enclave gui`` or ``python -m ui.app``.

One ``Services`` for the life of the window; it is closed (the model worker stopped, the
database closed) when the window closes. A data folder in use by another Enclave, or a
damaged database, is a message box and exit code 2 — never a traceback.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import QSettings, QTimer
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication, QMessageBox

import ui.pyside_fixes  # noqa: F401  (before any signal is emitted)
from app.logs import configure_logging
from app.paths import app_paths
from app.policy import PolicyError
from app.services import Services
from app.store import StoreError
from app.types import EnclaveError
from ui.main_window import MainWindow
from ui.qt_requirements import check_qt_requirements
from ui.tasks import TaskRunner
from ui.theme import apply_theme

ICON = Path(__file__).resolve().parent.parent / "assets" / "enclave.svg"
EXIT_USER_ERROR = 2
SHUTDOWN_WAIT_MS = 10_000
log = logging.getLogger(__name__)


def application(argv: Sequence[str] | None = None) -> QApplication:
    """The process's QApplication (made once), named, themed, with Enclave's icon."""
    app = QApplication.instance()
    if not isinstance(app, QApplication):
        app = QApplication(list(argv) if argv is not None else sys.argv)
    app.setApplicationName("Enclave")
    app.setOrganizationName("Enclave")
    app.setApplicationDisplayName("Enclave")
    app.setDesktopFileName("enclave")
    if ICON.exists():
        app.setWindowIcon(QIcon(str(ICON)))
    apply_theme(app)
    return app


def open_services() -> Services | None:
    """The services, or None after telling the user why they cannot be opened."""
    try:
        return Services.open()
    except (StoreError, EnclaveError) as exc:  # the folder in use or damaged; a policy's audit log unwritable
        message = str(exc)
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        message = f"Enclave cannot use its data folder{where}: {exc.strerror or exc}."
    log.error("cannot start: %s", message)
    QMessageBox.critical(None, "Enclave cannot start", message)
    return None


def keep_settings_in(folder: Path) -> None:
    """Any ``QSettings()`` made by a page is an INI file in Enclave's config folder — never
    the Windows registry, a macOS plist or ~/.config outside ENCLAVE_HOME."""
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    for scope in (QSettings.Scope.UserScope, QSettings.Scope.SystemScope):
        QSettings.setPath(QSettings.Format.IniFormat, scope, str(folder))


def main(argv: Sequence[str] | None = None) -> int:
    missing = check_qt_requirements()  # before Qt's own "could not load the Qt platform plugin" abort
    if missing is not None:
        print(missing, file=sys.stderr)
        return EXIT_USER_ERROR
    app = application(argv)
    try:
        paths = app_paths()  # reads the organisation's policy: one that is not valid stops Enclave here
    except PolicyError as exc:
        QMessageBox.critical(None, "Enclave cannot start", str(exc))
        return EXIT_USER_ERROR
    configure_logging(paths)
    keep_settings_in(paths.config)
    services = open_services()
    if services is None:
        return EXIT_USER_ERROR
    tasks = TaskRunner()
    try:
        window = MainWindow(services, tasks)
        window.show()
        # Ctrl-C in the terminal that started Enclave closes the window like the close button
        # (Python sees signals only when it runs: the timer lets it, four times a second).
        previous = signal.signal(signal.SIGINT, lambda *_: window.close())
        previous_term = signal.signal(signal.SIGTERM, lambda *_: window.close())  # logout, kill: close cleanly
        wake = QTimer(interval=250)
        wake.timeout.connect(lambda: None)
        wake.start()
        try:
            code = app.exec()
        finally:
            wake.stop()
            signal.signal(signal.SIGINT, previous)
            signal.signal(signal.SIGTERM, previous_term)
        tasks.wait(SHUTDOWN_WAIT_MS)  # a stopped reply finishes writing before the database closes
        return code
    finally:
        services.close()


if __name__ == "__main__":
    sys.exit(main())
