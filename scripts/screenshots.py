"""Screenshots for the README, made by driving the real app offscreen.

    python scripts/screenshots.py [--out docs/screenshots] [--size 1024x700]

A temporary ENCLAVE_HOME gets the tiny model of ``tests/tiny_models.py`` (registered in
place), a small library of Markdown notes and a PDF, and one short conversation; then the
window is grabbed on the chat (with its side panel: the model, the memory plan proposed
for it and the context the conversation used), the models page (with the selected model's memory plan),
the library, the settings and the start screen. Nothing is sent anywhere.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the repository root holds tests/ (the tiny model)
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from tests.event_loop import spin_until  # noqa: E402

SIZE = (1280, 800)
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


def prepare(root: Path) -> tuple[int, int]:
    """The model, a library and a conversation in the temporary home: (library id, conversation id)."""
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
        return library.id, chat.id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--size", default=f"{SIZE[0]}x{SIZE[1]}",
                        help="The window's size, WIDTHxHEIGHT: check 1024x700 and 1920x1080 too.")
    args = parser.parse_args()
    width, height = (int(n) for n in args.size.lower().split("x"))
    args.out.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="enclave-shots-") as tmp:
        root = Path(tmp)
        os.environ["ENCLAVE_HOME"] = str(root / "home")
        library_id, chat_id = prepare(root)

        from app.services import Services
        from ui.app import application
        from ui.main_window import MainWindow
        from ui.tasks import TaskRunner

        app = application([])
        services = Services.open()
        tasks = TaskRunner()
        window = MainWindow(services, tasks)
        window.resize(width, height)
        window.show()
        settle(0.5)
        saved: list[Path] = []

        def shoot(name: str, seconds: float = 1.0) -> None:
            settle(seconds)
            path = args.out / f"{name}.png"
            if not window.grab().save(str(path)):
                raise SystemExit(f"could not write {path}")
            saved.append(path)

        window.show_side_panel(True)
        window.open_conversation(chat_id)
        settle(3.0, lambda: window.side_panel.plan is not None)  # the model is read on a pool thread
        shoot("chat")

        window.show_page("models")
        [model] = services.models.all()
        if hasattr(window.models, "select_model"):
            window.models.select_model(model.id)
        shoot("models", 2.5)  # the memory plan is worked out on a pool thread

        window.show_page("libraries")
        window.libraries.open_library(library_id)
        shoot("library", 2.5)  # token counts load the model in the worker

        window.show_page("settings")
        shoot("settings")

        window.show_page("first_run")
        shoot("first-run")

        window.close()
        tasks.wait()
        services.close()
        app.processEvents()
    for path in saved:
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


if __name__ == "__main__":
    main()
