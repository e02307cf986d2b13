"""Screenshots for the README, made by driving the real app offscreen.

    python scripts/screenshots.py [--out docs/screenshots] [--size 1024x700 --size 1920x1080] [--scheme light]

A temporary ENCLAVE_HOME gets the tiny model of ``tests/tiny_models.py`` (registered in
place), a small library of Markdown notes and a PDF, one short conversation and one about
two pictures; then the window is grabbed on the chat (with its side panel: the model, the
memory plan proposed for it and the context the conversation used), the chat with images
(a message showing two, a reply, and two attached to the message box), the models page
(with the selected model's memory plan), the library, the settings, the start screen and
the About dialog — at every size, in light and in dark — as ``PAGE-WxH-SCHEME.png``
(``chat-1024x700-light.png``). Nothing is sent anywhere.

The scheme is normally the system's; here it is forced: the palette (``theme.palette_for``)
and ``theme.is_dark``, which the semantic colours follow. Pages built once keep the colours
they were built with, so each scheme gets a window of its own.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the repository root holds tests/ (the tiny model)
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from tests.event_loop import spin_until  # noqa: E402

if TYPE_CHECKING:
    from PySide6.QtWidgets import QApplication

    from app.services import Services

SIZES = ("1024x700", "1920x1080")
SCHEMES = ("light", "dark")
QUESTION = "What do the notes say about keeping data on this machine?"
ANSWER = (
    "The notes are clear on this: **nothing leaves the machine**.\n\n"
    "- Models run locally through llama.cpp, in a separate worker process [doc 1].\n"
    "- Conversations and libraries live in one SQLite database under the data folder [doc 2].\n"
    "- Downloads happen only when you ask for one, and never in offline mode [doc 1].\n\n"
    "So an air-gapped laptop works the same as a connected one, minus the downloads."
)
NOTES = {
    "privacy.md": "# Privacy\n\nEnclave keeps every model, document and conversation on this machine. "
                  "There is no telemetry and no update check.\n",
    "storage.md": "# Storage\n\nConversations and libraries are stored in a SQLite database in the data folder; "
                  "model files stay where you put them or in Enclave's model folder.\n",
    "offline.md": "# Offline mode\n\nWith offline mode on, even downloads are refused before a socket opens.\n",
}


def settle(seconds: float = 1.0, done: Callable[[], bool] = lambda: False) -> None:
    """Let queued work (plans, token counts, pages) arrive and paint."""
    spin_until(done, seconds)


IMAGE_QUESTION = "Which month had the most sales, and what is in the photo?"
IMAGE_ANSWER = ("**July** had the most sales: its bar is the tallest in the chart.\n\n"
                "The photo shows a sunset over the sea, with a low orange sun above the horizon.")


def draw_pictures(folder: Path) -> list[Path]:
    """A bar chart and a "photo" (drawn with Pillow), as a user would attach them."""
    from PIL import Image, ImageDraw

    folder.mkdir()
    chart = Image.new("RGB", (640, 400), (250, 250, 252))
    draw = ImageDraw.Draw(chart)
    for i, value in enumerate((120, 180, 150, 260, 210, 300, 340, 280)):
        draw.rectangle((40 + i * 72, 360 - value, 90 + i * 72, 360), fill=(66, 133, 244))
    draw.line((30, 360, 620, 360), fill=(60, 60, 60), width=2)
    sunset = Image.new("RGB", (480, 640))
    draw = ImageDraw.Draw(sunset)
    for y in range(640):
        sky = y < 400
        t = y / 400 if sky else (y - 400) / 240
        colour = ((255, int(120 + 80 * t), int(60 + 40 * t)) if sky else (int(30 + 20 * t), 60, int(120 - 40 * t)))
        draw.line((0, y, 480, y), fill=colour)
    draw.ellipse((190, 300, 290, 400), fill=(255, 200, 80))
    paths = [folder / "sales-by-month.png", folder / "sunset.jpg"]
    chart.save(paths[0])
    sunset.save(paths[1], quality=90)
    return paths


def prepare(root: Path) -> tuple[int, int, int]:
    """The model, a library and conversations in the temporary home: (library id, conversation
    id, the id of the conversation with images)."""
    from app.ingest import ingest
    from app.services import Services
    from tests.docs_samples import write_pdf
    from tests.tiny_models import MOE, write_tiny_model

    model_path = write_tiny_model(root / "tiny-moe.gguf", MOE)
    docs = root / "Project notes"
    docs.mkdir()
    for name, text in NOTES.items():
        (docs / name).write_text(text)
    write_pdf(docs / "quarterly-report.pdf")
    with Services.open() as services:
        model = services.models.import_files([model_path], "in_place")
        services.settings.set("default_model", model.id)
        library = services.libraries.create("Project notes")
        ingest(services.libraries, library, [docs])
        for title, text in (("Packing list for the trip", "What should I pack for three days of hiking?"),
                            ("Summarise the contract", "Summarise the termination clause.")):
            older = services.conversations.create(title=title, model=model.id)
            services.conversations.add_message(older.id, "user", text)
        chat = services.conversations.create(title="Where does my data go?", model=model.id)
        services.conversations.add_message(chat.id, "user", QUESTION)
        services.conversations.add_message(chat.id, "assistant", ANSWER, model=model.id, prompt_tokens=412,
                                           completion_tokens=96, generation_seconds=1.9, prompt_seconds=0.4,
                                           stop_reason="stop")
        pictures = services.add_images(draw_pictures(root / "pictures"))
        with_images = services.conversations.create(title="Sales chart and a photo", model=model.id)
        services.conversations.add_message(with_images.id, "user", IMAGE_QUESTION, images=pictures)
        services.conversations.add_message(with_images.id, "assistant", IMAGE_ANSWER, model=model.id,
                                           prompt_tokens=600, completion_tokens=41, generation_seconds=0.8,
                                           stop_reason="stop")
        return library.id, chat.id, with_images.id


def force_scheme(app: QApplication, dark: bool) -> None:
    """Light or dark whatever the system says (offscreen has no scheme of its own)."""
    from ui import theme

    theme.is_dark = lambda: dark  # colors() follows it
    app.setPalette(theme.palette_for(dark))


def shoot_window(services: Services, out: Path, size: str, scheme: str, ids: tuple[int, int, int],
                 pictures: list[Path]) -> list[Path]:
    """Every page of one window at one size and scheme."""
    from PySide6.QtWidgets import QApplication, QWidget

    from ui.about import AboutDialog
    from ui.main_window import MainWindow
    from ui.tasks import TaskRunner

    library_id, chat_id, images_id = ids
    width, height = (int(n) for n in size.lower().split("x"))
    app = QApplication.instance()
    force_scheme(app, scheme == "dark")
    tasks = TaskRunner()
    window = MainWindow(services, tasks)
    window.resize(width, height)
    window.show()
    settle(0.5)
    saved: list[Path] = []

    def shoot(name: str, seconds: float = 1.0, widget: QWidget | None = None) -> None:
        settle(seconds)
        path = out / f"{name}-{size}-{scheme}.png"
        if not (widget or window).grab().save(str(path)):
            raise SystemExit(f"could not write {path}")
        saved.append(path)

    window.show_side_panel(True)
    window.open_conversation(chat_id)
    settle(3.0, lambda: window.side_panel.plan is not None)  # the model is read on a pool thread
    shoot("chat")

    window.open_conversation(images_id)
    window.chat.attach_images(list(pictures))  # read on a pool thread
    settle(10.0, lambda: len(window.chat.attachments.refs()) == len(pictures))
    shoot("chat-images")
    window.chat.attachments.clear()

    window.show_page("models")
    [model] = services.models.all()
    if hasattr(window.models, "select_model"):
        window.models.select_model(model.id)
    # the memory plan is worked out on a pool thread, and its speed measured once (a few seconds)
    settle(15.0, lambda: window.models.plan_view.speed.speed is not None)
    shoot("models", 0.5)

    window.show_page("libraries")
    window.libraries.open_library(library_id)
    shoot("libraries", 2.5)  # token counts load the model in the worker

    window.show_page("settings")
    shoot("settings")

    window.show_page("first_run")
    shoot("first-run")

    about = AboutDialog(services.paths, window)
    about.resize(min(width, 900), min(height, 700))
    about.show()
    shoot("about", 0.5, about)
    about.close()

    window.close()
    tasks.wait()
    app.processEvents()
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--size", action="append", help="The window's size, WIDTHxHEIGHT (repeatable); "
                        f"default: {' and '.join(SIZES)}.")
    parser.add_argument("--scheme", action="append", choices=SCHEMES, help="light or dark (repeatable); default: both.")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="enclave-shots-") as tmp:
        root = Path(tmp)
        os.environ["ENCLAVE_HOME"] = str(root / "home")
        ids = prepare(root)

        from app.services import Services
        from ui.app import application

        app = application([])
        services = Services.open()
        saved: list[Path] = []
        for scheme in args.scheme or SCHEMES:
            for size in args.size or SIZES:
                saved += shoot_window(services, args.out, size, scheme, ids, sorted((root / "pictures").iterdir()))
        services.close()
        app.processEvents()
    for path in saved:
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


if __name__ == "__main__":
    main()
