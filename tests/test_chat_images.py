"""Images in conversations: stored with their messages, sent to the model, refused by a
text-only model, exported and imported, attached from the command line."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from PIL import Image

from app.chat import ChatService, ModelLoading, PromptProgress, ReplyFinished, UserMessageSaved
from app.conversations import ConversationRepository, ImageRef
from app.export import export_json, export_markdown, import_json
from app.image_store import ImageMissingError, ImageStore
from app.images import SanitizedImage, sanitize_image
from app.remote_backend import _message
from app.runtime import Runtime
from app.server.bodies import chat_request
from app.server.errors import ApiError
from app.services import Services
from app.settings import Settings
from app.store import open_store
from inference.errors import EnclaveError
from inference.protocol import ChatMessage, Event, ImageInput, Progress, Sampling
from tests.cli import enclave, one_error_line
from tests.test_chat import FakeRuntime
from tests.tiny_projector import TOKENS_PER_IMAGE


def picture(colour: tuple[int, int, int], size: tuple[int, int] = (40, 30), fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, fmt)
    return out.getvalue()


def sanitized(colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> SanitizedImage:
    return sanitize_image(picture(colour, size), "picture.png")[0]


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[ConversationRepository]:
    with open_store(tmp_path / "enclave.db") as store:
        yield ConversationRepository(store)


def stored(repo: ConversationRepository, colour: tuple[int, int, int], name: str,
           size: tuple[int, int] = (40, 30)) -> ImageRef:
    return ImageRef(ImageStore(repo.store).add(sanitized(colour, size)).sha256, name)


def image_rows(repo: ConversationRepository) -> int:
    return repo.store.read().execute("SELECT count(*) FROM images").fetchone()[0]


def link_rows(repo: ConversationRepository) -> int:
    return repo.store.read().execute("SELECT count(*) FROM message_images").fetchone()[0]


# Stored with the conversation ------------------------------------------------------------


def test_a_messages_images_are_read_back_in_order_with_their_sizes(repo: ConversationRepository) -> None:
    c = repo.create(title="photos")
    red, blue = stored(repo, (255, 0, 0), "red.png", (40, 30)), stored(repo, (0, 0, 255), "blue.jpg", (20, 50))
    message = repo.add_message(c.id, "user", "what differs?", images=[blue, red])
    repo.add_message(c.id, "assistant", "the colour")
    assert [(i.name, i.width, i.height) for i in message.images] == [("blue.jpg", 20, 50), ("red.png", 40, 30)]
    listed = repo.messages(c.id)
    assert [i.sha256 for i in listed[0].images] == [blue.sha256, red.sha256]
    assert listed[1].images == ()
    assert repo.messages(c.id, limit=1)[0].images == ()
    assert repo.message(message.id).images == message.images


def age(repo: ConversationRepository, hours: float) -> None:
    """Every stored image attached ``hours`` ago."""
    with repo.store.write() as db:
        db.execute("UPDATE images SET added_at = ?",
                   [(datetime.now(timezone.utc) - timedelta(hours=hours)).isoformat(timespec="seconds")])


def test_deleting_removes_links_and_the_images_no_message_shows(repo: ConversationRepository) -> None:
    first, second = repo.create(title="one"), repo.create(title="two")
    shared, own = stored(repo, (10, 200, 10), "shared.png"), stored(repo, (200, 10, 10), "own.png")
    abandoned = stored(repo, (1, 2, 3), "attached, never sent.png")
    repo.add_message(first.id, "user", "a", images=[shared, own])
    repo.add_message(second.id, "user", "b", images=[shared])
    assert (image_rows(repo), link_rows(repo)) == (3, 3)
    age(repo, hours=2)
    waiting = stored(repo, (4, 5, 6), "attached a minute ago.png")

    repo.delete(first.id)
    assert link_rows(repo) == 1  # the cascade took the first conversation's links
    store = ImageStore(repo.store)
    assert store.get(own.sha256) is None  # no message shows it any more
    assert store.get(abandoned.sha256) is None  # an attachment never sent, an hour on
    assert store.get(shared.sha256) is not None  # the second conversation still does
    assert store.get(waiting.sha256) is not None  # perhaps in a message being written

    later = repo.add_message(second.id, "assistant", "c")
    repo.delete_messages_from(second.id, repo.messages(second.id)[0].id)
    assert store.get(shared.sha256) is None and link_rows(repo) == 0
    assert later.id not in [m.id for m in repo.messages(second.id)]


def test_an_image_attached_again_survives_the_delete_of_its_old_conversation(repo: ConversationRepository) -> None:
    """The photo shown in an old chat, attached to a new message, is still there when sent."""
    old, new = repo.create(title="old"), repo.create(title="new")
    photo = stored(repo, (9, 9, 9), "photo.png")
    repo.add_message(old.id, "user", "then", images=[photo])
    age(repo, hours=3)
    attached = stored(repo, (9, 9, 9), "photo.png")  # the same image, attached again: its time renewed
    repo.delete(old.id)
    message = repo.add_message(new.id, "user", "now", images=[attached])
    assert [i.sha256 for i in message.images] == [photo.sha256]


def test_linking_an_image_that_is_gone_is_a_sentence(repo: ConversationRepository) -> None:
    c = repo.create(title="c")
    with pytest.raises(ImageMissingError, match=r"gone.png is no longer in Enclave's database.*attach it again"):
        repo.add_message(c.id, "user", "x", images=[ImageRef("ab" * 32, "gone.png")])
    assert repo.messages(c.id) == []  # nothing half written


# The chat service ------------------------------------------------------------------------


@dataclass(frozen=True)
class Info:
    n_ctx: int = 4096
    reads_images: bool = True


class VisionRuntime(FakeRuntime):
    """A fake model with (or without) a projector; images are sent as messages."""

    def __init__(self, script: list[str], reads_images: bool = True) -> None:
        super().__init__(script)
        self.info = Info(self.n_ctx, reads_images)

    @property
    def model(self) -> Info | None:
        return self.info if self.loaded else None

    def load(self, model: str, settings: object = None, **_: object) -> object:
        return type("Outcome", (), {"info": self.info})()

    def chat(self, messages: Sequence[ChatMessage], sampling: Sampling) -> Iterator[Event]:
        if any(m.images for m in messages):
            yield Progress(0, 30, images=2, images_done=0)
            yield Progress(16, 30, images=2, images_done=1)
        yield from super().chat(messages, sampling)


def service(repo: ConversationRepository, runtime: FakeRuntime) -> ChatService:
    values = Settings(default_model="model.gguf")
    return ChatService(repo, runtime, lambda: values)  # type: ignore[arg-type]


def test_images_go_to_the_model_with_their_message_and_progress_says_so(repo: ConversationRepository) -> None:
    runtime = VisionRuntime(["Red", " and blue."])
    chat = service(repo, runtime)
    c = chat.start()
    red, blue = stored(repo, (255, 0, 0), "red.png"), stored(repo, (0, 0, 255), "blue.png")
    events = list(chat.send(c.id, "Which colours?", images=[red, blue]))
    assert isinstance(events[0], ModelLoading)  # loaded first, to know it reads images, before anything is saved
    saved = next(e for e in events if isinstance(e, UserMessageSaved))
    assert [i.name for i in saved.message.images] == ["red.png", "blue.png"]
    encoding = [e.describe() for e in events if isinstance(e, PromptProgress) and e.images]
    assert encoding == ["Encoding image 1 of 2", "Encoding image 2 of 2"]
    sent = runtime.prompts[-1][-1]
    assert [i.sha256 for i in sent.images] == [red.sha256, blue.sha256]
    assert sent.images[0].png == ImageStore(repo.store).png(red.sha256)
    assert isinstance(events[-1], ReplyFinished) and events[-1].message.content == "Red and blue."

    list(chat.send(c.id, "And now?"))  # the earlier image stays in the history the model sees
    assert [len(m.images) for m in runtime.prompts[-1]] == [2, 0, 0]


def test_edit_and_regenerate_keep_the_images_of_the_question(repo: ConversationRepository) -> None:
    runtime = VisionRuntime(["A cat."])
    chat = service(repo, runtime)
    c = chat.start()
    photo = stored(repo, (90, 90, 90), "cat.jpg")
    list(chat.send(c.id, "What is it?", images=[photo]))
    list(chat.regenerate(c.id))
    assert [i.sha256 for i in runtime.prompts[-1][-1].images] == [photo.sha256]
    list(chat.edit_and_resend(c.id, "What animal is it?"))
    question = repo.messages(c.id)[0]
    assert question.content == "What animal is it?" and [i.name for i in question.images] == ["cat.jpg"]
    assert ImageStore(repo.store).get(photo.sha256) is not None  # the edit did not collect it
    assert [i.sha256 for i in runtime.prompts[-1][-1].images] == [photo.sha256]


def test_a_text_only_model_refuses_images_and_nothing_is_stored(repo: ConversationRepository) -> None:
    chat = service(repo, VisionRuntime(["never"], reads_images=False))
    c = chat.start()
    photo = stored(repo, (9, 9, 9), "scan.png")
    with pytest.raises(EnclaveError, match=r"model.gguf reads text only: import it with its projector "
                                           r"\(enclave models import … --mmproj FILE\) or choose a vision model"):
        list(chat.send(c.id, "Read this", images=[photo]))
    assert repo.messages(c.id) == []


def test_a_library_conversation_refuses_images_before_anything_is_stored(repo: ConversationRepository) -> None:
    """Local or remote: the library's prompt has no place for images yet."""
    with repo.store.write() as db:  # a library row for the conversation to point at
        db.execute("INSERT INTO libraries (id, name, created_at, updated_at) VALUES (7, 'docs', '', '')")
    photo = stored(repo, (9, 9, 9), "scan.png")
    values = Settings(default_model="model.gguf")
    for remote in (None, object()):  # a remote model's source: never asked, the refusal comes first
        runtime = VisionRuntime(["never"])
        chat = ChatService(repo, runtime, lambda: values, remote=lambda model, r=remote: r)  # type: ignore[arg-type]
        c = chat.start(library_id=7)
        with pytest.raises(EnclaveError, match="Images cannot be asked about in a library conversation yet"):
            list(chat.send(c.id, "Read this", images=[photo]))
        assert repo.messages(c.id) == [] and runtime.prompts == []


