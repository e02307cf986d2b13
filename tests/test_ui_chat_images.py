"""Images in the chat window: attached by drop, paste and the Attach button, refused with a
reason, removed, sent to a real vision model and shown in the message's card."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from PySide6.QtCore import QMimeData, QPoint, Qt, QUrl
from PySide6.QtGui import QColor, QImage

from app.chat import PromptProgress
from app.conversations import ImageRef
from app.services import Services
from tests.shown import shown
from ui.chat_card import THUMB, card_rect
from ui.chat_view import ChatPage
from ui.image_viewer import ImageViewer
from ui.main_window import MainWindow
from ui.tasks import TaskRunner


def picture(colour: tuple[int, int, int], size: tuple[int, int] = (80, 60), fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, fmt)
    return out.getvalue()


def image_file(folder: Path, name: str, colour: tuple[int, int, int], size: tuple[int, int] = (80, 60)) -> Path:
    path = folder / name
    path.write_bytes(picture(colour, size, "JPEG" if name.endswith(".jpg") else "PNG"))
    return path


def files_mime(*paths: Path) -> QMimeData:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    return mime


@pytest.fixture
def page(qtbot, services: Services) -> Iterator[ChatPage]:
    chat = ChatPage(services, TaskRunner(synchronous=True))
    yield shown(qtbot, chat, (1024, 700))


@pytest.fixture
def photos(tmp_path: Path) -> list[Path]:
    return [image_file(tmp_path, "red.png", (220, 30, 30)), image_file(tmp_path, "blue.jpg", (30, 30, 220), (60, 90))]


def test_dropping_two_images_on_the_message_box_attaches_two_thumbnails(page: ChatPage, photos: list[Path]) -> None:
    mime = files_mime(*photos)
    assert page.composer.canInsertFromMimeData(mime)
    page.composer.insertFromMimeData(mime)
    assert [ref.name for ref in page.attachments.refs()] == ["red.png", "blue.jpg"]
    assert [t.toolTip() for t in page.attachments.thumbnails] == ["red.png", "blue.jpg"]
    assert all(t.isVisible() and t.width() == 64 for t in page.attachments.thumbnails)
    assert page.composer.toPlainText() == ""  # no path typed into the message
    assert not page.attachments.reading.isVisible()


def test_a_document_dropped_on_the_message_box_is_left_to_the_window(page: ChatPage, tmp_path: Path,
                                                                     photos: list[Path]) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    assert not page.composer.canInsertFromMimeData(files_mime(notes))
    assert not page.composer.canInsertFromMimeData(files_mime(photos[0], notes))  # a mix: the window routes it


def test_the_window_routes_images_to_the_chat_and_documents_to_libraries(qtbot, services: Services, moe_model: Path,
                                                                         tmp_path: Path, photos: list[Path]) -> None:
    services.models.import_files([moe_model], "in_place")  # past the start screen
    window = shown(qtbot, MainWindow(services, TaskRunner(synchronous=True)), (1024, 700))
    window.show_page("chat")
    assert window.current_page() == "chat"
    added: list[list[Path]] = []
    window.libraries.add_paths = lambda paths: added.append(list(paths))  # type: ignore[method-assign]
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    assert window.handle_drop(files_mime(photos[0], notes))
    assert [ref.name for ref in window.chat.attachments.refs()] == ["red.png"]
    assert added == [[notes]]
    window.show_page("models")  # elsewhere an image is a document, as before
    assert window.handle_drop(files_mime(photos[1]))
    assert added[-1] == [photos[1]] and len(window.chat.attachments.refs()) == 1


def test_a_mislabelled_image_shows_its_reason_and_the_others_stay_attached(page: ChatPage, tmp_path: Path,
                                                                           photos: list[Path]) -> None:
    fake = tmp_path / "scan.png"
    fake.write_bytes(b"%PDF-1.4\n" + b"0" * 200)  # a PDF wearing a PNG's name
    page.attach_images([photos[0], fake])
    assert [ref.name for ref in page.attachments.refs()] == ["red.png"]
    assert page.image_error.isVisible()
    assert "scan.png" in page.image_error.text() and "not a PNG image" in page.image_error.text()
    page.attach_images([photos[1]])  # a good one afterwards: the reason has been dealt with
    assert not page.image_error.isVisible() and len(page.attachments.refs()) == 2


def test_pasting_an_image_attaches_it(page: ChatPage) -> None:
    image = QImage(50, 40, QImage.Format.Format_RGB32)
    image.fill(QColor("seagreen"))
    mime = QMimeData()
    mime.setImageData(image)
    assert page.composer.canInsertFromMimeData(mime)
    page.composer.insertFromMimeData(mime)
    refs = page.attachments.refs()
    assert len(refs) == 1 and refs[0].name == "pasted image"
    assert Image.open(io.BytesIO(page.services.image_png(refs[0].sha256))).size == (50, 40)
    text = QMimeData()
    text.setText("just words")
    page.composer.insertFromMimeData(text)  # text pastes as text
    assert page.composer.toPlainText() == "just words"


def test_removing_an_attached_image(qtbot, page: ChatPage, photos: list[Path]) -> None:
    page.attach_images(photos)
    first = page.attachments.thumbnails[0]
    assert first.remove.toolTip() == "Remove red.png"
    qtbot.mouseClick(first.remove, Qt.MouseButton.LeftButton)
    assert [ref.name for ref in page.attachments.refs()] == ["blue.jpg"]
    page.attachments.thumbnails[0].remove.click()
    assert page.attachments.refs() == [] and not page.attachments.scroll.isVisible()


def test_the_attach_button_opens_a_file_dialog_and_attaches_what_was_chosen(page: ChatPage,
                                                                            photos: list[Path]) -> None:
    assert page.attach_button.toolTip().startswith("Attach images")
    assert page.attach_button.focusPolicy() & Qt.FocusPolicy.TabFocus
    page.ask_image_files = lambda: photos  # type: ignore[method-assign]
    page.attach_button.click()
    assert len(page.attachments.refs()) == 2


def test_encoding_progress_says_which_image(page: ChatPage) -> None:
    page._busy = True
    page._on_event(None, PromptProgress(0, 300, images=2, images_done=0))
    assert page.progress.label.text() == "Encoding image 1 of 2…"
    page._on_event(None, PromptProgress(200, 300, images=2, images_done=2))
    assert "Encoding" not in page.progress.label.text()


def message_with_images(services: Services, count: int) -> tuple[int, list[ImageRef]]:
    refs = services.add_images([(picture((40 * i, 100, 200 - 40 * i), (200 + 40 * i, 120)), f"photo {i}.png")
                                for i in range(count)])
    c = services.conversations.create(title="photos")
    services.conversations.add_message(c.id, "user", "what do these show?", images=refs)
    services.conversations.add_message(c.id, "assistant", "Colours.")
    return c.id, refs


def test_a_cards_thumbnails_lie_inside_it_above_its_text_and_open_large(qtbot, page: ChatPage) -> None:
    cid, _refs = message_with_images(page.services, 5)
    page.open_conversation(cid)
    qtbot.wait(50)
    index = page.model.index(0)
    rect = page.view.visualRect(index)
    card = card_rect(rect)
    thumbs = page.delegate.image_rects(rect, index)
    assert len(thumbs) == 5
    assert all(card.contains(t) for t in thumbs)
    assert all(t.width() <= THUMB and t.height() <= THUMB for t in thumbs)
    assert thumbs[0].width() == THUMB and thumbs[0].height() == round(120 * 120 / 200)  # 200×120: aspect kept
    assert len({t.top() for t in thumbs[:4]}) == 1 and thumbs[4].top() > thumbs[0].bottom()  # 4 a row
    origin_y = page.delegate._doc_origin(rect, index).y()  # the text starts below the images
    assert origin_y > max(t.bottom() for t in thumbs)
    assert rect.height() > origin_y - rect.top()  # the card grew to hold them
    assert page.thumbnails.get(page.model.message_at(0).images[0].sha256, THUMB) is not None  # decoded, kept
    centre = thumbs[1].center()
    page.view.viewport().setMouseTracking(True)
    qtbot.mouseClick(page.view.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(centre))
    assert isinstance(page.image_viewer, ImageViewer)
    assert page.image_viewer.windowTitle() == "photo 1.png" and page.image_viewer.isVisible()
    qtbot.keyClick(page.image_viewer, Qt.Key.Key_Escape)
    assert not page.image_viewer.isVisible()


def test_a_text_only_model_refuses_images_and_the_draft_is_kept(page: ChatPage, services: Services, moe_model: Path,
                                                               photos: list[Path]) -> None:
    model = services.models.import_files([moe_model], "in_place")
    for key, value in {"default_model": model.id, "max_tokens": 4, "context_length": 1024, "threads": 2}.items():
        services.settings.set(key, value)
    page.new_conversation()
    page.attach_images(photos)
    page.composer.setPlainText("what is in these?")
    page.submit()
    assert page.error_bar.isVisible() and "reads text only" in page.error_bar.text()
    assert page.composer.toPlainText() == "what is in these?"
    assert [ref.name for ref in page.attachments.refs()] == ["red.png", "blue.jpg"]
    assert page.model.rowCount() == 0  # nothing saved


def test_sending_images_to_a_tiny_vision_model_stores_and_shows_them(page: ChatPage, services: Services,
                                                                     dense_model: Path, projector: Path,
                                                                     photos: list[Path]) -> None:
    model = services.import_model(dense_model, mmproj=projector).imported[0]
    for key, value in {"default_model": model.id, "max_tokens": 4, "context_length": 1024, "threads": 2}.items():
        services.settings.set(key, value)
    page.new_conversation()
    page._fill_models()
    page.attach_images(photos)
    page.composer.setPlainText("what colours?")
    page.submit()
    assert not page.error_bar.isVisible(), page.error_bar.text()
    assert page.model.rowCount() == 2
    sent, reply = page.model.message_at(0), page.model.message_at(1)
    assert [i.name for i in sent.images] == ["red.png", "blue.jpg"] and sent.content == "what colours?"
    assert reply.role == "assistant" and reply.status == "complete", reply.error
    assert page.attachments.refs() == [] and page.composer.toPlainText() == ""  # sent: the box is empty
    index = page.model.index(0)
    assert len(page.delegate.image_rects(page.view.visualRect(index), index)) == 2
