"""The window's splitters: the chat beside its foldable side panel, and the check that a
remembered splitter state leaves every pane its minimum width."""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt
from PySide6.QtWidgets import QSplitter


def splitter_state_usable(splitter: QSplitter) -> bool:
    """Every pane at least as wide as its minimum: a restored state can say 0 px."""
    for index, size in enumerate(splitter.sizes()):
        widget = splitter.widget(index)
        if not widget.isHidden() and size < max(widget.minimumWidth(), widget.minimumSizeHint().width(), 1):
            return False
    return True


class ChatSplitter(QSplitter):
    """The chat and its side panel. While the panel may fold away, the minimum width is the
    chat's alone: a narrowing window folds the panel instead of refusing to get narrower."""

    def __init__(self) -> None:
        super().__init__(Qt.Orientation.Horizontal)
        self.panel_folds = True

    def minimumSizeHint(self) -> QSize:
        hint = super().minimumSizeHint()
        panel = self.widget(1) if self.count() > 1 else None
        if self.panel_folds and panel is not None and not panel.isHidden():
            panel_min = max(panel.minimumWidth(), panel.minimumSizeHint().width())
            hint.setWidth(max(hint.width() - panel_min - self.handleWidth(), 0))
        return hint
