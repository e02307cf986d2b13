"""Render assets/enclave.svg into the icons the installers need.

    .venv/bin/python scripts/make_icons.py

writes assets/icons/enclave-<N>.png (16 … 512), assets/enclave.png (256),
assets/enclave.ico (Windows) and assets/enclave.icns (macOS). The SVG is rendered with
Qt's own SVG renderer (PySide6.QtSvg, no display needed); the ICO and ICNS containers are
written with Pillow (the ``package`` extra). The outputs are committed, so a build never
needs this script; run it again only when the SVG changes.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PIL import Image
from PySide6.QtCore import QBuffer, QByteArray, QIODevice, Qt
from PySide6.QtGui import QGuiApplication, QImage, QPainter
from PySide6.QtSvg import QSvgRenderer

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "assets"
SVG = ASSETS / "enclave.svg"
SIZES = (16, 24, 32, 48, 64, 128, 256, 512)
ICO_SIZES = (16, 24, 32, 48, 64, 128, 256)


def render(renderer: QSvgRenderer, size: int) -> Image.Image:
    image = QImage(size, size, QImage.Format.Format_ARGB32)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
    renderer.render(painter)
    painter.end()
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    image.save(buffer, "PNG")
    buffer.close()
    return Image.open(io.BytesIO(bytes(data))).convert("RGBA")


def main() -> int:
    QGuiApplication.instance() or QGuiApplication(sys.argv[:1])
    renderer = QSvgRenderer(str(SVG))
    if not renderer.isValid():
        print(f"cannot render {SVG}", file=sys.stderr)
        return 1
    icons = ASSETS / "icons"
    icons.mkdir(exist_ok=True)
    images = {size: render(renderer, size) for size in (*SIZES, 1024)}
    for size in SIZES:
        images[size].save(icons / f"enclave-{size}.png", optimize=True)
    images[256].save(ASSETS / "enclave.png", optimize=True)
    # ICO: one entry per size, each rendered from the SVG at that size (not downscaled).
    images[256].save(
        ASSETS / "enclave.ico",
        format="ICO",
        sizes=[(s, s) for s in ICO_SIZES],
        append_images=[images[s] for s in ICO_SIZES if s != 256],
    )
    # ICNS: Pillow picks the 16…1024 renditions it needs from append_images.
    images[1024].save(
        ASSETS / "enclave.icns",
        format="ICNS",
        append_images=[images[s] for s in (16, 32, 64, 128, 256, 512)],
    )
    for path in sorted([*icons.glob("*.png"), ASSETS / "enclave.png", ASSETS / "enclave.ico", ASSETS / "enclave.icns"]):
        print(f"{path.relative_to(ROOT)}  {path.stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