def test_a_remote_server_gets_images_as_content_parts() -> None:
    png = picture((1, 2, 3))
    sent = _message(ChatMessage("user", "what is this?", images=(ImageInput(png, "abc"),)))
    assert sent["content"][0] == {"type": "image_url",
                                  "image_url": {"url": "data:image/png;base64," + base64.b64encode(png).decode()}}
    assert sent["content"][1] == {"type": "text", "text": "what is this?"}
    assert _message(ChatMessage("user", "plain")) == {"role": "user", "content": "plain"}


def test_the_api_server_refuses_image_parts_in_words() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}
    with pytest.raises(ApiError) as refused:
        chat_request(body, None)
    assert refused.value.status == 400
    assert "images are not accepted by enclave serve yet" in str(refused.value.message)
    text_parts = {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    assert chat_request(text_parts, None).messages[0].content == "hi"


# Export and import -----------------------------------------------------------------------


def conversation_with_images(repo: ConversationRepository) -> tuple[int, ImageRef, ImageRef]:
    c = repo.create(title="two photos", model="vision.gguf")
    red, green = stored(repo, (255, 0, 0), "red.png"), stored(repo, (0, 255, 0), "green [1].png")
    repo.add_message(c.id, "user", "compare", images=[red, green])
    repo.add_message(c.id, "assistant", "one is red")
    repo.add_message(c.id, "user", "again the red one", images=[red])
    return c.id, red, green


def in_process(items: object) -> list[SanitizedImage]:
    return [sanitize_image(data, name)[0] for data, name in items]  # type: ignore[attr-defined]


def test_json_export_and_import_carry_the_images(repo: ConversationRepository) -> None:
    cid, red, green = conversation_with_images(repo)
    png = ImageStore(repo.store).png
    text = export_json(repo.get(cid), repo.messages(cid, alternatives=True), png)
    data = json.loads(text)
    assert set(data["images"]) == {red.sha256, green.sha256}  # each image once
    assert data["messages"][0]["images"] == [{"sha256": red.sha256, "name": "red.png"},
                                             {"sha256": green.sha256, "name": "green [1].png"}]
    age(repo, hours=2)
    repo.delete(cid)
    assert image_rows(repo) == 0

    copy = import_json(repo, text)  # through the isolated reader, as a user's import goes
    messages = repo.messages(copy.id)
    assert [[i.name for i in m.images] for m in messages] == [["red.png", "green [1].png"], [], ["red.png"]]
    assert png(messages[0].images[0].sha256) == base64.b64decode(data["images"][red.sha256])


def test_an_image_changed_after_export_is_refused(repo: ConversationRepository) -> None:
    cid, red, _green = conversation_with_images(repo)
    data = json.loads(export_json(repo.get(cid), repo.messages(cid), ImageStore(repo.store).png))
    data["images"][red.sha256] = base64.b64encode(picture((254, 0, 0))).decode()
    before = repo.count()
    with pytest.raises(EnclaveError, match=r"cannot be imported: the image .{12}… is not what its SHA-256 says"):
        import_json(repo, json.dumps(data), in_process)
    assert repo.count() == before
    del data["images"]
    age(repo, hours=2)
    repo.delete(cid)  # and with it the images: the file must bring its own
    with pytest.raises(EnclaveError, match=r"shows the image red\.png, which the file does not hold"):
        import_json(repo, json.dumps(data), in_process)


def test_markdown_export_shows_the_images_inline(repo: ConversationRepository) -> None:
    cid, red, _green = conversation_with_images(repo)
    messages = repo.messages(cid)
    markdown = export_markdown(repo.get(cid), messages, ImageStore(repo.store).png)
    encoded = base64.b64encode(ImageStore(repo.store).png(red.sha256)).decode()
    assert f"![red.png](data:image/png;base64,{encoded})" in markdown
    assert "![green (1).png](data:image/png;base64," in markdown  # brackets cannot end the link text
    assert markdown.index("![red.png]") < markdown.index("compare")  # before the text, as the model saw it
    terminal = export_markdown(repo.get(cid), messages)
    assert "*[image: red.png, 40×30]*" in terminal and "base64" not in terminal


# The command line ------------------------------------------------------------------------


def test_run_refuses_a_mislabelled_image_in_one_line(enclave_home: Path, moe_model: Path, tmp_path: Path) -> None:
    fake = tmp_path / "photo.png"
    fake.write_bytes(picture((5, 5, 5), fmt="JPEG"))
    line = one_error_line(enclave("run", str(moe_model), "what is it?", "--image", str(fake), home=enclave_home))
    assert "photo.png" in line and "JPEG" in line


def test_run_with_an_image_and_a_text_only_model_says_how_to_add_a_projector(
        enclave_home: Path, moe_model: Path, tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(picture((5, 5, 5)))
    line = one_error_line(enclave("run", str(moe_model), "what is it?", "--image", str(photo), home=enclave_home))
    assert "reads text only" in line and "--mmproj FILE" in line


def test_chat_attaches_images_to_the_next_message(enclave_home: Path, moe_model: Path, tmp_path: Path) -> None:
    photo, broken = tmp_path / "photo.png", tmp_path / "broken.png"
    photo.write_bytes(picture((5, 5, 5)))
    broken.write_bytes(picture((5, 5, 5))[:60])
    result = enclave("chat", "--model", str(moe_model), home=enclave_home,
                     stdin=f"/image {broken}\n/image {photo}\nwhat is it?\n/exit\n")
    assert result.returncode == 0, result.stderr
    assert "broken.png" in result.stderr  # refused, and the chat went on
    assert "Attached photo.png" in result.stderr
    assert "reads text only" in result.stderr  # the tiny model has no projector: nothing was sent
    with open_store(enclave_home / "data" / "enclave.db") as store:
        assert ConversationRepository(store).search("what is it") == []



def test_chat_with_a_refused_image_exits_in_one_line(enclave_home: Path, moe_model: Path, tmp_path: Path) -> None:
    bomb = tmp_path / "huge.gif"
    bomb.write_bytes(picture((0, 0, 0), (9000, 9000), fmt="GIF"))  # 81 million pixels, a few KiB
    line = one_error_line(enclave("chat", "--model", str(moe_model), "--image", str(bomb), home=enclave_home,
                                  stdin="hello\n"))
    assert "huge.gif" in line

def test_sha256_of_a_sanitized_image_names_it() -> None:
    image = sanitized((3, 4, 5))
    assert hashlib.sha256(image.png).hexdigest() == image.sha256


# A real vision model: the tiny model with the tiny projector (tests/tiny_projector.py) --------


def with_projectors(services: Services) -> Services:
    """The runtime told where registered models' projectors are (``Runtime(projectors=)``)."""
    services._runtime = Runtime(services.paths, services.resolve_model, services.enforcer, hosts=services.hosts.list,
                                projectors=lambda ref: services.models.projector_path(ref)
                                if services.registered_model(ref) else None)
    return services


def test_a_chat_with_images_reaches_a_real_vision_model(services: Services, dense_model: Path, projector: Path,
                                                        tmp_path: Path) -> None:
    model = services.import_model(dense_model, mmproj=projector).imported[0]
    services.settings.set("max_tokens", 4)
    photo = tmp_path / "red.png"
    photo.write_bytes(picture((200, 30, 30), (64, 48)))
    images = with_projectors(services).add_images([photo, (picture((0, 0, 200)), "pasted image")])
    assert [i.name for i in images] == ["red.png", "pasted image"]
    c = services.chat.start(model=model.id)
    events = list(services.chat.send(c.id, "what is it?", images=images))
    encoding = [e for e in events if isinstance(e, PromptProgress) and e.images == 2]
    assert encoding and encoding[-1].images_done == 2  # both encoded, with progress
    reply = events[-1]
    assert isinstance(reply, ReplyFinished) and reply.message.status == "complete", reply.message.error
    assert reply.message.prompt_tokens and reply.message.prompt_tokens > 2 * TOKENS_PER_IMAGE
    assert [i.name for i in services.conversations.messages(c.id)[0].images] == ["red.png", "pasted image"]


def test_run_with_an_image_answers_with_a_real_vision_model(enclave_home: Path, dense_model: Path, projector: Path,
                                                            tmp_path: Path) -> None:
    imported = enclave("models", "import", str(dense_model), "--mmproj", str(projector), home=enclave_home)
    assert imported.returncode == 0, imported.stderr
    model = imported.stdout.split()[1].rstrip(":")
    photo = tmp_path / "red.png"
    photo.write_bytes(picture((200, 30, 30)))
    result = enclave("run", model, "what is it?", "--image", str(photo), "--max-tokens", "4", "--stats",
                     home=enclave_home)
    assert result.returncode == 0, result.stderr
    prompt_tokens = int(result.stderr.split("prompt: ")[1].split()[0])
    assert prompt_tokens > TOKENS_PER_IMAGE  # the image's tokens, then the question's
