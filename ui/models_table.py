"""The registered models as a table model: one row per ``app.models.Model``."""

from __future__ import annotations

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QFont

from app.models import Model
from app.types import format_size

COLUMNS = ("Name", "Architecture", "Experts", "Quant", "Trained context", "Size", "Origin", "Verified")
ORIGINS = {"copied": "copied in", "linked": "linked", "in_place": "in place", "downloaded": "downloaded",
           "discovered": "other app"}
Index = QModelIndex | QPersistentModelIndex


def experts_text(model: Model) -> str:
    """'8 (2 used)', or '—' for a dense model."""
    if not model.experts:
        return "—"
    return f"{model.experts} ({model.experts_used or '?'} used)"


def cell_text(model: Model, column: int) -> str:
    values = (
        model.name,
        (model.architecture or "?") + (", reads images" if model.reads_images else ""),
        experts_text(model),
        model.quantization or "?",
        f"{model.context_length:,}" if model.context_length else "?",
        format_size(model.size),
        ORIGINS.get(model.origin, model.origin),
        model.verified_at[:10] if model.verified_at else "never",
    )
    return values[column]


class ModelsTableModel(QAbstractTableModel):
    def __init__(self, parent: object = None) -> None:
        super().__init__(parent)  # type: ignore[arg-type]
        self._models: list[Model] = []
        self.default_id: str | None = None

    def set_models(self, models: list[Model], default_id: str | None) -> None:
        self.beginResetModel()
        self._models = list(models)
        self.default_id = default_id
        self.endResetModel()

    def model_at(self, row: int) -> Model | None:
        return self._models[row] if 0 <= row < len(self._models) else None

    def row_of(self, model_id: str) -> int:
        return next((i for i, m in enumerate(self._models) if m.id == model_id), -1)

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008 (Qt's signature)
        return 0 if parent.isValid() else len(self._models)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> object:
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return COLUMNS[section]
        return None

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> object:
        model = self.model_at(index.row()) if index.isValid() else None
        if model is None:
            return None
        is_default = model.id == self.default_id
        if role == Qt.ItemDataRole.DisplayRole:
            text = cell_text(model, index.column())
            return f"{text}  (default)" if index.column() == 0 and is_default else text
        if role == Qt.ItemDataRole.ToolTipRole:
            files = "\n".join(f.path for f in model.files)
            images = (f"\n{model.projector.describe()}, {format_size(model.projector.size)}:\n{model.projector.path}"
                      if model.projector is not None else "")
            return f"{model.name}\n{model.id}\n{files}{images}"  # the full name, should the column elide it
        if role == Qt.ItemDataRole.FontRole and is_default:
            font = QFont()
            font.setBold(True)
            return font
        if role == Qt.ItemDataRole.TextAlignmentRole and index.column() in (4, 5):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.UserRole:
            return model.id
        return None
