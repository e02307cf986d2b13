"""The chat service: what is stored, when, and what goes into the prompt."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from app.chat import ChatService, ContextTrimmed, ReplyDelta, ReplyFinished, UserMessageSaved, title_from
from app.conversations import ConversationRepository
from app.prompting import fit_history
from app.runtime import Runtime
from app.settings import Settings
from app.store import open_store
from inference.errors import EnclaveError
from inference.protocol import ChatMessage, Done, Event, Failed, Progress, Sampling, Stats, Token, Tokens


@dataclass
class FakeLoad:
    gguf: object


@dataclass
class FakeGGUF:
    chat_template: str | None


@dataclass
class FakeRuntime:
    """A model that replies with a script: for the service's logic, without llama.cpp."""

    script: list[str]
    n_ctx: int = 4096
    template: str | None = "{% for m in messages %}<think>{% endfor %}"
    fail_with: str | None = None
    prompts: list[list[ChatMessage]] = field(default_factory=list)
    rendered: dict[tuple[int, ...], list[ChatMessage]] = field(default_factory=dict)
    cancelled: bool = False
    cancel_after: int | None = None

    @property
    def last_load(self) -> FakeLoad:
        return FakeLoad(FakeGGUF(self.template))

    def inspect(self, model: str) -> object:
        return type("Info", (), {"context_length": 0})()  # unknown: the settings decide

    loaded: str | None = None

    def turn(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def turn_taken(self) -> bool:
        return False

    def loads_anew(self, model: str, profile: object, defaults: object, **_: object) -> bool:
        return self.loaded != model

    def load_profile(self, model: str, profile: object, defaults: object, **_: object) -> object:
        self.loaded = model
        return self.load(model)

    def load(self, model: str, settings: object = None, **_: object) -> object:
        return type("Outcome", (), {"info": type("Info", (), {"n_ctx": self.n_ctx})()})()

    def render_chat(self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> Tokens:
        text = "".join(f"<{m.role}>{m.content}" for m in messages)
        ids = tuple(range(len(self.rendered), len(self.rendered) + len(text.split()) + 2 * len(messages)))
        self.rendered[ids] = list(messages)
        return Tokens(ids, text)

    def continue_tokens(self, tokens: Sequence[int], sampling: Sampling, prefix_key: str | None = None
                        ) -> Iterator[Event]:
        return self.chat(self.rendered[tuple(tokens)], sampling)

    def cancel(self) -> None:
        self.cancelled = True

    def chat(self, messages: Sequence[ChatMessage], sampling: Sampling) -> Iterator[Event]:
        self.prompts.append(list(messages))
        yield Progress(0, 10)
        yield Progress(10, 10)
        sent = 0
        for piece in self.script:
            if self.cancelled:
                yield Done(Stats(10, 0, sent, 0.1, 0.1, "cancelled"))
                return
            yield Token(sent, piece)
            sent += 1
            if self.cancel_after == sent:
                self.cancel()
        if self.fail_with:
            yield Failed(self.fail_with, kind="crash")
            return
        yield Done(Stats(10, 0, sent, 0.1, 0.2, "eog"))


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[ConversationRepository]:
    with open_store(tmp_path / "enclave.db") as store:
        yield ConversationRepository(store)


def service(repo: ConversationRepository, runtime: object, **settings: object) -> ChatService:
    values = Settings(default_model="model.gguf", **settings)  # type: ignore[arg-type]
    return ChatService(repo, runtime, lambda: values)  # type: ignore[arg-type]


def test_messages_are_stored_as_they_stream(repo: ConversationRepository) -> None:
    runtime = FakeRuntime(["Hel", "lo", " there", "!"])
    chat = service(repo, runtime)
    c = chat.start()
    events = list(chat.send(c.id, "Say hello\nplease"))
    assert isinstance(events[0], UserMessageSaved) and events[0].message.content == "Say hello\nplease"
    streamed = "".join(e.answer for e in events if isinstance(e, ReplyDelta))
    final = events[-1]
    assert isinstance(final, ReplyFinished)
    assert streamed == "Hello there!" == final.message.content
    stored = repo.messages(c.id)
    assert [(m.role, m.status) for m in stored] == [("user", "complete"), ("assistant", "complete")]
    assert stored[1].completion_tokens == 4 and stored[1].stop_reason == "eog" and stored[1].model == "model.gguf"
    assert repo.get(c.id).title == "Say hello"


def test_reasoning_is_stored_apart_and_left_out_of_the_next_prompt(repo: ConversationRepository) -> None:
    runtime = FakeRuntime(["<th", "ink>Let me ", "think.</thi", "nk>\n\nThe answer", " is 4."])
    chat = service(repo, runtime)
    c = chat.start()
    events = list(chat.send(c.id, "2+2?"))
    reply = events[-1].message
    assert reply.reasoning == "Let me think." and reply.content == "The answer is 4."
    assert reply.reasoning_seconds is not None
    assert "".join(e.reasoning for e in events if isinstance(e, ReplyDelta)) == "Let me think."
    runtime.script = ["Fine."]
    list(chat.send(c.id, "and 3+3?"))
    previous = runtime.prompts[-1][1]
    assert previous.role == "assistant" and previous.content == "The answer is 4."
    assert "think" not in previous.content


def test_thinking_the_prompt_opened_is_filed_as_reasoning(repo: ConversationRepository) -> None:
    runtime = FakeRuntime(["Hmm, 2 and 2", " make 4.</think>", "\n\nIt is 4."], template=None)
    chat = service(repo, runtime)
    reply = list(chat.send(chat.start().id, "2+2?"))[-1].message
    assert reply.reasoning == "Hmm, 2 and 2 make 4." and reply.content == "It is 4."


def test_a_stop_keeps_the_partial_text(repo: ConversationRepository) -> None:
    runtime = FakeRuntime(["one ", "two ", "three ", "four"], cancel_after=2)
    chat = service(repo, runtime)
    c = chat.start()
    reply = list(chat.send(c.id, "count"))[-1].message
    assert reply.status == "partial" and reply.stop_reason == "cancelled"
    assert reply.content == "one two "


def test_a_crash_marks_the_reply_as_an_error_with_the_reason(repo: ConversationRepository) -> None:
    runtime = FakeRuntime(["half a ", "reply"], fail_with="llama.cpp crashed: SIGKILL")
    chat = service(repo, runtime)
    c = chat.start()
    reply = list(chat.send(c.id, "go"))[-1].message
    assert reply.status == "error" and reply.error == "llama.cpp crashed: SIGKILL"
    assert reply.content == "half a reply"
    assert repo.messages(c.id)[0].content == "go"  # the question is never lost


def test_walking_away_from_a_stream_keeps_it_partial(repo: ConversationRepository) -> None:
    chat = service(repo, FakeRuntime(["a", "b", "c"]))
    c = chat.start()
    stream = chat.send(c.id, "go")
    for event in stream:
        if isinstance(event, ReplyDelta):
            break
    stream.close()
    reply = repo.messages(c.id)[-1]
    assert reply.role == "assistant" and reply.status == "partial" and reply.content == "a"


def test_regenerate_shows_a_new_reply_and_keeps_the_last_as_an_alternative(repo: ConversationRepository) -> None:
    runtime = FakeRuntime(["first"])
    chat = service(repo, runtime)
    c = chat.start()
    list(chat.send(c.id, "hi"))
    runtime.script = ["second"]
    list(chat.regenerate(c.id))
    assert [(m.role, m.content) for m in repo.messages(c.id)] == [("user", "hi"), ("assistant", "second")]
    shown = repo.messages(c.id)[-1]
    assert (shown.alternative, shown.alternatives) == (2, 2)
    assert [m.content for m in repo.alternatives(shown.id)] == ["first", "second"]


def test_regenerating_twice_stores_three_alternatives_and_the_shown_one_goes_into_the_prompt(
        repo: ConversationRepository) -> None:
    runtime = FakeRuntime(["one"])
    chat = service(repo, runtime)
    c = chat.start()
    list(chat.send(c.id, "hi"))
    for text in ("two", "three"):
        runtime.script = [text]
        list(chat.regenerate(c.id))
    rows = repo.store.read().execute(
        "SELECT content, shown, alternative_of FROM messages WHERE role = 'assistant' ORDER BY id").fetchall()
    first_id = repo.alternatives(repo.messages(c.id)[-1].id)[0].id
    assert [tuple(r) for r in rows] == [("one", 0, None), ("two", 0, first_id), ("three", 1, first_id)]
    assert repo.get(c.id).message_count == 2  # what is shown

    repo.show_alternative(first_id)  # the user picks the first reply: it is remembered
    assert [m.content for m in repo.messages(c.id)] == ["hi", "one"]
    runtime.script = ["next"]
    list(chat.send(c.id, "and then?"))
    assert [(m.role, m.content) for m in runtime.prompts[-1]] == [
        ("user", "hi"), ("assistant", "one"), ("user", "and then?")]

    repo.show_alternative(repo.alternatives(first_id)[1].id)
    runtime.script = ["again"]
    list(chat.regenerate(c.id))  # the last reply ("next") gets an alternative; the prompt has "two"
    assert [(m.role, m.content) for m in runtime.prompts[-1]] == [
        ("user", "hi"), ("assistant", "two"), ("user", "and then?")]
    assert [m.content for m in repo.messages(c.id)] == ["hi", "two", "and then?", "again"]
    assert len(repo.messages(c.id, alternatives=True)) == 7  # hi, one, two, three, and then?, next, again


def test_a_regenerate_that_fails_before_replying_hides_nothing(repo: ConversationRepository) -> None:
    runtime = FakeRuntime(["kept"])
    chat = service(repo, runtime)
    c = chat.start()
    list(chat.send(c.id, "hi"))

    def refuse(*_: object, **__: object) -> object:
        raise EnclaveError("The model file is gone.")

    runtime.load_profile = refuse  # type: ignore[method-assign]
    with pytest.raises(EnclaveError):
        list(chat.regenerate(c.id))
    assert [m.content for m in repo.messages(c.id)] == ["hi", "kept"]


def test_the_model_load_is_said_before_and_after_only_when_it_happens(repo: ConversationRepository) -> None:
    runtime = FakeRuntime(["ok"])
    chat = service(repo, runtime)
    c = chat.start()
    first = list(chat.send(c.id, "hi"))
    kinds = [type(e).__name__ for e in first]
    assert kinds.index("ModelLoading") < kinds.index("ModelLoaded") < kinds.index("ReplyFinished")
    second = [type(e).__name__ for e in chat.send(c.id, "again")]
    assert "ModelLoading" not in second and "ModelLoaded" not in second


def test_edit_and_resend_replaces_the_last_question_and_its_answer(repo: ConversationRepository) -> None:
    runtime = FakeRuntime(["answer"])
    chat = service(repo, runtime)
    c = chat.start()
    list(chat.send(c.id, "first question"))
    list(chat.send(c.id, "typo qestion"))
    runtime.script = ["better answer"]
    list(chat.edit_and_resend(c.id, "fixed question"))
    assert [m.content for m in repo.messages(c.id)] == ["first question", "answer", "fixed question",
                                                       "better answer"]


def test_old_turns_are_trimmed_but_never_the_system_prompt(repo: ConversationRepository) -> None:
    runtime = FakeRuntime(["ok"], n_ctx=120)
    chat = service(repo, runtime, max_tokens=20)
    c = chat.start(system_prompt="You are terse.")
    for i in range(8):
        list(chat.send(c.id, f"question {i} " + "word " * 10))
    events = list(chat.send(c.id, "last question"))
    trimmed = next(e for e in events if isinstance(e, ContextTrimmed))
    assert trimmed.dropped > 0 and trimmed.prompt_tokens <= 120 - 20
    sent = runtime.prompts[-1]
    assert sent[0] == ChatMessage("system", "You are terse.")
    assert sent[-1].content == "last question"
    assert len(sent) < 2 * 9 + 1
    assert len(repo.messages(c.id)) == 18  # trimming the prompt never deletes history


def test_fit_history_drops_oldest_whole_turns() -> None:
    msgs = [ChatMessage("system", "s")] + [ChatMessage(r, f"{r}{i}") for i in range(3) for r in ("user", "assistant")]
    msgs.append(ChatMessage("user", "now"))
    kept, dropped, tokens = fit_history(msgs, len, 4)
    assert [m.content for m in kept] == ["s", "user2", "assistant2", "now"] and dropped == 4 and tokens == 4
    kept, dropped, _ = fit_history(msgs, len, 1)  # never below the newest message
    assert [m.content for m in kept] == ["s", "now"]


def test_titles_come_from_the_first_line() -> None:
    assert title_from("\n  Plan a trip to Kyoto\nwith kids") == "Plan a trip to Kyoto"
    long = title_from("x" * 200)
    assert len(long) == 60 and long.endswith("…")


def test_a_real_conversation_with_the_tiny_model(repo: ConversationRepository, moe_model: Path,
                                                 tmp_path: Path) -> None:
    runtime = Runtime(type("P", (), {"llama_log": tmp_path / "llama.log"})())  # type: ignore[arg-type]
    try:
        chat = service(repo, runtime, context_length=1024, max_tokens=12, temperature=0.0)
        c = chat.start(model=str(moe_model))
        events = list(chat.send(c.id, "hello"))
        reply = events[-1].message
        streamed = "".join(e.answer + e.reasoning for e in events if isinstance(e, ReplyDelta))
        assert reply.status == "complete" and reply.completion_tokens == 12
        assert reply.content + reply.reasoning == streamed
        follow = list(chat.send(c.id, "and again"))[-1].message
        assert follow.cached_tokens > 0  # the conversation so far stayed in the KV cache
    finally:
        runtime.close()


@dataclass
class DraftingRuntime(FakeRuntime):
    """A model whose replies were drafted: six tokens proposed, four accepted."""

    samplings: list[Sampling] = field(default_factory=list)

    def chat(self, messages: Sequence[ChatMessage], sampling: Sampling) -> Iterator[Event]:
        self.samplings.append(sampling)
        for event in super().chat(messages, sampling):
            yield (Done(replace(event.stats, drafted_tokens=6, accepted_tokens=4)) if isinstance(event, Done)
                   else event)


def test_a_replys_drafted_and_accepted_tokens_are_stored_and_the_setting_sent(
        repo: ConversationRepository) -> None:
    runtime = DraftingRuntime(["Quoted", " text."])
    chat = service(repo, runtime)
    c = chat.start()
    reply = list(chat.send(c.id, "Quote it"))[-1].message
    assert (reply.drafted_tokens, reply.accepted_tokens) == (6, 4)
    assert (repo.message(reply.id).drafted_tokens, repo.message(reply.id).accepted_tokens) == (6, 4)
    assert runtime.samplings[-1].draft is True
    off = service(repo, runtime, drafting=False)
    list(off.send(c.id, "Again, one token at a time"))
    assert runtime.samplings[-1].draft is False
