from __future__ import annotations

import itertools
from collections.abc import Iterable

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from app.reasoning import (
    HARMONY_MARKERS,
    STYLES,
    THINK_CLOSE,
    THINK_OPEN,
    ReasoningSplitter,
    Split,
    detect_style,
    prompt_opens_reasoning,
    split_reasoning,
)

R1 = "<think>\nThe user greets me. I should greet back.\n</think>\n\nHello! How can I help?"
QWEN3_NO_THINKING = "<think>\n\n</think>\n\nParis is the capital of France."
R1_DISTILL = "Okay, 2 + 2 < 5 is true.\n</think>\n\n**Yes**, it is."
HARMONY = (
    "<|channel|>analysis<|message|>User asks 2+2. Easy: 4.<|end|>"
    "<|start|>assistant<|channel|>final<|message|>2 + 2 = **4**.<|return|>"
)
HARMONY_TOOL = (
    "<|channel|>analysis<|message|>Need the weather.<|end|>"
    "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json"
    '<|message|>{"city": "Oslo"}<|call|>'
)
HARMONY_ROLE_FIRST = "<|start|>assistant<|channel|>final<|message|>Just the answer.<|end|>"
PLAIN = "Sure: if a < b and b > c, then <thinking about it> <| is not markup <|chan"

# (style, starts_in_reasoning, stream, expected reasoning, expected answer)
CASES = [
    ("think", False, R1, "The user greets me. I should greet back.\n", "Hello! How can I help?"),
    ("auto", False, R1, "The user greets me. I should greet back.\n", "Hello! How can I help?"),
    ("think", False, QWEN3_NO_THINKING, "", "Paris is the capital of France."),
    ("think", True, R1_DISTILL, "Okay, 2 + 2 < 5 is true.\n", "**Yes**, it is."),
    ("auto", True, R1_DISTILL, "Okay, 2 + 2 < 5 is true.\n", "**Yes**, it is."),
    ("harmony", False, HARMONY, "User asks 2+2. Easy: 4.", "2 + 2 = **4**."),
    ("auto", False, HARMONY, "User asks 2+2. Easy: 4.", "2 + 2 = **4**."),
    ("harmony", False, HARMONY_TOOL, 'Need the weather.{"city": "Oslo"}', ""),
    ("harmony", False, HARMONY_ROLE_FIRST, "", "Just the answer."),
    ("auto", False, PLAIN, "", PLAIN),
    ("think", False, PLAIN, "", PLAIN),
    ("harmony", False, PLAIN, "", PLAIN),
    ("none", False, R1, "", R1),
    ("none", False, HARMONY, "", HARMONY),
]
SAMPLES = [(style, starts, stream) for style, starts, stream, _, _ in CASES]
MARKUP = (THINK_OPEN, THINK_CLOSE, *HARMONY_MARKERS)


def run(pieces: Iterable[str], style: str = "auto", starts_in_reasoning: bool = False) -> tuple[str, str]:
    """Feed the pieces, then finish; everything released, as (reasoning, answer)."""
    splitter = ReasoningSplitter(style, starts_in_reasoning=starts_in_reasoning)
    splits = [splitter.push(piece) for piece in pieces]
    splits.append(splitter.finish())
    return "".join(s.reasoning for s in splits), "".join(s.answer for s in splits)


