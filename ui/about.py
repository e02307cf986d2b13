"""Help ▸ About Enclave: the version, where the data lives, and the third-party licences."""

from __future__ import annotations

from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QPlainTextEdit, QVBoxLayout, QWidget

from app import __version__
from app.licenses import third_party_licenses
from app.paths import AppPaths


class AboutDialog(QDialog):
    def __init__(self, paths: AppPaths, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("About Enclave")
        self.resize(720, 560)
        layout = QVBoxLayout(self)
        intro = QLabel(
            f"<b>Enclave {__version__}</b><br>Open-weight AI models, entirely on this machine: no telemetry, "
            f"no update checks, no network unless you ask for a download.<br>Your data: {paths.data}"
        )
        intro.setWordWrap(True)
        layout.addWidget(intro)
        layout.addWidget(QLabel("Third-party software included, and its licences:"))
        self.licenses = QPlainTextEdit(third_party_licenses())
        self.licenses.setReadOnly(True)
        layout.addWidget(self.licenses)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
