"""Chat formats: a model without a template gets the built-in format its vocabulary or
architecture names, a guess is said out loud, and control tokens never reach a reply."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import llama_cpp
import pytest

from app.services import Services
from inference.chat_formats import BUILT_IN_FORMATS, ChatFormatChoice, choose_chat_format, reply_stops
from inference.chat_template import BuiltInFormat
from inference.errors import EnclaveError
from inference.gguf_info import inspect_gguf
from inference.protocol import ChatMessage, Done, Generate, ModelInfo, Sampling, Token
from inference.worker import Worker
from tests.cli import enclave
from tests.conftest import settings_for
from tests.tiny_models import DENSE, GEMMA_TOKENS, LLAMA3_TOKENS, TinySpec, write_tiny_model

TURN = (ChatMessage("system", "be brief"), ChatMessage("user", "hello"))
NO_FORMAT_TOKENS = ("<unk>", "<s>", "</s>")
GUESS_NOTE = "has no chat template and Enclave does not know its architecture's format; replies use ChatML"

SPECS = {
    "gemma": replace(DENSE, name="tiny-gemma", architecture="gemma3", chat_template=None, control_tokens=GEMMA_TOKENS),
    "llama3": replace(DENSE, name="tiny-llama3", chat_template=None, control_tokens=LLAMA3_TOKENS),
    "guessed": replace(DENSE, name="tiny-guessed", chat_template=None, control_tokens=NO_FORMAT_TOKENS),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("formats")
    return {kind: write_tiny_model(folder / f"{spec.name}.gguf", spec) for kind, spec in SPECS.items()}


@pytest.fixture(scope="module")
def module_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    w = Worker(tmp_path_factory.mktemp("logs") / "llama.log")
    yield w
    w.close()


def generate(worker: Worker, sampling: Sampling, messages: tuple[ChatMessage, ...] = TURN) -> tuple[str, Done]:
    events = list(worker.generate(Generate(messages=messages, sampling=sampling)))
    done = events[-1]
    assert isinstance(done, Done), done
    return "".join(e.text for e in events if isinstance(e, Token)), done


# Choosing a format ---------------------------------------------------------------------------


def choose(architecture: str = "llama", tokens: tuple[str, ...] = (), **kwargs: object) -> ChatFormatChoice:
    return choose_chat_format(template=kwargs.pop("template", None), architecture=architecture,  # type: ignore[arg-type]
                              has_token=set(tokens).__contains__, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("architecture", "tokens", "tokenizer_pre", "name"), [
    ("gemma3", (), None, "gemma"),  # gemma-3-270m as published: no template
    ("gemma3", ("<start_of_turn>", "<end_of_turn>"), None, "gemma"),
    ("llama", ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"), None, "llama3"),
    ("qwen3moe", (), None, "chatml"),
    ("llama", ("<|im_start|>", "<|im_end|>"), None, "chatml"),
    ("phi3", ("<|im_start|>", "<|im_sep|>", "<|im_end|>"), None, "phi4"),  # Phi-4 ships as phi3
    ("phi3", ("<|user|>", "<|assistant|>", "<|end|>"), None, "phi3"),
    ("deepseek2", ("<｜User｜>", "<｜Assistant｜>"), None, "deepseek3"),
    ("deepseek2", (), None, "deepseek2"),
    ("llama", ("[INST]", "[/INST]"), None, "mistral-v3"),
    ("llama", ("[SYSTEM_PROMPT]", "[INST]", "[/INST]"), "tekken", "mistral-v7-tekken"),
    ("cohere2", (), None, "command-r"),
])
def test_a_model_without_template_gets_the_format_its_vocabulary_or_architecture_names(
        architecture: str, tokens: tuple[str, ...], tokenizer_pre: str | None, name: str) -> None:
    choice = choose(architecture, tokens, tokenizer_pre=tokenizer_pre)
    assert choice.name == name and not choice.guessed
    assert choice.description.startswith(f"{name} (built in, chosen for ")
    assert (f"architecture {architecture}" in choice.description) == (not tokens)


def test_nothing_known_is_chatml_and_said_to_be_a_guess() -> None:
    # the llama architecture alone is llama2, Mistral, Vicuna, Zephyr or a ChatML fine-tune
    for architecture in ("llama", "some-new-arch"):
        choice = choose(architecture)
        assert choice == ChatFormatChoice("chatml", "ChatML (a guess: this model has no template)", guessed=True)


def test_the_models_own_template_comes_first_and_a_chosen_format_before_it() -> None:
    assert choose("gemma3", template="{{ messages }}") == ChatFormatChoice(None, "the model's own template")
    forced = choose("qwen3", template="{{ messages }}", forced="gemma")
    assert forced == ChatFormatChoice("gemma", "gemma (built in, chosen in the model's settings)")
    with pytest.raises(EnclaveError, match=r"no built-in chat format called 'gemma4'\. Choose one of: .*chatml, "):
        choose("qwen3", forced="gemma4")


def test_turn_markup_the_vocabulary_cannot_hold_stops_the_reply_as_text() -> None:
    guessed = choose("llama")
    assert reply_stops(guessed, has_token=lambda text: False) == ("<|im_start|>", "<|im_end|>")
    assert reply_stops(guessed, has_token=lambda text: True) == ()  # special tokens end the reply as tokens
    assert reply_stops(ChatFormatChoice(None, "the model's own template"), lambda text: False) == ()


def test_every_format_offered_is_one_llama_cpp_renders() -> None:
    count = llama_cpp.llama_chat_builtin_templates(None, 0)
    names = (ctypes.c_char_p * count)()
    llama_cpp.llama_chat_builtin_templates(names, count)
    assert set(BUILT_IN_FORMATS) <= {name.decode() for name in names}
    assert list(BUILT_IN_FORMATS) == sorted(BUILT_IN_FORMATS)
    for name in BUILT_IN_FORMATS:
        assert "hello" in BuiltInFormat(name).render(TURN), name
    long = "x" * 5000 + "\0 after a NUL"  # longer than the first buffer; NUL cannot cut a C string short
    assert BuiltInFormat("chatml").render([ChatMessage("user", long)]).endswith(
        "x after a NUL<|im_end|>\n<|im_start|>assistant\n")


# In the worker ----------------------------------------------------------------------------------


def test_a_template_less_gemma_model_answers_in_gemma_turns(module_worker: Worker, files: dict[str, Path]) -> None:
    info = module_worker.load(settings_for(files["gemma"]))
    assert not info.has_chat_template and not info.chat_format_guessed
    assert info.chat_format.startswith("gemma (built in")
    rendered = module_worker.render_chat(TURN)
    assert rendered.text == "<start_of_turn>user\nbe brief\n\nhello<end_of_turn>\n<start_of_turn>model\n"
    start_of_turn, end_of_turn = GEMMA_TOKENS.index("<start_of_turn>"), GEMMA_TOKENS.index("<end_of_turn>")
    assert rendered.ids.count(start_of_turn) == 2 and rendered.ids.count(end_of_turn) == 1  # as special tokens
    text, done = generate(module_worker, Sampling(temperature=0, max_tokens=6))
    assert done.stats.prompt_tokens == len(rendered.ids) and done.stats.generated_tokens == 6 and text


def test_a_template_less_llama3_vocabulary_gets_llama3(module_worker: Worker, files: dict[str, Path]) -> None:
    info = module_worker.load(settings_for(files["llama3"]))
    assert info.chat_format.startswith("llama3 (built in, chosen for the tokens <|start_header_id|>")
    rendered = module_worker.render_chat(TURN)
    assert rendered.text.startswith("<|start_header_id|>system<|end_header_id|>\n\nbe brief<|eot_id|>")
    assert rendered.text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert rendered.ids.count(LLAMA3_TOKENS.index("<|start_header_id|>")) == 3


def test_a_model_nothing_is_known_about_is_a_chatml_guess(module_worker: Worker, files: dict[str, Path]) -> None:
    info = module_worker.load(settings_for(files["guessed"]))
    assert info.chat_format_guessed and info.chat_format == "ChatML (a guess: this model has no template)"
    assert module_worker.render_chat(TURN).text.startswith("<|im_start|>system\nbe brief<|im_end|>\n")


def test_a_chosen_format_replaces_the_models_own_template(module_worker: Worker, moe_model: Path) -> None:
    info = module_worker.load(settings_for(moe_model, chat_format="gemma"))  # its own template is ChatML
    assert info.has_chat_template and info.chat_format == "gemma (built in, chosen in the model's settings)"
    assert module_worker.render_chat(TURN).text.startswith("<start_of_turn>user\nbe brief\n\nhello")
    with pytest.raises(EnclaveError, match="no built-in chat format called 'gemma4'"):
        module_worker.load(settings_for(moe_model, chat_format="gemma4"))


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_inspect_and_the_worker_choose_the_same(kind: str, module_worker: Worker, files: dict[str, Path]) -> None:
    info: ModelInfo = module_worker.load(settings_for(files[kind]))
    choice = inspect_gguf(files[kind]).chat_format
    assert (choice.description, choice.guessed) == (info.chat_format, info.chat_format_guessed)


# Control tokens in replies ----------------------------------------------------------------------


def fixed_model(tmp_path: Path, control_tokens: tuple[str, ...], *logits: tuple[str, float]) -> Path:
    spec = TinySpec(name="tiny-fixed", n_ff=128, n_expert=0, n_expert_used=0, control_tokens=control_tokens,
                    fixed_logits=logits)
    return write_tiny_model(tmp_path / "fixed.gguf", spec)


def test_a_control_token_ends_the_reply_and_never_shows(worker: Worker, tmp_path: Path) -> None:
    # "<|im_start|>" is a control token but not end-of-generation: the model opening another turn
    worker.load(settings_for(fixed_model(tmp_path, DENSE.control_tokens, ("<|im_start|>", 8.0), ("▁hello", 10.0))))
    text, done = generate(worker, Sampling(temperature=1.0, seed=3, max_tokens=200))
    assert "<|im_start|>" not in text
    assert done.stats.stop_reason == "eog" and 0 < done.stats.generated_tokens < 200
    assert text == " hello" * done.stats.generated_tokens


def test_reasoning_markup_made_of_control_tokens_still_shows(worker: Worker, tmp_path: Path) -> None:
    worker.load(settings_for(fixed_model(tmp_path, ("<unk>", "<s>", "</s>", "<think>", "<|im_end|>"),
                                         ("<think>", 10.0))))
    text, done = generate(worker, Sampling(temperature=0, max_tokens=3), (ChatMessage("user", "hello"),))
    assert text == "<think>" * 3 and done.stats.stop_reason == "length"


# What the user is told -------------------------------------------------------------------------


def test_run_says_once_that_the_format_is_a_guess_and_how_to_choose(files: dict[str, Path], moe_model: Path,
                                                                    enclave_home: Path) -> None:
    guessed = enclave("run", str(files["guessed"]), "hello", "--max-tokens", "3", "--temperature", "0",
                      home=enclave_home)
    assert guessed.returncode == 0, guessed.stderr
    assert guessed.stderr.count(GUESS_NOTE) == 1
    assert (f"{files['guessed']} {GUESS_NOTE}. Choose another with: enclave models config {files['guessed']} "
            "--chat-format NAME") in guessed.stderr
    known = enclave("run", str(files["gemma"]), "hello", "--max-tokens", "3", "--temperature", "0", home=enclave_home)
    assert known.returncode == 0 and GUESS_NOTE not in known.stderr


def test_chat_says_it_once_per_model(files: dict[str, Path], enclave_home: Path) -> None:
    assert enclave("settings", "set", "max_tokens", "3", home=enclave_home).returncode == 0
    result = enclave("chat", "--model", str(files["guessed"]), stdin="hello\nagain\n", home=enclave_home)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count(GUESS_NOTE) == 1


def test_inspect_shows_the_format_used(files: dict[str, Path], enclave_home: Path) -> None:
    gemma = enclave("inspect", str(files["gemma"]), home=enclave_home)
    assert "chat format     gemma (built in, chosen for the tokens <start_of_turn> <end_of_turn>" in gemma.stdout
    guessed = enclave("inspect", str(files["guessed"]), home=enclave_home)
    assert "chat format     ChatML (a guess: this model has no template)" in guessed.stdout
    assert "enclave models config MODEL --chat-format NAME" in guessed.stdout


def test_the_chat_page_says_it_once_per_conversation(qtbot, services: Services, files: dict[str, Path]) -> None:
    from ui.chat_view import ChatPage
    from ui.tasks import TaskRunner

    model = services.models.import_files([files["guessed"]], "in_place")
    for key, value in {"default_model": model.id, "max_tokens": 3, "temperature": 0.0, "context_length": 512,
                       "threads": 2}.items():
        services.settings.set(key, value)
    page = ChatPage(services, TaskRunner(synchronous=True))
    qtbot.addWidget(page)
    shown: list[str] = []
    for text in ("hello", "again"):
        page.composer.setPlainText(text)
        page.submit()
        shown.append("" if page.notice_bar.isHidden() else page.notice_bar.text())
    assert GUESS_NOTE in shown[0] and "Models page" in shown[0]
    assert GUESS_NOTE not in shown[1]
    page.new_conversation()
    page.composer.setPlainText("hello")
    page.submit()
    assert GUESS_NOTE in page.notice_bar.text() and not page.notice_bar.isHidden()
