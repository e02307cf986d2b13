"""Images through llama.cpp's multimodal library: a tiny Gemma 3 projector beside the tiny
models, so the real loading, encoding and evaluation code runs (tests/tiny_projector.py)."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from inference.engine import Engine
from inference.errors import EnclaveError, ModelLoadError
from inference.image_tokens import FIRST_IMAGE_TOKEN, image_runs, is_image_token, run_start, text_tokens
from inference.llama_log import LlamaLog
from inference.protocol import ChatMessage, Done, Failed, Generate, ImageInput, Progress, Sampling, Stats, Token
from inference.worker import Worker
from tests.conftest import settings_for
from tests.tiny_models import IDEFICS3_TEXT, write_tiny_model
from tests.tiny_projector import TOKENS_PER_IMAGE, write_tiny_projector

GREEDY = Sampling(temperature=0, max_tokens=12, draft=False)


def png(color: tuple[int, int, int], size: tuple[int, int] = (48, 40)) -> ImageInput:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    data = buffer.getvalue()
    return ImageInput(data, hashlib.sha256(data).hexdigest())


RED, BLUE = png((200, 30, 30)), png((30, 30, 200))


@pytest.fixture(scope="module")
def log() -> LlamaLog:
    log = LlamaLog()
    log.install()
    return log


@pytest.fixture
def engine(moe_model: Path, projector: Path, log: LlamaLog) -> Iterator[Engine]:
    with Engine(settings_for(moe_model, projector_path=str(projector), projector_gpu=False), log) as engine:
        yield engine


def run(engine: Engine, messages: tuple[ChatMessage, ...], sampling: Sampling = GREEDY) -> tuple[list[object], Stats]:
    events = list(engine.generate(engine.chat_tokens(messages), sampling))
    stats = events.pop()
    assert isinstance(stats, Stats)
    return events, stats


def test_an_image_is_a_run_of_its_image_token_in_the_prompt(engine: Engine) -> None:
    assert engine.info.reads_images
    plain = engine.chat_tokens((ChatMessage("user", "what is this"),))
    with_image = engine.chat_tokens((ChatMessage("user", "what is this", images=(RED,)),))
    images = [t for t in with_image if is_image_token(t)]
    assert len(images) == TOKENS_PER_IMAGE and len(set(images)) == 1
    # Gemma 3's projector wraps the image in <start_of_image> ... <end_of_image> text
    assert len(with_image) > len(plain) + TOKENS_PER_IMAGE
    assert text_tokens(with_image)[: 3] == plain[: 3]
    # the same image is the same run of ids on every turn; another image another
    again = engine.chat_tokens((ChatMessage("user", "and now", images=(RED, BLUE)),))
    assert sorted({t for t in again if is_image_token(t)}, reverse=True) == [images[0], images[0] - 1]


def test_a_message_with_an_image_is_answered_and_the_image_is_reused_next_turn(engine: Engine) -> None:
    first = (ChatMessage("user", "describe it", images=(RED,)),)
    events, stats = run(engine, first)
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress[0].images == 1 and progress[0].images_done == 0
    assert progress[-1].images_done == 1 and progress[-1].done == progress[-1].total == stats.prompt_tokens
    tokens = [e for e in events if isinstance(e, Token) and e.id is not None]
    assert len(tokens) == stats.generated_tokens > 0
    assert sum(1 for t in engine.cached_tokens if is_image_token(t)) == TOKENS_PER_IMAGE

    reply = "".join(e.text for e in events if isinstance(e, Token))
    second = (*first, ChatMessage("assistant", reply), ChatMessage("user", "more"))
    _, stats2 = run(engine, second)
    prompt = engine.chat_tokens(second)
    image_end = max(i for i, t in enumerate(prompt) if is_image_token(t)) + 1
    assert stats2.cached_tokens > image_end  # the image's cells were kept, not encoded again


def test_the_image_changes_the_answer_and_replies_are_deterministic(engine: Engine) -> None:
    def answer(image: ImageInput) -> list[int]:
        events, _ = run(engine, (ChatMessage("user", "what colour", images=(image,)),))
        return [e.id for e in events if isinstance(e, Token) and e.id is not None]

    red = answer(RED)
    assert answer(BLUE) != red  # the image's embeddings reach the model
    assert answer(RED) == red  # and the run of the other image was replaced, not mixed in


def test_a_changed_image_earlier_in_the_chat_is_encoded_again(engine: Engine) -> None:
    run(engine, (ChatMessage("user", "one", images=(RED,)),))
    _, stats = run(engine, (ChatMessage("user", "one", images=(BLUE,)),))
    prompt = engine.chat_tokens((ChatMessage("user", "one", images=(BLUE,)),))
    first_image = next(i for i, t in enumerate(prompt) if is_image_token(t))
    assert stats.cached_tokens <= first_image


def test_drafting_and_repeat_penalty_work_beside_image_tokens(engine: Engine) -> None:
    """Samplers and proposers are shown the prompt without its image tokens: a repeat
    penalty over a window that holds an image, and prompt lookup over a prompt with one,
    give the reply plain decoding gives."""
    messages = (ChatMessage("user", "hello world hello world hello world", images=(RED,)),)

    def reply(draft: bool) -> list[int]:
        sampling = Sampling(temperature=0, max_tokens=16, repeat_penalty=1.3, repeat_last_n=64, draft=draft)
        engine.forget_prompt_cache()
        events, stats = run(engine, messages, sampling)
        assert stats.generated_tokens == 16
        return [e.id for e in events if isinstance(e, Token) and e.id is not None]

    assert reply(draft=True) == reply(draft=False)


def test_a_model_without_a_projector_refuses_images(moe_model: Path, log: LlamaLog) -> None:
    with Engine(settings_for(moe_model), log) as engine:
        assert not engine.info.reads_images
        with pytest.raises(EnclaveError, match="reads text only"):
            engine.chat_tokens((ChatMessage("user", "look", images=(RED,)),))


def test_a_projector_made_for_another_model_is_refused_in_words(moe_model: Path, tmp_path: Path,
                                                                log: LlamaLog) -> None:
    wrong = write_tiny_projector(tmp_path / "mmproj-other.gguf", text_model_embd=64)
    with pytest.raises(ModelLoadError, match=r"could not load the vision projector mmproj-other.gguf: .*n_embd"):
        Engine(settings_for(moe_model, projector_path=str(wrong), projector_gpu=False), log)
    missing = tmp_path / "gone.gguf"
    with pytest.raises(ModelLoadError, match=r"projector .* is missing"):
        Engine(settings_for(moe_model, projector_path=str(missing), projector_gpu=False), log)


def test_text_cannot_place_an_image(engine: Engine) -> None:
    """A user who types libmtmd's marker or one like Enclave's gets text: only the engine's
    random marker, placed for each image the message carries, places images."""
    typed = "look <__media__> and <__enclave_image_0000000000000000__> here"
    tokens = engine.chat_tokens((ChatMessage("user", typed, images=(RED,)),))
    assert sum(1 for t in tokens if is_image_token(t)) == TOKENS_PER_IMAGE  # one image, not three
    assert not any(is_image_token(t) for t in engine.chat_tokens((ChatMessage("user", typed),)))


def test_the_same_image_twice_in_a_prompt_is_two_runs(engine: Engine) -> None:
    tokens = engine.chat_tokens((ChatMessage("user", "twice", images=(RED, RED)),))
    ids = [t for t in tokens if is_image_token(t)]
    assert len(ids) == 2 * TOKENS_PER_IMAGE and len(set(ids)) == 2
    events, stats = run(engine, (ChatMessage("user", "twice", images=(RED, RED)),))
    assert stats.generated_tokens > 0
    assert [e for e in events if isinstance(e, Progress)][-1].images_done == 2


def test_a_projector_that_tiles_large_images_gives_each_tile_its_run(tmp_path: Path, log: LlamaLog) -> None:
    """SmolVLM's (Idefics3) projector cuts an image larger than its tiles into an overview
    and tiles, each a chunk of its own: each is a run, the reply comes, and the next turn
    reuses them all."""
    model = write_tiny_model(tmp_path / "text.gguf", IDEFICS3_TEXT)
    projector = write_tiny_projector(tmp_path / "mmproj-idefics3.gguf", projector_type="idefics3")
    settings = settings_for(model, n_ctx=1024, projector_path=str(projector), projector_gpu=False)
    with Engine(settings, log) as engine:
        first = (ChatMessage("user", "what is it", images=(png((200, 30, 30), (100, 70)),)),)
        prompt = engine.chat_tokens(first)
        runs = sorted({t for t in prompt if is_image_token(t)}, reverse=True)
        assert len(runs) >= 3  # an overview and at least two tiles
        events, stats = run(engine, first)
        progress = [e for e in events if isinstance(e, Progress)]
        assert progress[-1].images == 1 and progress[-1].images_done == 1
        assert stats.generated_tokens > 0
        second = (*first, ChatMessage("assistant", "red"), ChatMessage("user", "sure?"))
        _, again = run(engine, second)
        assert again.cached_tokens > max(i for i, t in enumerate(prompt) if is_image_token(t))


def test_a_worker_answers_an_image_and_its_batch_refuses_one(moe_model: Path, projector: Path,
                                                              worker: Worker) -> None:
    info = worker.load(settings_for(moe_model, projector_path=str(projector), projector_gpu=False))
    assert info.reads_images
    events = list(worker.generate(Generate(messages=(ChatMessage("user", "hi", images=(RED,)),), sampling=GREEDY)))
    done = events[-1]
    assert isinstance(done, Done) and done.stats.generated_tokens > 0
    assert any(isinstance(e, Progress) and e.images_done == 1 for e in events)
    counted = worker.render_chat((ChatMessage("user", "hi", images=(RED,)),)).ids
    assert sum(1 for t in counted if is_image_token(t)) == TOKENS_PER_IMAGE
    batch = worker.open_batch()
    batch.submit(1, Generate(messages=(ChatMessage("user", "hi", images=(RED,)),), sampling=GREEDY))
    events = []
    for rid, event in batch.events():
        events.append((rid, event))
        batch.close()
    assert len(events) == 1 and isinstance(events[0][1], Failed) and "one chat at a time" in events[0][1].message


def test_image_runs_and_their_starts() -> None:
    a, b = FIRST_IMAGE_TOKEN, FIRST_IMAGE_TOKEN - 1
    prompt = [5, a, a, a, 6, a, a, a, a, a, a, b, b, 7]
    runs = image_runs(prompt, {a: 3, b: 2})
    assert runs == {1: 3, 5: 3, 8: 3, 11: 2}  # the same image twice in a row: two runs
    assert [run_start(runs, i) for i in (0, 1, 2, 4, 7, 9, 12, 13)] == [0, 1, 1, 4, 5, 8, 11, 13]
    assert text_tokens(prompt) == [5, 6, 7]
