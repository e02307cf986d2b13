"""Replies held to a grammar: a JSON schema (llama.cpp's converter) or GBNF, in the worker."""

from __future__ import annotations

import json
from pathlib import Path

from inference.protocol import Done, Failed, Generate, ModelSettings, Sampling, Token
from inference.worker import Worker

SCHEMA = {"type": "object", "properties": {"answer": {"enum": ["yes", "no", "maybe"]}, "n": {"type": "integer"}},
          "required": ["answer", "n"], "additionalProperties": False}
FREE_TEXT = {"type": "object", "properties": {"answer": {"type": "string", "maxLength": 12}}, "required": ["answer"]}


def reply(worker: Worker, sampling: Sampling, prompt: str = "hello") -> tuple[str, object]:
    events = list(worker.generate(Generate(prompt=prompt, sampling=sampling)))
    return "".join(e.text for e in events if isinstance(e, Token)), events[-1]


def test_a_json_schema_makes_the_reply_that_json(worker: Worker, moe_model: Path) -> None:
    worker.load(ModelSettings(path=str(moe_model), n_ctx=1024, n_threads=1))
    free, _ = reply(worker, Sampling(temperature=0, max_tokens=40))
    for prompt in ("hello", "the model answers the question", "expert memory"):
        text, last = reply(worker, Sampling(temperature=0, max_tokens=80, json_schema=json.dumps(SCHEMA)), prompt)
        assert isinstance(last, Done) and last.stats.stop_reason == "eog"  # the grammar ends it, not the limit
        value = json.loads(text)
        assert set(value) == {"answer", "n"} and value["answer"] in ("yes", "no", "maybe")
        assert isinstance(value["n"], int)
    assert not free.lstrip().startswith("{")  # without the schema the tiny model writes no JSON
    # free text (the tiny model's random bytes): no control character slips into a string
    for prompt in ("hello", "expert memory", "local secure", "offline token"):
        text, _ = reply(worker, Sampling(temperature=0, max_tokens=80, json_schema=json.dumps(FREE_TEXT)), prompt)
        assert isinstance(json.loads(text)["answer"], str)


def test_a_grammar_llama_cpp_rejects_is_one_error_and_the_model_stays(worker: Worker, moe_model: Path) -> None:
    worker.load(ModelSettings(path=str(moe_model), n_ctx=1024, n_threads=1))
    _, last = reply(worker, Sampling(temperature=0, max_tokens=8, grammar="root ::= ["))
    assert isinstance(last, Failed) and "grammar" in last.message and last.kind == "error"
    text, done = reply(worker, Sampling(temperature=0, max_tokens=8, grammar='root ::= "yes" | "no"'))
    assert isinstance(done, Done) and text in ("yes", "no")


def test_a_schema_with_a_repeat_penalty_and_one_the_converter_cannot_do(worker: Worker, moe_model: Path) -> None:
    worker.load(ModelSettings(path=str(moe_model), n_ctx=1024, n_threads=1))
    sampling = Sampling(temperature=0, max_tokens=80, repeat_penalty=1.1, json_schema=json.dumps(SCHEMA))
    text, last = reply(worker, sampling)  # the penalty's history is not fed to the grammar
    assert isinstance(last, Done) and set(json.loads(text)) == {"answer", "n"}
    _, refused = reply(worker, Sampling(temperature=0, json_schema='{"type": "foo"}'))
    assert isinstance(refused, Failed) and refused.kind == "error" and "JSON schema" in refused.message