def cut(text: str, points: Iterable[int]) -> list[str]:
    bounds = [0, *sorted(set(points)), len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


@pytest.mark.parametrize(("style", "starts", "stream", "reasoning", "answer"), CASES)
def test_each_format_end_to_end(style: str, starts: bool, stream: str, reasoning: str, answer: str) -> None:
    assert run([stream], style, starts) == (reasoning, answer)
    assert run(stream, style, starts) == (reasoning, answer)  # one character at a time


@pytest.mark.parametrize(("style", "starts", "stream"), SAMPLES)
def test_every_single_cut_point_gives_the_same_split(style: str, starts: bool, stream: str) -> None:
    whole = run([stream], style, starts)
    for i in range(len(stream) + 1):
        assert run(cut(stream, [i]), style, starts) == whole, f"cut at {i}: {stream[:i]!r} | {stream[i:]!r}"


@pytest.mark.parametrize(("style", "starts", "stream"), SAMPLES)
def test_every_pair_of_cut_points_gives_the_same_split(style: str, starts: bool, stream: str) -> None:
    whole = run([stream], style, starts)
    for i in range(len(stream) + 1):
        for j in range(i, min(i + 14, len(stream) + 1)):  # pieces up to the longest marker's length
            assert run(cut(stream, [i, j]), style, starts) == whole, (i, j)


@pytest.mark.parametrize("marker", MARKUP)
def test_a_marker_split_anywhere_is_still_recognised(marker: str) -> None:
    stream = {
        THINK_OPEN: "<think>why</think>so",
        THINK_CLOSE: "<think>why</think>so",
    }.get(marker, f"<|channel|>analysis<|message|>why{marker}<|channel|>final<|message|>so")
    expected = ("why", "so")
    for i in range(len(stream) + 1):
        assert run(cut(stream, [i]), "auto") == expected


def test_no_markup_reaches_either_output() -> None:
    for style, starts, stream in SAMPLES:
        if style == "none" or stream == PLAIN:
            continue
        for pieces in ([stream], list(stream)):
            reasoning, answer = run(pieces, style, starts)
            for marker in MARKUP:
                assert marker not in reasoning and marker not in answer, (style, stream, marker)
            assert "<|" not in reasoning + answer


@pytest.mark.parametrize("style", ["auto", "think", "harmony"])
@pytest.mark.parametrize(
    "text",
    [
        "a < b",
        "<thinking about it>",
        "<|chan",
        "<|channel",
        "<thi",
        "</thin",
        "x <think",
        "<<|<|<think",
        "1 <| 2 |> 3",
        "<think >not a tag",
        "<|end",
        "< think>",
    ],
)
def test_lookalikes_pass_through_unchanged(style: str, text: str) -> None:
    assert run([text], style) == ("", text)
    assert run(text, style) == ("", text)


def test_none_passes_everything_through_at_once() -> None:
    splitter = ReasoningSplitter("none")
    assert splitter.push("  <think>x</th") == Split("", "  <think>x</th")
    assert splitter.push("ink>") == Split("", "ink>")
    assert splitter.finish() == Split()


def test_only_a_possible_marker_start_is_held_back() -> None:
    splitter = ReasoningSplitter("auto")
    assert splitter.push("Hello <") == Split("", "Hello ")
    assert splitter.push("b") == Split("", "<b")
    assert splitter.push(" and <|cha") == Split("", " and ")
    assert splitter.push("ir") == Split("", "<|chair")
    assert splitter.push("</th") == Split()
    assert splitter.push("at") == Split("", "</that")
    assert splitter.finish() == Split()


def test_reasoning_is_released_as_it_streams() -> None:
    splitter = ReasoningSplitter("think")
    assert splitter.push("<thi") == Split()
    assert splitter.push("nk>\nLet me") == Split("Let me", "")
    assert splitter.in_reasoning
    assert splitter.push(" see</thi") == Split(" see", "")
    assert splitter.push("nk>\n\n") == Split()
    assert not splitter.in_reasoning
    assert splitter.push("4") == Split("", "4")
    assert splitter.finish() == Split()


def test_a_held_back_tail_is_released_by_finish() -> None:
    splitter = ReasoningSplitter("auto")
    assert splitter.push("x <|chan") == Split("", "x ")
    assert splitter.finish() == Split("", "<|chan")

    splitter = ReasoningSplitter("think", starts_in_reasoning=True)
    assert splitter.push("still thinking </thi") == Split("still thinking ", "")
    assert splitter.finish() == Split("</thi", "")


def test_leading_whitespace_is_dropped_before_markup_and_kept_before_text() -> None:
    assert run(["  \n", "<think>a</think>b"]) == ("a", "b")
    assert run(["  \n", "plain"]) == ("", "  \nplain")
    assert run(["\n\n"]) == ("", "\n\n")
    assert run(["\n", "<|channel|>final<|message|>x"], "harmony") == ("", "x")


def test_think_opens_only_at_the_start_and_only_once() -> None:
    splitter = ReasoningSplitter("think")
    assert splitter.push("Use <think>tags</think> like this.") == Split("", "Use <think>tags</think> like this.")
    assert splitter.finish() == Split()
    assert splitter.misfiled_reasoning == ""
    assert run(["<think>a</think>b <think>c</think>"], "think") == ("a", "b <think>c</think>")


def test_starts_in_reasoning_mode() -> None:
    splitter = ReasoningSplitter("think", starts_in_reasoning=True)
    assert splitter.in_reasoning
    assert splitter.push("\nHmm, <b> is bold") == Split("Hmm, <b> is bold", "")
    assert splitter.push(".</think>\n") == Split(".", "")
    assert not splitter.in_reasoning
    assert splitter.push("\nDone.") == Split("", "Done.")
    assert splitter.finish() == Split()
    assert splitter.misfiled_reasoning == ""
    assert run(["only reasoning, cut off"], "think", True) == ("only reasoning, cut off", "")


def test_a_stray_close_tag_ends_reasoning_the_prompt_opened() -> None:
    splitter = ReasoningSplitter("auto")
    first = splitter.push("I think the answer is 4.\n</think>\n\n")
    assert first == Split("", "I think the answer is 4.\n")
    assert splitter.push("4") == Split("", "4")
    assert splitter.finish() == Split()
    assert splitter.misfiled_reasoning == "I think the answer is 4.\n"
    assert split_reasoning("I think the answer is 4.\n</think>\n\n4") == Split("I think the answer is 4.\n", "4")


def test_a_close_tag_after_the_reasoning_is_plain_text() -> None:
    splitter = ReasoningSplitter("think")
    assert splitter.push("<think>a</think>The tag </think> closes it.") == Split("a", "The tag </think> closes it.")
    assert splitter.finish() == Split()
    assert splitter.misfiled_reasoning == ""
    assert split_reasoning("<think>a</think>b") == Split("a", "b")


def test_harmony_markup_inside_think_reasoning_is_text() -> None:
    assert run(["<think>gpt-oss ends with <|end|>.</think>ok"], "auto") == ("gpt-oss ends with <|end|>.", "ok")


def test_harmony_in_reasoning_tracks_the_channel() -> None:
    splitter = ReasoningSplitter("harmony")
    assert splitter.push("<|channel|>analysis<|message|>hm") == Split("hm", "")
    assert splitter.in_reasoning
    assert splitter.push("<|end|><|start|>assistant<|channel|>final<|mes") == Split()
    assert not splitter.in_reasoning
    assert splitter.push("sage|>ok<|return|>") == Split("", "ok")
    assert splitter.finish() == Split()


def test_harmony_text_outside_channels_is_answer() -> None:
    assert run(["before<|channel|>analysis<|message|>r<|end|>after"], "harmony") == ("r", "beforeafter")
    assert run(["<|start|>assistant<|message|>no channel<|end|>"], "harmony") == ("", "no channel")
    assert run(["<|channel|>final <|constrain|>json<|message|>{}"], "harmony") == ("", "{}")


def test_auto_locks_onto_the_first_family_it_sees() -> None:
    assert run([HARMONY + " then </think> and <think>"], "auto")[1].endswith(" then </think> and <think>")
    assert run(["<think>r</think>a<|end|>"], "auto") == ("r", "a<|end|>")


def test_push_after_finish_is_refused_and_finish_is_idempotent() -> None:
    splitter = ReasoningSplitter()
    splitter.push("x")
    assert splitter.finish() == Split()
    assert splitter.finish() == Split()
    with pytest.raises(RuntimeError):
        splitter.push("y")


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown reasoning style"):
        ReasoningSplitter("deepseek")
    with pytest.raises(ValueError, match="starts_in_reasoning"):
        ReasoningSplitter("harmony", starts_in_reasoning=True)


def test_detect_style() -> None:
    assert detect_style("{{ '<|start|>assistant<|channel|>final<|message|>' }}") == "harmony"
    assert detect_style("{% if add_generation_prompt %}<think>\n{% endif %}") == "think"
    assert detect_style("{{ message.reasoning_content }}") == "think"
    assert detect_style("{{ bos_token }}{{ message.content }}") == "auto"
    assert detect_style(None) == "auto"
    assert detect_style(None, starts_in_reasoning=True) == "think"


def test_prompt_opens_reasoning() -> None:
    assert prompt_opens_reasoning("<｜Assistant｜><think>\n")
    assert not prompt_opens_reasoning("<|im_start|>assistant\n")
    assert not prompt_opens_reasoning("<think>\n\n</think>\n\n")


# --- properties -----------------------------------------------------------------------------

FRAGMENTS = ["<", ">", "|", "/", "think", "channel", "message", "end", "start", "final", "analysis", " ", "\n", "x"]
SAMPLE_STREAMS = [stream for _, _, stream in SAMPLES]
MODES = [(style, False) for style in STYLES] + [("think", True), ("auto", True)]


@st.composite
def stream_and_cuts(draw: st.DrawFn, streams: st.SearchStrategy[str]) -> tuple[str, list[int]]:
    stream = draw(streams)
    points = draw(st.lists(st.integers(0, len(stream)), max_size=len(stream) + 1))
    return stream, points


@settings(max_examples=300)
@given(case=stream_and_cuts(st.sampled_from(SAMPLE_STREAMS)), mode=st.sampled_from(MODES))
def test_random_cuttings_of_sample_streams_match_one_push(case: tuple[str, list[int]], mode: tuple[str, bool]) -> None:
    stream, points = case
    style, starts = mode
    assert run(cut(stream, points), style, starts) == run([stream], style, starts)


@settings(max_examples=300)
@given(
    case=stream_and_cuts(st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join)),
    mode=st.sampled_from(MODES),
)
def test_random_cuttings_of_random_markup_soup_match_one_push(
    case: tuple[str, list[int]], mode: tuple[str, bool]
) -> None:
    stream, points = case
    style, starts = mode
    assert run(cut(stream, points), style, starts) == run([stream], style, starts)


@given(text=st.text(alphabet="<>|/thinkcalesgr \n", max_size=40), style=st.sampled_from(STYLES))
def test_text_without_markers_passes_through_unchanged(text: str, style: str) -> None:
    assume(not any(marker in text for marker in MARKUP))
    assert run([text], style) == ("", text)
