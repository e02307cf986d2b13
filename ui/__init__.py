"""The PySide6 desktop app: a view over the ``app`` services."""
